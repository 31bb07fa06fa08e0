#!/usr/bin/env bash
# The one prepared GPU check, for a machine with an NVIDIA GPU (driver R580+ / CUDA 13). A GPU
# machine is lent rarely and briefly, so one call must learn as much as it can: every step has its
# own time limit, a failed step is reported (with its log's tail) and the independent steps after
# it still run; the script exits non-zero if any step failed. Never record a GPU figure that this
# script did not print.
#
#   1. binaries: CUDA-built yolo-train, yolo-predict, yolo-test from BIN_DIR, else built here with
#      `cargo build --release --features kubeyolo/cuda` (toolkit: nvcc on PATH, else scripts/cuda_env.sh);
#   2. CUDA libraries: found (cuBLAS, cuBLASLt, cuRAND, NVRTC, cudart 13) or the check stops, saying which;
#   3. forward parity CPU vs CUDA: yolo-predict on the parity fixtures (tests/fixtures/parity, made
#      by ultralytics) with --device cpu and --device 0: same detections, boxes and confidences
#      within 1e-3 (boxes: 1e-3 of the image size);
#   3a. the CUDA unit tests (shared/tests/cuda.rs: GPU paths equal the CPU's), where BIN_DIR holds
#      their binary as cuda-tests (`cargo test --release -p kubeyolo --features cuda --test cuda --no-run`);
#   3b. cold start: yolo-predict on CUDA with an empty kernel cache (a new pod), then a warm one;
#   4. one train epoch on tiny synthetic data on CUDA (device=0), weights written, losses finite,
#      then yolo-test and yolo-predict on CUDA with those weights;
#   5. training benchmark for each shape IMGSZ:BATCH of GPU_CHECK_SHAPES (default 320:16, the CPU
#      benchmark's shape): yolov8n, 256 synthetic images of IMGSZ px, 5 epochs on CUDA (and 2 on
#      the CPU, all its cores, at 320 px);
#   5b. where a CUDA epoch's time goes: 3 epochs with KUBEYOLO_PHASES=1 (train/phases.rs);
#   6. the same training with ultralytics 8.4 + PyTorch on the same GPU, data and cfg (amp=False,
#      kubeyolo's fp32 arithmetic; then amp=True, ultralytics' default), where python3 has torch
#      with CUDA and ultralytics (or its wheels in .whl/, carried: see below);
#   7. AutoBatch (batch=-1) on the last shape's data: the batch kubeyolo's CUDA probes choose,
#      beside the one ultralytics chooses on the same GPU and data;
#   8. the out-of-memory retry: batch 128 at 4x the last shape's size must run out of memory in
#      the first epoch, be halved and finish (not in the CPU dry run).
#   Figures of 5 and 6: images/s over the whole run (yolo-train's own figure; the same definition
#   for ultralytics), and the steady rate from results.csv (epochs 2..N: images / seconds per epoch,
#   validation included), which leaves out start-up (CUDA context, kernel loading, model build).
# Output: $OUT (the device tool's folder) or target/gpu-check: gpu_check.md (the summary) and
# logs.tar.gz (every step's log).
#
# Usage: scripts/gpu_check.sh [BIN_DIR]
#   BIN_DIR  folder with the CUDA-built yolo-train, yolo-predict, yolo-test and a kubeyolo (any
#            build: only `kubeyolo demo --prepare-only` is used). Build them on a CPU machine with
#              eval "$(scripts/cuda_env.sh)"; CARGO_TARGET_DIR=target/cuda cargo build --release \
#                  -p yolo-train -p yolo-predict -p yolo-test -p kubeyolo-pipeline --features kubeyolo/cuda
#            and strip them (`strip --strip-debug`); to carry them to a device machine (64 MiB),
#            pack them: `xz -T2 -6 BIN_DIR/*` (the script unpacks *.xz itself).
#   .whl/    (optional) ultralytics' wheels for step 6 where the GPU machine lacks it:
#              pip download --no-deps -d .whl ultralytics==8.4.190 ultralytics-thop
#            (polars is not needed: train_ultralytics.py reads results.csv without it)
# Env:   CUDA_LIBS   folder(s, ':'-separated) holding libcublas.so.13 & co. when not found by itself
#        GPU_CHECK_DEVICE=cpu  dry run of the script's own logic on a CPU machine with CPU binaries
#                    (every "CUDA" run then runs on the CPU: its figures are not GPU figures)
#        GPU_CHECK_PYTHON  the python with torch for steps 6 and 7 (default python3)
#        GPU_CHECK_STEPS   the steps to run, of: parity cudatests coldstart tiny bench phases ultralytics autobatch oom
#                          (default all)
#        GPU_CHECK_SHAPES  the benchmark shapes, IMGSZ:BATCH separated by spaces (default 320:16)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/target/gpu-check}
mkdir -p "$out"
work=$(mktemp -d)
logs="$work/logs"
mkdir -p "$logs"
report="$out/gpu_check.md"
: > "$report"
failed=()
finish() {
  tar -C "$work" -czf "$out/logs.tar.gz" logs 2>/dev/null
  rm -rf "$work"
}
trap finish EXIT
note() { echo "$*" | tee -a "$report"; }
# want STEP: whether GPU_CHECK_STEPS (default: all) names STEP
want() { [[ " ${GPU_CHECK_STEPS:-parity cudatests coldstart tiny bench phases ultralytics autobatch oom} " == *" $1 "* ]]; }
stop() { note "FAILED: $*"; exit 1; }
# step NAME SECONDS LOG CMD...: run CMD with a time limit, its output in LOG; on failure report
# NAME, the exit status and the log's tail, and return non-zero (the caller decides what to skip).
step() {
  local name=$1 limit=$2 log=$3 rc
  shift 3
  timeout "$limit" "$@" > "$logs/$log" 2>&1
  rc=$?
  [ "$rc" = 0 ] && return 0
  [ "$rc" = 124 ] && rc="$rc: over its ${limit} s"
  note "FAILED ($rc): $name (log: $log)"
  tail -15 "$logs/$log" | sed 's/^/    /' | tee -a "$report"
  failed+=("$name")
  return 1
}

