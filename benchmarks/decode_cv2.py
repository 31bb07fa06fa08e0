#!/usr/bin/env python3
"""cv2 side of benchmarks/src/bin/decode.rs: write test JPEGs into --dir, time ultralytics'
`imread` (cv2.imdecode IMREAD_COLOR) on each, write the decoded pixels as NAME.rgb (RGB rows) for
the Rust side to compare, and print `RESULT {"NAME.jpg": {"ms": median, "w": w, "h": h}}`.

Images: photo-like synthetic scenes (smooth fields, edges, sensor-like noise) at 640x480 and
1280x960, baseline 4:2:0 q90 (cv2's default sampling), 4:4:4 q95 and progressive 4:2:0 q90.
Medians over --runs after one warm-up; cv2 single-threaded decoding (libjpeg-turbo with SIMD).
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ultralytics.utils.patches import imread

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--runs", type=int, default=30)
a = p.parse_args()
out = Path(a.dir)
cv2.setNumThreads(1)


def scene(w, h, seed):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 40 + 2, w // 40 + 2, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(30):
        x, y = rng.integers(0, w), rng.integers(0, h)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(5, h // 6)), rng.uniform(0, 255, 3).tolist(), -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


cases = {
    "s640_420.jpg": (640, 480, [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "s640_444.jpg": (640, 480, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
    "s640_prog.jpg": (640, 480, [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    "s1280_420.jpg": (1280, 960, [cv2.IMWRITE_JPEG_QUALITY, 90]),
}
res = {}
for i, (name, (w, h, params)) in enumerate(cases.items()):
    f = out / name
    cv2.imwrite(str(f), scene(w, h, i), params)
    im = imread(str(f))
    (out / (f.stem + ".rgb")).write_bytes(np.ascontiguousarray(im[..., ::-1]).tobytes())
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        imread(str(f))
        times.append((time.perf_counter() - t) * 1000)
    res[name] = {"ms": statistics.median(times), "w": w, "h": h}
print("RESULT " + json.dumps({"cv2": cv2.__version__, "images": res}))
