#!/usr/bin/env bash
# Train yolov8n (from scratch, or fine-tuned from MODEL, e.g. an ultralytics .pt) with kubeyolo
# (target/release/yolo-train) and ultralytics 8.4 on the same synthetic dataset, cfg and seed, one after the other on the same machine, and print final
# mAP50 / mAP50-95, wall time, training img/s and peak RSS of both, plus both per-epoch
# mAP50-95 curves (train_compare.png). Needs `cargo build --release -p yolo-train -p kubeyolo-bench`
# and `scripts/venv.sh ultralytics`.
#
#   benchmarks/train_compare.sh OUT_DIR [EPOCHS] [IMGSZ] [TRAIN_IMAGES] [SEED] [THREADS] [MODEL]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: train_compare.sh OUT_DIR [EPOCHS] [IMGSZ] [TRAIN_IMAGES] [SEED] [THREADS] [MODEL]}
mkdir -p "$out"; out=$(cd "$out" && pwd)
epochs=${2:-20}; imgsz=${3:-160}; ntrain=${4:-320}; seed=${5:-0}; threads=${6:-2}; model=${7:-yolov8n.yaml}
bin=${CARGO_TARGET_DIR:-$root/target}/release
py=$root/.venvs/ultralytics/bin/python
mkdir -p "$out"
# SYNTH_SEED picks another synthetic dataset (e.g. to fine-tune on data the MODEL never saw)
"$bin/synth_gen" --dir "$out/data" --train "$ntrain" --val $((ntrain / 4)) --imgsz "$imgsz" --seed "${SYNTH_SEED:-100}" >/dev/null
cat > "$out/cfg.yaml" <<CFG
epochs: $epochs
imgsz: $imgsz
batch: 16
workers: 2
seed: $seed
deterministic: true
plots: false
close_mosaic: $((epochs / 4))
CFG
run_kubeyolo() {
  echo "== kubeyolo"
  RAYON_NUM_THREADS=$threads /usr/bin/time -v "$bin/yolo-train" --model-path "$model" --cfg-yaml "$out/cfg.yaml" \
    --data-yaml "$out/data/data-synth.yaml" --run-dir "$out/kubeyolo" --no-auto-resume --data-root "$out" --log-seconds 600 \
    >"$out/kubeyolo.log" 2>"$out/kubeyolo.err" || { tail -20 "$out/kubeyolo.err"; exit 1; }
}
run_ultralytics() {
  echo "== ultralytics"
  # from the dataset folder: ultralytics resolves the yaml's `path: .` against the working folder
  (cd "$out/data" && /usr/bin/time -v "$py" "$root/benchmarks/train_ultralytics.py" "$out/data/data-synth.yaml" "$out/cfg.yaml" "$out" "$threads" "$model") \
    >"$out/ultralytics.log" 2>"$out/ultralytics.err" || { tail -20 "$out/ultralytics.err"; exit 1; }
}
# FIRST=ultralytics swaps the order, so repeated pairs can alternate it (the VM drifts between runs)
if [ "${FIRST:-kubeyolo}" = ultralytics ]; then run_ultralytics; run_kubeyolo; else run_kubeyolo; run_ultralytics; fi
"$py" - "$out" <<'PY'
import re, sys, csv
out = sys.argv[1]
def rows(p):
    with open(p) as f:
        return list(csv.DictReader(f))
def rss(p):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(p).read())
    return int(m.group(1)) / 1e6 if m else float("nan")
def wall(p):
    m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", open(p).read())
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi) * 60 + float(s)
k = rows(f"{out}/kubeyolo/results.csv")
u = rows(f"{out}/ultralytics/results.csv")
kl = open(f"{out}/kubeyolo.log").read()
ul = open(f"{out}/ultralytics.log").read()
kimg = float(re.search(r"\(([\d.]+) train images/s", kl).group(1))
uimg = float(re.search(r"train_img_s=([\d.]+)", ul).group(1))
key50, key = "metrics/mAP50(B)", "metrics/mAP50-95(B)"
print(f"{'':14}{'kubeyolo':>12}{'ultralytics':>14}{'ratio':>8}")
for name, a, b in [("mAP50", float(k[-1][key50]), float(u[-1][key50])), ("mAP50-95", float(k[-1][key]), float(u[-1][key])),
                   ("best mAP50-95", max(float(r[key]) for r in k), max(float(r[key]) for r in u)),
                   ("wall s", wall(f"{out}/kubeyolo.err"), wall(f"{out}/ultralytics.err")),
                   ("peak RSS GB", rss(f"{out}/kubeyolo.err"), rss(f"{out}/ultralytics.err"))]:
    print(f"{name:14}{a:12.4f}{b:14.4f}{a / b if b else float('nan'):8.3f}")
print(f"{'train img/s':14}{kimg:12.2f}{uimg:14.2f}{kimg / uimg:8.3f}   (images x epochs / training wall time, validation included)")
m = re.search(r"([\d.]+) s waiting for data", kl)
print(f"kubeyolo waited {m.group(1) if m else '?'} s for data")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.figure(figsize=(6, 4))
    plt.plot([int(r["epoch"]) for r in k], [float(r[key]) for r in k], ".-", label="kubeyolo")
    plt.plot([int(r["epoch"]) for r in u], [float(r[key]) for r in u], ".-", label="ultralytics 8.4")
    plt.xlabel("epoch"); plt.ylabel("mAP50-95 (val)"); plt.legend(); plt.tight_layout()
    plt.savefig(f"{out}/train_compare.png", dpi=120)
    print(f"curves: {out}/train_compare.png")
except Exception as e:  # noqa: BLE001
    print(f"no plot: {e}")
PY