# ktrain NAME SECONDS LOG DATA_ROOT RUN_DIR SETTING...: a step training yolov8n with the demo
# folder's cfg and dataset (`kubeyolo demo --prepare-only`), `--set` SETTINGs on top
ktrain() {
  local name=$1 limit=$2 log=$3 data=$4 run=$5 sets=() a
  shift 5
  for a in "$@"; do sets+=(--set "$a"); done
  step "$name" "$limit" "$log" "$bin/yolo-train" --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom \
    "${sets[@]}" --run-dir "$run" --data-root "$data" --no-mlflow --no-auto-resume
}

gdev=${GPU_CHECK_DEVICE:-0}
note "# scripts/gpu_check.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
note ""
if [ "$gdev" = cpu ]; then
  note "DRY RUN (GPU_CHECK_DEVICE=cpu): every 'CUDA' run below ran on the CPU; these are not GPU results"
  gpu="none, none, 9.0, none"
else
  command -v nvidia-smi >/dev/null || stop "no nvidia-smi: not a GPU machine"
  gpu=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader | head -1)
fi
note "GPU: $gpu; CPU: $(nproc) cores"
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
  step "cargo build --features cuda" 3600 build.log \
    cargo build --release -p yolo-train -p yolo-predict -p yolo-test -p kubeyolo-pipeline --features kubeyolo/cuda \
    || stop "no binaries"
  note "build: cargo build --release --features kubeyolo/cuda, CUDA $ver, sm_$CUDA_COMPUTE_CAP: $((SECONDS - start)) s"
  bin=$CARGO_TARGET_DIR/release
fi
bin=$(cd "$bin" && pwd)
if ls "$bin"/*.xz >/dev/null 2>&1; then   # carried packed
  mkdir -p "$work/bin"
  for f in "$bin"/*.xz; do xz -dc "$f" > "$work/bin/$(basename "$f" .xz)"; chmod 0755 "$work/bin/$(basename "$f" .xz)"; done
  for f in "$bin"/*; do case "$f" in *.xz) ;; *) cp -n "$f" "$work/bin/" ;; esac; done
  bin=$work/bin
fi
for b in yolo-train yolo-predict yolo-test kubeyolo; do [ -x "$bin/$b" ] || stop "no $bin/$b"; done

# 2. CUDA libraries (the driver's libcuda.so.1 comes with the driver)
dirs=${CUDA_LIBS:-}
for d in "$root"/.venvs/cuda/lib/python3*/site-packages/nvidia/cu13/lib \
         $(python3 -c 'import nvidia, os; [print(os.path.join(p, s, "lib")) for p in nvidia.__path__ for s in ("cu13", "cublas", "cuda_runtime", "cuda_nvrtc", "curand")]' 2>/dev/null || true) \
         /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -e "$d/libcublas.so.13" ] || [ -e "$d/libcudart.so.13" ] || [ -e "$d/libnvrtc.so.13" ] || [ -e "$d/libcurand.so.10" ] && dirs="$dirs:$d"
