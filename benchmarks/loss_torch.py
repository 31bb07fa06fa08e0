"""The PyTorch side of the loss benchmark (benchmarks/src/bin/loss.rs runs it).

Loads the head outputs and targets the Rust side wrote (npz: boxes (B, 64, A), scores (B, nc, A),
batch_idx, cls, bboxes, imgsz), builds ultralytics 8.4's `v8DetectionLoss` from a yolov8n
`DetectionModel` with that nc (default gains), and times what the trainer does with it: the loss
forward (`criterion(preds, batch)`, assignment included) and `loss.sum().backward()` down to the
head outputs. Prints `TORCH_LOSS_SECONDS <median>` and `TORCH_ITEMS <box> <cls> <dfl>` for the
Rust binary to parse (it checks that both sides computed the same loss).

Run alone:  .venvs/ultralytics/bin/python benchmarks/loss_torch.py --inputs /tmp/loss_inputs.npz
"""

import argparse
import statistics
import time

import numpy as np
import torch

from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import v8DetectionLoss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = np.load(a.inputs)
    boxes0, scores0 = torch.from_numpy(d["boxes"]), torch.from_numpy(d["scores"])
    nc = scores0.shape[1]
    h, w = (int(x) for x in d["imgsz"])
    model = DetectionModel("yolov8n.yaml", nc=nc, verbose=False)
    model.args = get_cfg()
    crit = v8DetectionLoss(model)
    bs = boxes0.shape[0]
    feats = [torch.zeros(bs, 1, h // s, w // s) for s in (8, 16, 32)]
    batch = {
        "batch_idx": torch.from_numpy(d["batch_idx"]).float(),
        "cls": torch.from_numpy(d["cls"]).float().view(-1, 1),
        "bboxes": torch.from_numpy(d["bboxes"]),
    }
    times, items = [], None
    for i in range(a.warmup + a.iters):
        boxes = boxes0.clone().requires_grad_(True)
        scores = scores0.clone().requires_grad_(True)
        t = time.perf_counter()
        loss, it = crit({"boxes": boxes, "scores": scores, "feats": feats}, batch)
        loss.sum().backward()
        dt = time.perf_counter() - t
        if i >= a.warmup:
            times.append(dt)
        items = [float(v) for v in it.values()]
    print(f"TORCH_LOSS_SECONDS {statistics.median(times)}")
    print("TORCH_ITEMS " + " ".join(f"{v:.9g}" for v in items))


if __name__ == "__main__":
    main()
