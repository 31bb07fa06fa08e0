"""The PyTorch side of the train-step benchmark (benchmarks/src/bin/train_step.rs runs it).

One full training step of ultralytics' DetectionModel (random init from the yaml, no download),
as `BaseTrainer._do_train` runs it on the batch the Rust side wrote (npz: img in [0, 1], batch_idx,
cls, bboxes; one augmented batch of kubeyolo's loader): forward in train mode, 8.4's
`v8DetectionLoss` (default gains), `loss.sum().backward()`, then
`optimizer_step`: gradient-norm clip to 10, SGD with ultralytics' three parameter groups
(Nesterov, momentum 0.937, weight decay 5e-4 on weights only, lr 0.01) exactly as
`BaseTrainer.build_optimizer` builds them, zero_grad, and the `ModelEMA` update. Prints `TORCH_STEP_SECONDS <median seconds per step>` for the Rust binary to parse.

Run alone (a batch from a Rust run, or any npz with those keys):
  .venvs/ultralytics/bin/python benchmarks/train_step_torch.py --batch-npz b.npz --batch 16 --imgsz 320
"""

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn


def build_sgd(model, lr=0.01, momentum=0.937, decay=5e-4):
    """ultralytics build_optimizer's groups: weights (decay), norm weights (none), biases (none)."""
    g = [[], [], []]
    bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            fullname = f"{module_name}.{param_name}" if module_name else param_name
            if "bias" in fullname:
                g[2].append(param)
            elif isinstance(module, bn):
                g[1].append(param)
            else:
                g[0].append(param)
    opt = torch.optim.SGD(g[2], lr=lr, momentum=momentum, nesterov=True)
    opt.add_param_group({"params": g[0], "weight_decay": decay})
    opt.add_param_group({"params": g[1], "weight_decay": 0.0})
    return opt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--nc", type=int, default=80)
    ap.add_argument("--batch-npz", required=True, help="npz with img (B,3,H,W), batch_idx, cls, bboxes (normalised xywh)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import ModelEMA

    model = DetectionModel(a.model, nc=a.nc, verbose=False)
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl) from here, as the trainer sets it
    model.train()
    # ultralytics' trainer makes every parameter trainable except the frozen DFL conv.
    for k, v in model.named_parameters():
        v.requires_grad = ".dfl" not in k
    opt = build_sgd(model)
    ema = ModelEMA(model)
    d = np.load(a.batch_npz)
    batch = {
        "img": torch.from_numpy(d["img"]).float(),
        "batch_idx": torch.from_numpy(d["batch_idx"]).float(),
        "cls": torch.from_numpy(d["cls"]).float().view(-1, 1),
        "bboxes": torch.from_numpy(d["bboxes"]).float(),
    }

    def step():
        t0 = time.perf_counter()
        preds = model(batch["img"])
        loss, _items = model.loss(batch, preds)
        loss.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        opt.step()
        opt.zero_grad()
        ema.update(model)
        return time.perf_counter() - t0

    for _ in range(a.warmup):
        step()
    times = [step() for _ in range(a.iters)]
    print(f"TORCH_STEP_SECONDS {statistics.median(times):.6f}")
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} steps {[round(t, 3) for t in times]}")


if __name__ == "__main__":
    main()
