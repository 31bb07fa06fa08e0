#!/usr/bin/env python3
"""The ultralytics side of benchmarks/tune_compare.sh: `model.tune()` of ultralytics 8.4 from
MODEL on the same dataset and base cfg as kubeyolo's yolo-tune, on the CPU with THREADS threads.

    .venvs/ultralytics/bin/python benchmarks/tune_ultralytics.py DATA_YAML CFG_YAML OUT_DIR THREADS MODEL ITERATIONS

Leaves ultralytics' tune folder in OUT_DIR/ultralytics-tune (tune_results.ndjson) and prints `wall_s=…`.
8.4's mutation draws from an unseeded numpy generator, so only the training seed is shared.
"""
import os
import sys
import time

data, cfg, out, threads, model_src, iterations = sys.argv[1:7]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ultralytics_cpu import pin  # noqa: E402

pin(int(threads))
import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402

args = yaml.safe_load(open(cfg))
args = {k: v for k, v in args.items() if k not in ("task", "mode")}
args.update(data=data, project=out, name="ultralytics-tune", device="cpu", amp=False, verbose=False)
t0 = time.time()
YOLO(model_src).tune(iterations=int(iterations), **args)
print(f"wall_s={time.time() - t0:.1f}")
