#!/usr/bin/env python3
"""ultralytics side of benchmarks/src/bin/validate.rs: time model.val() on a split and print
`RESULT {"images_per_s": ..., "map50": ..., "map": ...}`.

Times the whole `model.val()` call (dataset scan, decoding, letterbox, forward, NMS, metrics),
which is what the Rust side's "from files" figure covers; the first call is a warm-up.
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from ultralytics import YOLO

p = argparse.ArgumentParser()
p.add_argument("--weights", required=True)
p.add_argument("--data", required=True)
p.add_argument("--split", default="test")
p.add_argument("--imgsz", type=int, default=128)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)

# ultralytics resolves a relative `path:` against the current folder: use an absolute copy
data = Path(a.data)
tmp = Path(tempfile.mkdtemp())
text = data.read_text().replace("path: .", f"path: {data.parent.resolve()}")
yaml = tmp / data.name
yaml.write_text(text)

kw = dict(data=str(yaml), split=a.split, imgsz=a.imgsz, batch=a.batch, conf=0.001, iou=0.7, device="cpu",
          plots=False, workers=0, verbose=False, project=str(tmp), name="val", exist_ok=True)
model = YOLO(a.weights)
model.val(**kw)  # warm-up (also writes the label cache)
t = time.perf_counter()
r = model.val(**kw)
dt = time.perf_counter() - t
n = len(r.box.image_metrics) if r.box.image_metrics else 0
print("RESULT " + json.dumps({"images_per_s": n / dt, "images": n, "map50": float(r.box.map50), "map": float(r.box.map)}))
shutil.rmtree(tmp, ignore_errors=True)