done
export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$bin/yolo-train" | awk '/not found/ { print $1 }' | tr '\n' ' ')
if [ -n "$missing" ] && [ "$gdev" != cpu ]; then   # last resort: look for them anywhere likely
  for so in $missing; do
    f=$(find /usr /opt /usr/local -name "$so" 2>/dev/null | head -1)
    [ -n "$f" ] && export LD_LIBRARY_PATH="$(dirname "$f"):$LD_LIBRARY_PATH"
  done
  missing=$(ldd "$bin/yolo-train" | awk '/not found/ { print $1 }' | tr '\n' ' ')
fi
[ "$gdev" != cpu ] || missing=""
[ -z "$missing" ] || stop "libraries not found: $missing (set CUDA_LIBS)"
note "libraries: $(ldd "$bin/yolo-train" | awk '/libcu|libnvrtc/ { print $3 }' | tr '\n' ' ')"
note ""

# 3. forward parity CPU vs CUDA on ultralytics' parity fixtures
fx=tests/fixtures/parity
mkdir -p "$work/images"; cp "$fx"/img_*.png "$fx"/img_*.jpg "$work/images/"
if want parity; then
parity_ok=1
for model in parity_n4_fp16.pt custom_fp32.pt; do
  for dev in cpu "$gdev"; do
    step "yolo-predict --device $dev on $model" 120 "predict-$model-$dev.log" \
      "$bin/yolo-predict" --model "$fx/$model" --source "$work/images" --out "$work/pred-$model-$dev" --imgsz 320 \
      --conf 0.25 --device "$dev" --data-root "$work" || parity_ok=0
  done
done
if [ "$parity_ok" = 1 ]; then
python3 - "$work" "$report" "$gdev" <<'EOF' || { note "FAILED: forward parity CPU vs CUDA"; failed+=("forward parity"); }
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
fi
fi   # parity

# 3a. the CUDA unit tests (shared/tests/cuda.rs), where BIN_DIR holds their binary as cuda-tests
if want cudatests && [ -x "$bin/cuda-tests" ]; then
  step "CUDA unit tests (shared/tests/cuda.rs)" 120 cuda-tests.log "$bin/cuda-tests" --test-threads 1 --nocapture \
    && note "CUDA unit tests: $(grep -E '^test result' "$logs/cuda-tests.log" | head -1)"
  grep -q skipped "$logs/cuda-tests.log" && { note "FAILED: the CUDA unit tests skipped (no GPU opened)"; failed+=("cuda tests ran"); }
  note ""
fi

# 3b. cold start: a CUDA process with an empty kernel cache (as in a new pod), then a warm one
if want coldstart && [ "$gdev" != cpu ]; then
  for cache in empty warm; do
    t0=$(date +%s.%N)
    step "yolo-predict with a $cache kernel cache" 120 "coldstart-$cache.log" env CUDA_CACHE_PATH="$work/nvcache" \
      "$bin/yolo-predict" --model "$fx/custom_fp32.pt" --source "$work/images" --out "$work/pred-cold-$cache" --imgsz 320 \
      --device "$gdev" --data-root "$work" \
      && note "yolo-predict on CUDA (5 images) with a $cache kernel cache (CUDA_CACHE_PATH): $(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s wall"
  done
  note "    the cache then holds $(du -sh "$work/nvcache" 2>/dev/null | cut -f1)"
  note ""
fi

# 4. one epoch on tiny data on CUDA, then test and predict on CUDA
if want tiny; then
tiny="$work/tiny"
"$bin/kubeyolo" demo --prepare-only --images 16 --imgsz 64 --epochs 1 --dir "$tiny" > /dev/null 2>&1 || stop "kubeyolo demo --prepare-only"
w="$tiny/runs/detect/gpu/weights/best.safetensors"
if ktrain "train 1 epoch on CUDA" 180 train-tiny.log "$tiny" runs/detect/gpu device=$gdev epochs=1; then
  if [ ! -s "$w" ]; then note "FAILED: no $w"; failed+=("tiny weights"); fi
  python3 - "$tiny/runs/detect/gpu/results.csv" <<'EOF' || { note "FAILED: results.csv has non-finite losses"; failed+=("finite losses"); }
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
vals = [float(v) for r in rows for k, v in r.items() if "loss" in k]
assert rows and vals and all(math.isfinite(v) for v in vals), vals
print("losses:", vals)
EOF
  note "train 1 epoch on CUDA (16 images, 64 px): $(grep -E '^final' "$logs/train-tiny.log" | head -1)"
  step "yolo-test on CUDA" 120 test-tiny.log \
    "$bin/yolo-test" --weights "$w" --data-yaml data-custom --device "$gdev" --data-root "$tiny" --out-dir "$work/test-out" \
    --no-mlflow && note "yolo-test on CUDA: ok"
  step "yolo-predict on CUDA with the trained weights" 120 predict-tiny.log \
    "$bin/yolo-predict" --model "$w" --source "$tiny/images" --out "$work/pred-tiny" --device "$gdev" --data-root "$tiny" \
    && note "yolo-predict on CUDA with the trained weights: ok"
