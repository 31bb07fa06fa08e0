#!/usr/bin/env bash
# The one prepared GPU check, for a machine with an NVIDIA GPU (driver R580+ / CUDA 13). It has
# not been run yet: the session that wrote it had no GPU. Never record a GPU figure that this
# script did not print.
#
#   1. binaries: CUDA-built yolo-train, yolo-predict, yolo-test from BIN_DIR, else built here with
#      `cargo build --release --features kubeyolo/cuda` (toolkit: nvcc on PATH, else scripts/cuda_env.sh);
#   2. CUDA libraries: found (cuBLAS, cuBLASLt, cuRAND, NVRTC, cudart 13) or the check stops, saying which;
#   3. forward parity CPU vs CUDA: yolo-predict on the parity fixtures (tests/fixtures/parity, made
#      by ultralytics) with --device cpu and --device 0: same detections, boxes and confidences
#      within 1e-3 (boxes: 1e-3 of the image size);
#   4. one train epoch on tiny synthetic data on CUDA (device=0), weights written, losses finite,
#      then yolo-test and yolo-predict on CUDA with those weights, then one with batch=-1 (AutoBatch);
#   5. train-step benchmark: yolov8n, imgsz 320, batch 16 (the CPU benchmark's shape), 128
#      synthetic images, 3 epochs on CUDA and 1 on the CPU; train images/s of each from yolo-train.
# Figures and logs go to $OUT (the device tool's folder) or target/gpu-check; summary: gpu_check.md.
#
# Usage: scripts/gpu_check.sh [BIN_DIR]
#   BIN_DIR  folder with the CUDA-built yolo-train, yolo-predict, yolo-test and a kubeyolo (any
#            build: only `kubeyolo demo --prepare-only` is used). Build them on a CPU machine with
#              eval "$(scripts/cuda_env.sh)"; CARGO_TARGET_DIR=/tmp/target-cuda cargo build --release \
#                  -p yolo-train -p yolo-predict -p yolo-test -p kubeyolo-pipeline --features kubeyolo/cuda
#            and strip them (`strip --strip-debug`); to carry them to a device machine (64 MiB),
#            pack them: `xz -T2 -6 BIN_DIR/*` (the script unpacks *.xz itself; ~27 MB in all).
# Env:   CUDA_LIBS   folder(s, ':'-separated) holding libcublas.so.13 & co. when not found by itself
#        GPU_CHECK_DEVICE=cpu  dry run of the script's own logic on a CPU machine with CPU binaries
#                    (every "CUDA" run then runs on the CPU: its figures are not GPU figures)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/target/gpu-check}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
report="$out/gpu_check.md"
: > "$report"
note() { echo "$*" | tee -a "$report"; }
fail() { note "FAILED: $*"; exit 1; }

gdev=${GPU_CHECK_DEVICE:-0}
note "# scripts/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note ""
if [ "$gdev" = cpu ]; then
  note "DRY RUN (GPU_CHECK_DEVICE=cpu): every 'CUDA' run below ran on the CPU; these are not GPU results"
  gpu="none, none, 9.0, none"
else
  command -v nvidia-smi >/dev/null || fail "no nvidia-smi: not a GPU machine"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -1)
fi
note "GPU: $gpu"
cap=$(echo "$gpu" | awk -F', ' '{ gsub(/\./, "", $3); print $3 }')

# 1. binaries
bin=${1:-}
if [ -z "$bin" ]; then
  if ! command -v nvcc >/dev/null; then eval "$(scripts/cuda_env.sh)"; fi
  nvcc_root=$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)
  ver=$(nvcc --version | sed -nE 's/.*release ([0-9]+)\.([0-9]+).*/\1 \2/p')
  export CUDA_ROOT=${CUDA_ROOT:-$nvcc_root} CUDA_PATH=${CUDA_PATH:-$nvcc_root}
  export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-$(echo "$ver" | awk '{ printf "%d%03d0", $1, $2 }')}
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-$cap}
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
  start=$SECONDS
  cargo build --release -p yolo-train -p yolo-predict -p yolo-test -p kubeyolo-pipeline --features kubeyolo/cuda \
    > "$out/build.log" 2>&1 || { tail -30 "$out/build.log"; fail "cargo build --features cuda (log: build.log)"; }
  note "build: cargo build --release --features kubeyolo/cuda, CUDA $ver, sm_$CUDA_COMPUTE_CAP: $((SECONDS - start)) s"
  bin=$CARGO_TARGET_DIR/release
