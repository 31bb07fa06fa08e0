#!/usr/bin/env bash
# kubeyolo's whole test suite, from a fresh clone: the README's second command.
#
# 0. checks the formatting (`cargo fmt --all --check`, settings in rustfmt.toml; `cargo fmt --all`
#    fixes it), where the toolchain has rustfmt,
# 1. builds the workspace while the Python venvs install (real MLflow + moto S3 server; real kfp SDK;
#    the Katib SDK),
# 2. starts a real `mlflow server` and an S3-compatible server on loopback (scripts/services.sh),
# 3. runs `cargo test --workspace` with KUBEYOLO_REQUIRE_SERVICES=1, so a test that needs a service
#    fails (instead of skipping) when the service is missing.
# Services are stopped on exit, whatever happens.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

echo "== cargo fmt --all --check (rustfmt.toml; \`cargo fmt --all\` fixes it)"
if ! cargo fmt --version >/dev/null 2>&1; then
  echo "   (skipped: this toolchain has no rustfmt)"
elif ! cargo fmt --all --check >/dev/null; then
  cargo fmt --all --check | head -40 || true
  echo "formatting differs from rustfmt: run \`cargo fmt --all\`" >&2
  exit 1
fi

echo "== python venvs (mlflow, kfp, katib) in the background; building the workspace"
logdir=$(mktemp -d)
scripts/venv.sh mlflow >"$logdir/mlflow.log" 2>&1 & venv_mlflow=$!
scripts/venv.sh kfp >"$logdir/kfp.log" 2>&1 & venv_kfp=$!
scripts/venv.sh katib >"$logdir/katib.log" 2>&1 & venv_katib=$!
cargo build --workspace --all-targets
wait "$venv_mlflow" || { cat "$logdir/mlflow.log"; echo "venv mlflow failed" >&2; exit 1; }
wait "$venv_kfp" || { cat "$logdir/kfp.log"; echo "venv kfp failed" >&2; exit 1; }
wait "$venv_katib" || { cat "$logdir/katib.log"; echo "venv katib failed" >&2; exit 1; }

echo "== services (real mlflow server + S3-compatible moto server on 127.0.0.1)"
trap 'scripts/services.sh stop || true' EXIT
eval "$(scripts/services.sh start)"

export KUBEYOLO_REQUIRE_SERVICES=1
export KUBEYOLO_KFP_PYTHON="$root/.venvs/kfp/bin/python"
export KUBEYOLO_KATIB_PYTHON="$root/.venvs/katib/bin/python"
echo "== cargo test"
cargo test --workspace --no-fail-fast "$@"
