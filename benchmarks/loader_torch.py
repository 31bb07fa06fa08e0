#!/usr/bin/env python3
"""ultralytics' side of benchmarks/src/bin/loader.rs: YOLODataset.__getitem__ + collate_fn
images/s with the default training hyper-parameters, on 1 thread (a plain loop) and 2 threads
(torch DataLoader, num_workers=2, as ultralytics' InfiniteDataLoader runs it)."""
import argparse
import time

import cv2
import torch
from torch.utils.data import DataLoader
from ultralytics.cfg import get_cfg
from ultralytics.data.dataset import YOLODataset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    hyp = get_cfg(overrides={"imgsz": a.imgsz})
    names = {i: str(i) for i in range(80)}

    def make():
        return YOLODataset(img_path=a.images, imgsz=a.imgsz, augment=True, hyp=hyp, cache=False, rect=False,
                           batch_size=a.batch, stride=32, pad=0.0, single_cls=False, classes=None, fraction=1.0,
                           data={"names": names, "channels": 3}, task="detect")

    ds = make()
    start, n = time.perf_counter(), 0
    for _ in range(a.epochs):
        order = torch.randperm(len(ds)).tolist()
        for k in range(0, len(order), a.batch):
            batch = YOLODataset.collate_fn([ds[i] for i in order[k:k + a.batch]])
            n += batch["img"].shape[0]
    s = time.perf_counter() - start
    print(f"ultralytics 1 thread(s): {n / s:.1f} img/s ({n} images in {s:.2f} s)")
    dl = DataLoader(make(), batch_size=a.batch, shuffle=True, num_workers=2, collate_fn=YOLODataset.collate_fn,
                    persistent_workers=True)
    next(iter(dl))  # start the workers outside the timing
    start, n = time.perf_counter(), 0
    for _ in range(a.epochs):
        for batch in dl:
            n += batch["img"].shape[0]
    s = time.perf_counter() - start
    print(f"ultralytics 2 thread(s): {n / s:.1f} img/s ({n} images in {s:.2f} s)")


if __name__ == "__main__":
    main()