fi
bin=$(cd "$bin" && pwd)
if ls "$bin"/*.xz >/dev/null 2>&1; then   # carried packed (xz: ~27 MB for the three CUDA binaries + kubeyolo)
  mkdir -p "$work/bin"
  for f in "$bin"/*.xz; do xz -dc "$f" > "$work/bin/$(basename "$f" .xz)"; chmod 0755 "$work/bin/$(basename "$f" .xz)"; done
  for f in "$bin"/*; do case "$f" in *.xz) ;; *) cp -n "$f" "$work/bin/" ;; esac; done
  bin=$work/bin
fi
for b in yolo-train yolo-predict yolo-test kubeyolo; do [ -x "$bin/$b" ] || fail "no $bin/$b"; done

# 2. CUDA libraries (the driver's libcuda.so.1 comes with the driver)
dirs=${CUDA_LIBS:-}
for d in "$root"/.venvs/cuda/lib/python3*/site-packages/nvidia/cu13/lib \
         $(python3 -c 'import nvidia, os; [print(os.path.join(p, "cu13", "lib")) for p in nvidia.__path__]' 2>/dev/null || true) \
         /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$d/libcublas.so.13" ] && dirs="$dirs:$d"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$bin/yolo-train" | awk '/not found/ { print $1 }' | tr '\n' ' ')
[ "$gdev" != cpu ] || missing=""
[ -z "$missing" ] || fail "libraries not found: $missing (set CUDA_LIBS)"
note "libraries: $(ldd "$bin/yolo-train" | awk '/libcu|libnvrtc/ { print $3 }' | tr '\n' ' ')"
note ""

# 3. forward parity CPU vs CUDA on ultralytics' parity fixtures
fx=tests/fixtures/parity
mkdir -p "$work/images"; cp "$fx"/img_*.png "$fx"/img_*.jpg "$work/images/"
for model in parity_n4_fp16.pt custom_fp32.pt; do
  for dev in cpu "$gdev"; do
    "$bin/yolo-predict" --model "$fx/$model" --source "$work/images" --out "$work/pred-$model-$dev" --imgsz 320 \
      --conf 0.25 --device "$dev" --data-root "$work" > "$out/predict-$model-$dev.log" 2>&1 \
      || fail "yolo-predict --device $dev on $model (log: predict-$model-$dev.log)"
  done
done
python3 - "$work" "$report" "$gdev" <<'EOF' || fail "forward parity CPU vs CUDA"
import json, sys
work, report, gdev = sys.argv[1], sys.argv[2], sys.argv[3]
ok = True
lines = ["| model | images | detections | max box diff (px) | max conf diff | within 1e-3 |", "|---|---|---|---|---|---|"]
for model in ["parity_n4_fp16.pt", "custom_fp32.pt"]:
    cpu = {p["image"]: p for p in json.load(open(f"{work}/pred-{model}-cpu/predictions.json"))}
    gpu = {p["image"]: p for p in json.load(open(f"{work}/pred-{model}-{gdev}/predictions.json"))}
    n, box, conf, good = 0, 0.0, 0.0, cpu.keys() == gpu.keys()
    for img, c in cpu.items():
        g = gpu.get(img, {"detections": []})
        size = max(c["orig_shape"])
        # Pair each CPU detection with the closest CUDA one of the same class; a detection may
        # only be unmatched when its confidence is within 1e-3 of the threshold.
        left = list(g["detections"])
        for d in c["detections"]:
            cands = [e for e in left if e["class"] == d["class"]]
            if not cands:
                good &= abs(d["confidence"] - 0.25) <= 1e-3
                continue
            key = lambda e: max(abs(e["box"][k] - d["box"][k]) for k in ("x1", "y1", "x2", "y2"))
            e = min(cands, key=key)
            left.remove(e)
            n += 1
            box = max(box, key(e)); conf = max(conf, abs(e["confidence"] - d["confidence"]))
            good &= key(e) <= 1e-3 * size and abs(e["confidence"] - d["confidence"]) <= 1e-3
        good &= all(abs(e["confidence"] - 0.25) <= 1e-3 for e in left)
    ok &= good
    lines.append(f"| {model} | {len(cpu)} | {n} | {box:.2e} | {conf:.2e} | {'yes' if good else 'NO'} |")
