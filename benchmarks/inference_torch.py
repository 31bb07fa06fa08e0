#!/usr/bin/env python3
"""ultralytics side of benchmarks/src/bin/inference.rs: time YOLO.predict() per image on the CPU.

Prints `READY {versions}`, then answers each stdin line `IMGSZ RUNS` with
`RESULT {"preprocess": [ms...], "inference": [...], "postprocess": [...]}`, one entry per run.

With --make-weights it first writes a yolov8n (nc=80, ultralytics' own init, fp16 as in a
released .pt) checkpoint to --weights, so both sides time the same weights without any download.
Per-stage times are ultralytics' own `Results.speed`.
"""
import argparse
import json
import sys
from datetime import datetime

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--weights", required=True)
p.add_argument("--make-weights", action="store_true")
p.add_argument("--image", required=True)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()


import ultralytics  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

# ultralytics' select_device() resets torch to NUM_THREADS = cpu_count - 1 on every predict call
# (1 thread on a 2-core machine); give both sides the same thread count instead.
import ultralytics.utils.torch_utils as _tu  # noqa: E402

_tu.NUM_THREADS = a.threads
torch.set_num_threads(a.threads)

if a.make_weights:
    torch.manual_seed(0)
    m = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    torch.save({"date": datetime.now().isoformat(), "version": ultralytics.__version__, "epoch": -1,
                "best_fitness": None, "model": m.half(), "ema": None, "updates": None, "optimizer": None,
                "train_args": {}, "train_metrics": None, "train_results": None}, a.weights)

model = YOLO(a.weights)
print("READY " + json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                              "ultralytics": ultralytics.__version__}), flush=True)
# One block per request line "IMGSZ RUNS" (after `--warmup` untimed predictions at that size the
# first time it is asked for): the Rust side alternates blocks of its own passes with these, so a
# drift of the shared machine's speed lands on both sides of each ratio.
warm = set()
for line in sys.stdin:
    if not line.strip():
        continue
    s, runs = (int(x) for x in line.split())
    if s not in warm:
        for _ in range(a.warmup):
            model.predict(a.image, imgsz=s, conf=0.25, iou=0.7, device="cpu", verbose=False)
        warm.add(s)
    parts = {"preprocess": [], "inference": [], "postprocess": []}
    for _ in range(runs):
        r = model.predict(a.image, imgsz=s, conf=0.25, iou=0.7, device="cpu", verbose=False)[0]
        for k in parts:
            parts[k].append(r.speed[k])
    print("RESULT " + json.dumps(parts), flush=True)
