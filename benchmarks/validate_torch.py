#!/usr/bin/env python3
"""ultralytics side of benchmarks/src/bin/validate.rs: time model.val() on a split and print
`RESULT {"images_per_s": ..., "pass_images_per_s": ..., "map50": ..., "map": ...}`.

`images_per_s`: the whole `model.val()` call (dataset scan, decoding, letterbox, model fusing,
forward, NMS, metrics), what the Rust side's "from files" figure covers. `pass_images_per_s`:
from the validator's own per-image times (preprocess + inference + postprocess, `r.speed`), i.e.
the pass without building the model and dataloader, what the Rust side's "images decoded once"
figure is compared with. The first call is a warm-up. Both sides use `--threads` threads:
ultralytics' `select_device()` would reset torch to cpu_count − 1 (1 on 2 cores) on every call.
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
    import ultralytics.utils.torch_utils as _tu

    _tu.NUM_THREADS = a.threads
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
per_image_ms = sum(r.speed[k] for k in ("preprocess", "inference", "postprocess"))
print("RESULT " + json.dumps({"images_per_s": n / dt, "pass_images_per_s": 1e3 / per_image_ms, "images": n, "threads": torch.get_num_threads(),
                             "map50": float(r.box.map50), "map": float(r.box.map)}))
shutil.rmtree(tmp, ignore_errors=True)
