#!/usr/bin/env bash
# Tune with kubeyolo (target/release/yolo-tune) and ultralytics 8.4 (`model.tune()`) on the same
# synthetic dataset, base cfg, budget and starting weights, one after the other on the same
# machine; then kubeyolo again with 2 workers sharing one tune folder (THREADS/2 threads each).
# Prints each run's fitness per iteration, the best fitness, wall time and the 2-worker speed-up.
#
# The starting weights are made first: ultralytics trains yolov8n from scratch for BASE_EPOCHS
# on the dataset (base.pt), and every tune iteration (both sides) fine-tunes from it, as the
# pipeline's tune starts from train's best. Needs `cargo build --release -p yolo-tune
# -p kubeyolo-bench` and `scripts/venv.sh ultralytics`.
#
#   benchmarks/tune_compare.sh OUT_DIR [ITERATIONS] [EPOCHS] [IMGSZ] [TRAIN_IMAGES] [BASE_EPOCHS] [THREADS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: tune_compare.sh OUT_DIR [ITERATIONS] [EPOCHS] [IMGSZ] [TRAIN_IMAGES] [BASE_EPOCHS] [THREADS]}
mkdir -p "$out"; out=$(cd "$out" && pwd)
iters=${2:-8}; epochs=${3:-2}; imgsz=${4:-128}; ntrain=${5:-160}; base_epochs=${6:-10}; threads=${7:-2}
bin=${CARGO_TARGET_DIR:-$root/target}/release
py=$root/.venvs/ultralytics/bin/python
"$bin/synth_gen" --dir "$out/data" --train "$ntrain" --val $((ntrain / 4)) --imgsz "$imgsz" --seed 100 >/dev/null
cfg() { # epochs
  printf 'epochs: %s\nimgsz: %s\nbatch: 16\nworkers: 2\nseed: 0\ndeterministic: true\nplots: false\n' "$1" "$imgsz"
}
cfg "$base_epochs" > "$out/base.yaml"
# model.tune() trains with AdamW; its default lr0 0.01 (SGD's) wipes the base model out within
# 2 epochs (measured: fitness 0.0004 from a 0.66 base), so the base cfg starts at AdamW's 0.001.
(cfg "$epochs"; echo "lr0: ${LR0:-0.001}") > "$out/cfg.yaml"
# ultralytics resolves the dataset yaml's `path: .` against the working folder
if [ ! -f "$out/base.pt" ]; then
  echo "== base weights: ultralytics, $base_epochs epochs from scratch"
  (cd "$out/data" && "$py" "$root/benchmarks/train_ultralytics.py" "$out/data/data-synth.yaml" "$out/base.yaml" "$out/base" "$threads") \
    >"$out/base.log" 2>&1 || { tail -20 "$out/base.log"; exit 1; }
  cp "$out/base/ultralytics/weights/best.pt" "$out/base.pt"
fi
tune_k() { # dir worker threads
  RAYON_NUM_THREADS=$3 "$bin/yolo-tune" --model-path "$out/base.pt" --cfg-yaml "$out/cfg.yaml" --data-yaml "$out/data/data-synth.yaml" \
    --iterations "$iters" --tune-dir "$1" --worker "$2" --data-root "$out" --log-seconds 600
}
rm -rf "$out/kubeyolo-tune" "$out/kubeyolo-tune2" "$out/ultralytics-tune"
echo "== kubeyolo, 1 worker x $threads threads"
s=$(date +%s.%N)
tune_k kubeyolo-tune 0 "$threads" >"$out/kubeyolo.log" 2>&1 || { tail -20 "$out/kubeyolo.log"; exit 1; }
k1=$(echo "$(date +%s.%N) - $s" | bc)
echo "== ultralytics, $threads threads"
s=$(date +%s.%N)
(cd "$out/data" && "$py" "$root/benchmarks/tune_ultralytics.py" "$out/data/data-synth.yaml" "$out/cfg.yaml" "$out" "$threads" "$out/base.pt" "$iters") \
  >"$out/ultralytics.log" 2>&1 || { tail -20 "$out/ultralytics.log"; exit 1; }
u=$(echo "$(date +%s.%N) - $s" | bc)
half=$(( threads / 2 > 0 ? threads / 2 : 1 ))
echo "== kubeyolo, 2 workers x $half threads, one tune folder"
s=$(date +%s.%N)
tune_k kubeyolo-tune2 0 "$half" >"$out/kubeyolo-w0.log" 2>&1 & p0=$!
tune_k kubeyolo-tune2 1 "$half" >"$out/kubeyolo-w1.log" 2>&1 & p1=$!
wait $p0 || { tail -20 "$out/kubeyolo-w0.log"; exit 1; }
wait $p1 || { tail -20 "$out/kubeyolo-w1.log"; exit 1; }
k2=$(echo "$(date +%s.%N) - $s" | bc)
"$py" - "$out" "$k1" "$u" "$k2" <<'PY'
import json, sys
out, k1, u, k2 = sys.argv[1], *map(float, sys.argv[2:])
def recs(d):
    with open(f"{out}/{d}/tune_results.ndjson") as f:
        return sorted((json.loads(l) for l in f if l.strip()), key=lambda r: r["iteration"])
rows = [("kubeyolo, 1 worker", "kubeyolo-tune", k1), ("ultralytics 8.4", "ultralytics-tune", u), ("kubeyolo, 2 workers", "kubeyolo-tune2", k2)]
print(f"{'':22}{'best fitness':>13}{'wall s':>9}  fitness per iteration")
for name, d, wall in rows:
    fit = [x["fitness"] for x in recs(d)]
    per = " ".join("%.4f" % v for v in fit)
    print(f"{name:22}{max(fit):13.5f}{wall:9.1f}  {per}")
print(f"wall ultralytics / kubeyolo (1 worker): {u / k1:.3f}")
print(f"speed-up of 2 workers over 1 (kubeyolo): {k1 / k2:.3f}")
PY
