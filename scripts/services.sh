#!/usr/bin/env bash
# Start/stop the real services the tracking tests talk to, on 127.0.0.1 only:
#   - an MLflow tracking server (sqlite store, artifact proxy: runs get mlflow-artifacts:/ URIs);
#   - moto in server mode, an S3-compatible endpoint, with the bucket $KUBEYOLO_TEST_S3_BUCKET.
#     The MLflow server is given the same S3 endpoint, so experiments created with an
#     `s3://` artifact_location work end to end.
# Both come from the `mlflow` venv (scripts/venv.sh mlflow; requirements/mlflow.txt).
#
# Usage:
#   eval "$(scripts/services.sh start)"   # start both, wait until healthy, print `export` lines
#   cargo test --workspace                # tests read the variables below
#   scripts/services.sh stop              # stop both (process groups), keep the state folder
#   scripts/services.sh env               # print the export lines again
#
# Variables written to $STATE/env.sh and printed (the tests' contract):
#   KUBEYOLO_TEST_MLFLOW_URI        http://127.0.0.1:<port> of the MLflow server
#   KUBEYOLO_TEST_MLFLOW_BIN        the `mlflow` executable (fault tests start their own servers)
#   KUBEYOLO_TEST_S3_ENDPOINT       http://127.0.0.1:<port> of moto
#   KUBEYOLO_TEST_S3_BUCKET         bucket that exists on it
#   KUBEYOLO_TEST_S3_ACCESS_KEY / KUBEYOLO_TEST_S3_SECRET_KEY   credentials for it
# Tests that need a service and do not find its variable print "skipped: ..." — or FAIL when
# KUBEYOLO_REQUIRE_SERVICES=1 (CI sets it).
#
# Settings: KUBEYOLO_SERVICES_DIR (state folder; default target/services),
#           KUBEYOLO_SERVICES_TIMEOUT (seconds to wait for health; default 240).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${KUBEYOLO_SERVICES_DIR:-$root/target/services}
timeout=${KUBEYOLO_SERVICES_TIMEOUT:-240}
bucket=kubeyolo-test
key=testing
secret=testing

free_port() {
  "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

stop_group() { # pidfile
  local f=$1
  [ -f "$f" ] || return 0
  local pid
  pid=$(cat "$f")
  # Only a real process-group id (never 0/1: a negative 1 would mean every process).
  [[ "$pid" =~ ^[0-9]+$ ]] && (( pid > 1 )) || { rm -f "$f"; return 0; }
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

wait_http() { # url what logfile
  local url=$1 what=$2 log=$3 t0=$SECONDS
  until curl -sf -o /dev/null "$url"; do
    if (( SECONDS - t0 > timeout )); then
      echo "services.sh: $what not healthy after ${timeout}s; last log lines:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "services.sh: $what healthy after $((SECONDS - t0)) s" >&2
}

cmd=${1:-}
case "$cmd" in
  start)
    py=$("$root/scripts/venv.sh" mlflow)
    bin=$(dirname "$py")
    mkdir -p "$state"
    stop_group "$state/mlflow.pid"
    stop_group "$state/moto.pid"
    rm -rf "$state/mlflow.db" "$state/mlartifacts"
    mport=$(free_port)
    sport=$(free_port)
    s3="http://127.0.0.1:$sport"

    setsid "$bin/moto_server" -H 127.0.0.1 -p "$sport" >"$state/moto.log" 2>&1 &
    echo $! >"$state/moto.pid"

    # One worker and no job runner: the tests need the REST API only, and CI has 2 cores.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_S3_ENDPOINT_URL="$s3" AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_DEFAULT_REGION=us-east-1 \
      setsid "$bin/mlflow" server --host 127.0.0.1 --port "$mport" --workers 1 \
        --backend-store-uri "sqlite:///$state/mlflow.db" \
        --artifacts-destination "$state/mlartifacts" >"$state/mlflow.log" 2>&1 &
    echo $! >"$state/mlflow.pid"

    wait_http "$s3/moto-api/" "moto (S3) on port $sport" "$state/moto.log"
    "$py" - "$s3" "$bucket" "$key" "$secret" <<'PY'
import sys, boto3
endpoint, bucket, key, secret = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
PY
    wait_http "http://127.0.0.1:$mport/health" "mlflow server on port $mport" "$state/mlflow.log"
    wait_http "http://127.0.0.1:$mport/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default" "mlflow REST API" "$state/mlflow.log"

    cat >"$state/env.sh" <<ENV
export KUBEYOLO_TEST_MLFLOW_URI=http://127.0.0.1:$mport
export KUBEYOLO_TEST_MLFLOW_BIN=$bin/mlflow
export KUBEYOLO_TEST_S3_ENDPOINT=$s3
export KUBEYOLO_TEST_S3_BUCKET=$bucket
export KUBEYOLO_TEST_S3_ACCESS_KEY=$key
export KUBEYOLO_TEST_S3_SECRET_KEY=$secret
ENV
    cat "$state/env.sh"
    ;;
  stop)
    stop_group "$state/mlflow.pid"
    stop_group "$state/moto.pid"
    echo "services.sh: stopped" >&2
    ;;
  env)
    cat "$state/env.sh"
    ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
