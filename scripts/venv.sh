#!/usr/bin/env bash
# Create (or reuse) the Python venv .venvs/NAME from requirements/NAME.txt.
# Idempotent: a venv whose stamp matches the requirements file is reused as is.
# Usage: scripts/venv.sh NAME   -> prints the venv's python path on stdout
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/requirements/$name.txt"
dir="$root/.venvs/$name"
[ -f "$req" ] || { echo "scripts/venv.sh: no $req" >&2; exit 2; }
if [ ! -f "$dir/.stamp" ] || ! cmp -s "$req" "$dir/.stamp"; then
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/pip" install -q --upgrade pip >&2
  "$dir/bin/pip" install -q -r "$req" >&2
  cp "$req" "$dir/.stamp"
fi
echo "$dir/bin/python"
