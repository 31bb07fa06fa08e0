"""The PyTorch side of the train-step benchmark (benchmarks/src/bin/train_step.rs runs it).

One full training step of ultralytics' DetectionModel (random init from the yaml, no download):
forward in train mode, the same stand-in loss as the Rust side (sum of squares of the head
outputs: the box distributions and class logits), backward, and SGD with ultralytics' three
parameter groups (Nesterov, momentum 0.937, weight decay 5e-4 on weights only, lr 0.01), exactly
as `BaseTrainer.build_optimizer` builds them. Random input in [0, 1). Prints
`TORCH_STEP_SECONDS <median seconds per step>` for the Rust binary to parse.

Run alone:  .venvs/ultralytics/bin/python benchmarks/train_step_torch.py --batch 16 --imgsz 320
"""

import argparse
import statistics
import time

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


def head_tensors(preds):
    """The raw head outputs of a training forward, for any ultralytics 8.x return format."""
    if isinstance(preds, dict):
        if "one2many" in preds:
            preds = preds["one2many"]
        return [preds["boxes"], preds["scores"]]
    return list(preds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--nc", type=int, default=80)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(a.model, nc=a.nc, verbose=False)
    model.train()
    # ultralytics' trainer makes every parameter trainable except the frozen DFL conv.
    for k, v in model.named_parameters():
        v.requires_grad = ".dfl" not in k
    opt = build_sgd(model)
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz)

    def step():
        t0 = time.perf_counter()
        preds = model(x)
        loss = sum((t * t).sum() for t in head_tensors(preds))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for _ in range(a.warmup):
        step()
    times = [step() for _ in range(a.iters)]
    print(f"TORCH_STEP_SECONDS {statistics.median(times):.6f}")
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} steps {[round(t, 3) for t in times]}")


if __name__ == "__main__":
    main()