fi
note ""
fi   # tiny

# 5. training benchmark per shape (IMGSZ:BATCH), 256 synthetic images of IMGSZ px, 5 epochs on
#    CUDA (2 on the CPU, 320 px only); 6. ultralytics on the same data and cfg.
nimg=256
# steady images/s from results.csv: images / mean seconds per epoch over epochs 2..N
steady() {
  python3 - "$1" "$nimg" <<'EOF' 2>/dev/null || echo "?"
import csv, sys
t = [float(r["time"]) for r in csv.DictReader(open(sys.argv[1]))]
print(f"{int(sys.argv[2]) * (len(t) - 1) / (t[-1] - t[0]):.1f}" if len(t) > 1 else "?")
EOF
}
rate() { sed -nE 's/.*\(([0-9.]+) train images\/s.*/\1/p' "$1" | tail -1; }
# the reference python (step 6 and the AutoBatch reference): ultralytics from .whl/ where carried
py=${GPU_CHECK_PYTHON:-python3}
case "$py" in */*) py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")" ;; esac   # the runs below start in the dataset folder
have_ultralytics=0
if [ "$gdev" != cpu ]; then
  if ls "$root"/.whl/*.whl > /dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" "$root"/.whl/*.whl \
      > "$logs/pip.log" 2>&1 && export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if "$py" -c 'import torch, ultralytics; assert torch.cuda.is_available()' > "$logs/ultralytics-import.log" 2>&1; then
    have_ultralytics=1
    note "reference: $("$py" -c 'import torch, ultralytics; print(f"ultralytics {ultralytics.__version__}, torch {torch.__version__}")' 2>/dev/null)"
  else
    note "no ultralytics reference: $py has no torch with CUDA or no ultralytics ($(tail -1 "$logs/ultralytics-import.log"))"
  fi
fi
# utrain NAME SECONDS LOG DATA_ROOT OUT AMP EPOCHS IMGSZ BATCH: a step training with ultralytics on
# the demo folder's dataset and cfg, with the overrides the kubeyolo runs use; its run folder is
# OUT/ultralytics, its cfg OUT.yaml
utrain() {
  local name=$1 limit=$2 log=$3 data=$4 out=$5
  "$py" - "$data/cfg-custom.yaml" "$out.yaml" "$6" "$7" "$8" "$9" <<'EOF'
import sys, yaml
a = yaml.safe_load(open(sys.argv[1]))
a.update(amp=sys.argv[3] == "True", epochs=int(sys.argv[4]), imgsz=int(sys.argv[5]), batch=int(sys.argv[6]), workers=4, plots=False)
yaml.safe_dump(a, open(sys.argv[2], "w"))
EOF
  # in the dataset folder (env -C): ultralytics resolves the yaml's `path: .` against the working folder
  step "$name" "$limit" "$log" env -C "$data" YOLO_OFFLINE=1 DEVICE="$gdev" \
    "$py" "$root/benchmarks/train_ultralytics.py" "$data/data-custom.yaml" "$out.yaml" "$out" "$(nproc)"
}
shapes=${GPU_CHECK_SHAPES:-320:16}
declare -A whole steady_rate
for shape in $shapes; do
  sz=${shape%:*}; bs=${shape#*:}
  bench="$work/bench$sz"
  "$bin/kubeyolo" demo --prepare-only --images $nimg --imgsz "$sz" --epochs 5 --dir "$bench" > /dev/null 2>&1 \
    || stop "kubeyolo demo --prepare-only (bench $sz)"
  if want bench; then
    devs="$gdev"; [ "$sz" = 320 ] && devs="$gdev cpu"
    for dev in $devs; do
      epochs=5; [ "$dev" = cpu ] && epochs=2
      start=$SECONDS
      if ktrain "kubeyolo train benchmark on $dev, $sz px" 240 "bench-$dev-$sz.log" "$bench" "runs/detect/bench-$dev" \
        device=$dev epochs=$epochs imgsz=$sz batch=$bs workers=4 plots=false; then
        whole[$dev-$sz]=$(rate "$logs/bench-$dev-$sz.log")
        steady_rate[$dev-$sz]=$(steady "$bench/runs/detect/bench-$dev/results.csv")
        note "kubeyolo train benchmark, device $dev: ${whole[$dev-$sz]} images/s whole run, ${steady_rate[$dev-$sz]} images/s steady (yolov8n, $sz px, batch $bs, $nimg images, $epochs epochs, $((SECONDS - start)) s wall)"
        note "    $(grep -E '^final' "$logs/bench-$dev-$sz.log" | head -1)"
      fi
    done
  fi
  if want phases; then   # where a CUDA epoch's time goes (KUBEYOLO_PHASES=1: the trainer syncs after each phase)
    KUBEYOLO_PHASES=1 ktrain "kubeyolo phases on $gdev, $sz px" 240 "phases-$gdev-$sz.log" "$bench" "runs/detect/phases-$gdev" \
      device=$gdev epochs=3 imgsz=$sz batch=$bs workers=4 plots=false \
      && note "kubeyolo on $gdev, $sz px, batch $bs: $(grep -E '^phases' "$logs/phases-$gdev-$sz.log" | tail -2 | tr '\n' ' ')"
  fi
  if want ultralytics && [ "$have_ultralytics" = 1 ]; then
    for amp in False True; do
      start=$SECONDS
      if utrain "ultralytics train benchmark amp=$amp, $sz px" 240 "ultralytics-amp$amp-$sz.log" "$bench" "$work/ultra-$amp-$sz" \
        "$amp" 5 "$sz" "$bs"; then
        u=$(sed -nE 's/^train_img_s=([0-9.]+)/\1/p' "$logs/ultralytics-amp$amp-$sz.log")
        us=$(steady "$work/ultra-$amp-$sz/ultralytics/results.csv")
        ratio=$(python3 -c "print(f'{float(\"${whole[$gdev-$sz]:-nan}\") / float(\"$u\"):.3f}, steady {float(\"${steady_rate[$gdev-$sz]:-nan}\") / float(\"$us\"):.3f}')" 2>/dev/null || echo "?")
        note "ultralytics train benchmark, device $gdev, amp=$amp: $u images/s whole run, $us images/s steady ($sz px, batch $bs, $((SECONDS - start)) s wall); kubeyolo/ultralytics: whole $ratio"
      fi
    done
  fi
  note ""
done

# 7. AutoBatch on CUDA (batch=-1) on the last shape's data: the probes run and a batch is chosen
if want autobatch; then
  ktrain "train with batch=-1 (AutoBatch) on CUDA, $sz px" 180 train-autobatch.log "$bench" runs/detect/gpu-autobatch \
    device=$gdev epochs=1 imgsz=$sz batch=-1 plots=false
  note "AutoBatch on CUDA, kubeyolo ($sz px, $nimg images): $(grep -E 'AutoBatch' "$logs/train-autobatch.log" | tr '\n' ';' | cut -c1-900)"
  if [ "$have_ultralytics" = 1 ]; then
    utrain "ultralytics with batch=-1 on CUDA" 180 ultralytics-autobatch.log "$bench" "$work/ultra-autobatch" False 1 "$sz" -1
    note "AutoBatch on CUDA, ultralytics (same data, amp=False): $(grep -E 'AutoBatch' "$logs/ultralytics-autobatch.log" | sed 's/\x1b\[[0-9;]*m//g' | tr '\n' ';' | cut -c1-900)"
  fi
  note ""
fi
# 8. The out-of-memory retry on a real GPU: at 4x the last shape's size (about 2 GiB per image at
#    1280 px on the H200's figures) a batch of 128 cannot fit, so the first epoch must halve it
#    (ultralytics 8.4's rule, at most 3 times) and finish. On the CPU an allocation failure aborts
#    the process instead of returning an error, so the dry run skips this step.
if want oom; then
  if [ "$gdev" = cpu ]; then
    note "out-of-memory retry: skipped in the CPU dry run"
  elif ktrain "train past the GPU's memory (batch 128, $((sz * 4)) px)" 300 train-oom.log "$bench" runs/detect/gpu-oom \
    device=$gdev epochs=1 imgsz=$((sz * 4)) batch=128 plots=false; then
    halvings=$(grep -c 'Reducing to batch=' "$logs/train-oom.log")
    note "out-of-memory retry: $halvings halving(s): $(grep -E 'out of memory|Reducing' "$logs/train-oom.log" | tr '\n' ';' | cut -c1-600)"
    [ "$halvings" -ge 1 ] || { note "FAILED: batch 128 at $((sz * 4)) px fitted: no out-of-memory error to retry"; failed+=(oom); }
  fi
  note ""
fi
if [ ${#failed[@]} = 0 ]; then note "passed"; else note "FAILED steps: ${failed[*]}"; exit 1; fi