text = f"forward parity, yolo-predict --device cpu vs --device {gdev} (imgsz 320, conf 0.25):\n\n" + "\n".join(lines) + "\n"
print(text); open(report, "a").write(text + "\n")
sys.exit(0 if ok else 1)
EOF

# 4. one epoch on tiny data on CUDA, then test and predict on CUDA
tiny="$work/tiny"
"$bin/kubeyolo" demo --prepare-only --images 16 --imgsz 64 --epochs 1 --dir "$tiny" > /dev/null
"$bin/yolo-train" --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom --set device=$gdev --set epochs=1 \
  --run-dir runs/detect/gpu --data-root "$tiny" --no-mlflow > "$out/train-tiny.log" 2>&1 || fail "train 1 epoch on CUDA (log: train-tiny.log)"
w="$tiny/runs/detect/gpu/weights/best.safetensors"
[ -s "$w" ] || fail "no $w"
python3 - "$tiny/runs/detect/gpu/results.csv" <<'EOF' || fail "results.csv has non-finite losses"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
vals = [float(v) for r in rows for k, v in r.items() if "loss" in k]
assert rows and vals and all(math.isfinite(v) for v in vals), vals
EOF
"$bin/yolo-test" --weights "$w" --data-yaml data-custom --device "$gdev" --data-root "$tiny" --out-dir "$work/test-out" --no-mlflow \
  > "$out/test-tiny.log" 2>&1 || fail "yolo-test on CUDA (log: test-tiny.log)"
"$bin/yolo-predict" --model "$w" --source "$tiny/images" --out "$work/pred-tiny" --device "$gdev" --data-root "$tiny" \
  > "$out/predict-tiny.log" 2>&1 || fail "yolo-predict on CUDA with the trained weights (log: predict-tiny.log)"
note "train 1 epoch on CUDA (16 images, 64 px): ok, losses finite; yolo-test and yolo-predict on CUDA: ok"
note ""

# 4b. AutoBatch on CUDA (batch=-1): the probes run and a batch is chosen; its choice is printed
"$bin/yolo-train" --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom --set device=$gdev --set epochs=1 \
  --set batch=-1 --run-dir runs/detect/gpu-autobatch --data-root "$tiny" --no-mlflow > "$out/train-autobatch.log" 2>&1 \
  || fail "train with batch=-1 on CUDA (log: train-autobatch.log)"
note "AutoBatch on CUDA: $(grep -E 'AutoBatch: (batch|Using|[0-9.]+G total)' "$out/train-autobatch.log" | tr '\n' ';' | cut -c1-600)"
note ""

# 5. train-step benchmark: imgsz 320, batch 16, 128 images
bench="$work/bench"
"$bin/kubeyolo" demo --prepare-only --images 128 --imgsz 320 --epochs 3 --dir "$bench" > /dev/null
rate() { sed -nE 's/.*\(([0-9.]+) train images\/s.*/\1/p' "$1" | tail -1; }
for dev in "$gdev" cpu; do
  epochs=3; [ "$dev" = cpu ] && epochs=1
  start=$SECONDS
  "$bin/yolo-train" --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom --set device=$dev \
    --set epochs=$epochs --set imgsz=320 --set batch=16 --set workers=4 --set plots=false --run-dir "runs/detect/bench-$dev" \
    --data-root "$bench" --no-mlflow > "$out/bench-$dev.log" 2>&1 || fail "benchmark on $dev (log: bench-$dev.log)"
  note "train-step benchmark, device $dev: $(rate "$out/bench-$dev.log") train images/s (yolov8n, 320 px, batch 16, 128 images, $epochs epochs, $((SECONDS - start)) s wall incl. validation)"
done
note ""
note "passed"
