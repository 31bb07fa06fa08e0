#!/usr/bin/env python3
"""The ultralytics side of benchmarks/train_compare.sh (and of scripts/gpu_check.sh's step 6):
train with ultralytics 8.4 on the same dataset and cfg as kubeyolo's yolo-train, on the CPU with
the same thread count, or on the GPU that env DEVICE names (e.g. DEVICE=0).

    .venvs/ultralytics/bin/python benchmarks/train_ultralytics.py DATA_YAML CFG_YAML OUT_DIR THREADS [MODEL]

Prints `wall_s=…` and `train_img_s=…` (training images per second over the epochs' wall time,
validation included, as yolo-train's figure) and leaves ultralytics' run folder in OUT_DIR.
"""
import os
import sys
import time

data, cfg, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model_src = sys.argv[5] if len(sys.argv) > 5 else "yolov8n.yaml"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ultralytics_cpu import pin  # noqa: E402

torch = pin(threads)
import yaml  # noqa: E402
from ultralytics import YOLO  # noqa: E402

args = yaml.safe_load(open(cfg))
args = {k: v for k, v in args.items() if k not in ("task", "mode")}
device = os.environ.get("DEVICE", "cpu")
args.setdefault("amp", False)
args.update(data=data, project=out, name="ultralytics", exist_ok=True, device=device, verbose=False)
if device == "cpu":
    args["amp"] = False
try:
    import polars  # noqa: F401
except ImportError:
    # A GPU machine may lack polars (a 54 MB wheel); ultralytics reads results.csv with it only to
    # store the rows in its checkpoints. The same dict of columns, read with the csv module:
    import csv
    from ultralytics.engine.trainer import BaseTrainer

    def read_results_csv(self):
        with open(self.csv) as f:
            rows = list(csv.DictReader(f))
        return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

    BaseTrainer.read_results_csv = read_results_csv
model = YOLO(model_src)
t0 = time.time()
model.train(**args)
wall = time.time() - t0
n_train = len(os.listdir(os.path.join(os.path.dirname(data), "images", "train")))
print(f"wall_s={wall:.1f}")
print(f"train_img_s={n_train * args['epochs'] / wall:.2f}")
print(f"torch_threads={torch.get_num_threads()} device={device} amp={args['amp']}")
