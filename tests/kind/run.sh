#!/usr/bin/env bash
# End-to-end test on a local Kubernetes cluster (kind): the compiled pipeline on a real Kubeflow
# Pipelines (v2) or Argo (the v1 YAML), with the step images, a hostPath PV/PVC holding a synthetic
# dataset the way the seed pipelines mount theirs, and an MLflow server; then checks the outputs on
# the volume and the MLflow run. docs/kubeflow.md is the same path, written for a real cluster.
#
# Usage: tests/kind/run.sh [v2|v1]                      (default v2)
# Env:   KIND_CLUSTER      cluster name (default kubeyolo; reused when it exists)
#        KIND_NODE_IMAGE   node image (default kindest/node:v1.33.1); must be local or pullable
#        KFP_VERSION       Kubeflow Pipelines standalone manifests (default 2.14.3)
#        ARGO_VERSION      Argo Workflows for v1 (default v3.6.15)
#        MLFLOW_IMAGE      MLflow server image (default ghcr.io/mlflow/mlflow:v3.17.2); MLFLOW=0: no MLflow
#        KUBEYOLO_KIND_BUILD  docker/build.sh arguments (default "--tag kind"; e.g. "--profile debug --no-cargo --tag kind")
#        KUBEYOLO_KIND_DATA   host folder of the dataset, mounted into the node (default /tmp/kubeyolo-kind-data)
#        KEEP_CLUSTER=1   keep the cluster afterwards (default: delete it when this script created it)
#        TIMEOUT          seconds to wait for the run (default 1800)
# Exits 0 with a "skipped: ..." line when kind, kubectl, Docker or a node image is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
format=${1:-v2}
case "$format" in v2|v1) ;; *) echo "usage: tests/kind/run.sh [v2|v1]" >&2; exit 2;; esac
cluster=${KIND_CLUSTER:-kubeyolo}
node_image=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
kfp_version=${KFP_VERSION:-2.14.3}
argo_version=${ARGO_VERSION:-v3.6.15}
mlflow_image=${MLFLOW_IMAGE:-ghcr.io/mlflow/mlflow:v3.17.2}
data=${KUBEYOLO_KIND_DATA:-/tmp/kubeyolo-kind-data}
node_data=/mnt/kubeyolo-data
timeout=${TIMEOUT:-1800}
read -r -a build_args <<< "${KUBEYOLO_KIND_BUILD:---tag kind}"
tag=kind
for ((i = 0; i < ${#build_args[@]}; i++)); do [ "${build_args[$i]}" = --tag ] && tag=${build_args[$((i + 1))]}; done

skip() { echo "skipped: $*"; exit 0; }
say() { echo "== $*"; }
command -v kind >/dev/null 2>&1 || skip "kind not installed (https://kind.sigs.k8s.io)"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not installed"
timeout 20 docker info >/dev/null 2>&1 || skip "no Docker engine"

created=0
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  if ! docker image inspect "$node_image" >/dev/null 2>&1 && ! timeout 600 docker pull "$node_image" >/dev/null 2>&1; then
    skip "no cluster: kind node image $node_image is not local and cannot be pulled"
  fi
  say "kind cluster $cluster ($node_image), $data mounted at $node_data on the node"
  mkdir -p "$data"
  kind create cluster --name "$cluster" --image "$node_image" --wait 300s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
  extraMounts:
  - hostPath: $data
    containerPath: $node_data
EOF
  created=1
fi
ctx="kind-$cluster"
node="$cluster-control-plane"
k() { kubectl --context "$ctx" "$@"; }
pf_pids=()
cleanup() {
  for p in "${pf_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "$created" = 1 ] && [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
docker exec "$node" test -d "$node_data" || { echo "cluster $cluster has no $node_data mount (created elsewhere?): delete it or set KIND_CLUSTER" >&2; exit 1; }

say "step images: docker/build.sh ${build_args[*]}; kind load"
docker/build.sh "${build_args[@]}"
for step in verify distribution plot train test tune; do
  image="kubeyolo/yolo-$step:$tag"
  docker image inspect "$image" >/dev/null 2>&1 && kind load docker-image --name "$cluster" "$image"
done

bin=target/release/kubeyolo
[ -x "$bin" ] || bin=target/debug/kubeyolo
[ -x "$bin" ] || cargo build -q -p kubeyolo-pipeline

say "dataset on the node: kubeyolo demo --prepare-only into $data ($node_data on the node)"
"$bin" demo --prepare-only --images 16 --imgsz 64 --epochs 2 --dir "$data"
# The step images run as uid 65532, gid 0: a hostPath volume must be writable for gid 0.
docker exec "$node" chmod -R g+rwX "$node_data"

if [ "$format" = v2 ]; then
  ns=kubeflow
  say "Kubeflow Pipelines $kfp_version (standalone, platform-agnostic)"
  export PIPELINE_VERSION=$kfp_version
  k apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$PIPELINE_VERSION"
  k wait --for condition=established --timeout=60s crd/applications.app.k8s.io
  k apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$PIPELINE_VERSION"
  k wait --for=condition=Available --timeout=900s -n kubeflow deployment --all
else
  ns=argo
  say "Argo Workflows $argo_version (for the kfp 1.8 YAML)"
  k get namespace argo >/dev/null 2>&1 || k create namespace argo
  k apply --server-side -n argo -f "https://github.com/argoproj/argo-workflows/releases/download/${argo_version}/quick-start-minimal.yaml"
  k wait --for=condition=Available --timeout=600s -n argo deployment --all
  # kfp 1.8 workflows run as the pipeline-runner service account; Argo's executor needs these rights.
  k delete serviceaccount pipeline-runner -n argo --ignore-not-found >/dev/null
  k delete role kubeyolo-executor -n argo --ignore-not-found >/dev/null
  k delete rolebinding kubeyolo-executor -n argo --ignore-not-found >/dev/null
  k create serviceaccount pipeline-runner -n argo
  k create role kubeyolo-executor -n argo --verb=create,get,list,watch,patch --resource=workflowtaskresults.argoproj.io,pods,pods/log
  k create rolebinding kubeyolo-executor -n argo --role=kubeyolo-executor --serviceaccount=argo:pipeline-runner
fi

say "PV/PVC pvc-local-cocodata in $ns (hostPath $node_data)"
sed -e "s#@NAMESPACE@#$ns#g" -e "s#@HOST_PATH@#$node_data#g" tests/kind/pv.yaml | k apply -f -
k wait --for=jsonpath='{.status.phase}'=Bound --timeout=60s -n "$ns" pvc/pvc-local-cocodata

mlflow_flags=()
if [ "${MLFLOW:-1}" = 1 ]; then
  say "MLflow server ($mlflow_image) and its ConfigMap/Secret in $ns"
  sed "s#@MLFLOW_IMAGE@#$mlflow_image#g" tests/kind/mlflow.yaml | k apply -f -
  k wait --for=condition=Available --timeout=600s -n mlflow-system deployment/mlflow-server
  k delete configmap mlflow-settings -n "$ns" --ignore-not-found >/dev/null
  k delete secret mlflow-s3 -n "$ns" --ignore-not-found >/dev/null
  k create configmap mlflow-settings -n "$ns" --from-literal=MLFLOW_TRACKING_URI=http://mlflow-server-service.mlflow-system.svc:5000 \
      --from-literal=MLFLOW_S3_ENDPOINT_URL=http://minio-service.kubeflow.svc:9000
  # Artifacts go through the MLflow server here (mlflow-artifacts:); the keys matter for an s3:// store.
  k create secret generic mlflow-s3 -n "$ns" --from-literal=AWS_ACCESS_KEY_ID=minio --from-literal=AWS_SECRET_ACCESS_KEY=minio123
  mlflow_flags=(--mlflow-secret mlflow-s3 --mlflow-configmap mlflow-settings --mlflow-experiment kubeyolo-kind)
fi

say "compile ($format) and run"
out=$(mktemp -d)
"$bin" compile --format "$format" --image-prefix kubeyolo --tag "$tag" --pvc pvc-local-cocodata --gpus 0 \
    --no-requests "${mlflow_flags[@]}" -o "$out/pipeline.yaml"
params=(model_name=yolov8n.yaml cfg=cfg-custom data=data-custom bool_train=true bool_tune=false)
if [ "$format" = v2 ]; then
  py=$(scripts/venv.sh kfp)
  "$py" scripts/check_kfp.py "$out/pipeline.yaml"
  k port-forward -n kubeflow svc/ml-pipeline-ui 8080:80 >/dev/null 2>&1 & pf_pids+=($!)
  sleep 5
  result=$("$py" tests/kind/kfp_run.py http://localhost:8080 "$out/pipeline.yaml" "$timeout" "${params[@]}") || {
    echo "$result"; k get pods -n kubeflow; echo "run did not succeed" >&2; exit 1; }
  echo "$result"
  run_id=$(echo "$result" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
else
  # The v1 YAML names its parameters in spec.arguments; override them in a copy.
  "$(scripts/venv.sh kfp)" - "$out/pipeline.yaml" "${params[@]}" <<'EOF'
import sys, yaml
path, sets = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
wf = yaml.safe_load(open(path))
for p in wf["spec"]["arguments"]["parameters"]:
    if p["name"] in sets:
        v = sets[p["name"]]
        p["value"] = {"true": "True", "false": "False"}.get(v, v)
yaml.safe_dump(wf, open(path, "w"), sort_keys=False)
EOF
  wf=$(k create -n argo -f "$out/pipeline.yaml" -o jsonpath='{.metadata.name}')
  echo "workflow $wf"
  deadline=$((SECONDS + timeout))
  while :; do
    phase=$(k get wf -n argo "$wf" -o jsonpath='{.status.phase}')
    case "$phase" in Succeeded) break;; Failed|Error) k get wf -n argo "$wf" -o yaml | tail -40; echo "workflow $phase" >&2; exit 1;; esac
    [ $SECONDS -lt $deadline ] || { echo "workflow still $phase after ${timeout}s" >&2; exit 1; }
    sleep 10
  done
  run_id=$(k get wf -n argo "$wf" -o jsonpath='{.metadata.uid}')
fi

say "outputs on the volume (run $run_id)"
train_dir="$data/runs/detect/$run_id"
for f in weights/best.safetensors weights/last.safetensors results.csv args.yaml; do
  [ -s "$train_dir/$f" ] || { echo "missing $train_dir/$f" >&2; ls -laR "$data/runs" >&2 || true; exit 1; }
done
echo "ok: $train_dir has weights/best.safetensors, weights/last.safetensors, results.csv"
[ "$(docker exec "$node" stat -c %u "$node_data/runs/detect/$run_id/weights/best.safetensors")" = 65532 ] \
  || { echo "weights not written by uid 65532" >&2; exit 1; }
echo "ok: written by uid 65532 (the images' non-root user)"

if [ "${MLFLOW:-1}" = 1 ]; then
  k port-forward -n mlflow-system svc/mlflow-server-service 5000:5000 >/dev/null 2>&1 & pf_pids+=($!)
  sleep 3
  exp=$(curl -sf "http://localhost:5000/api/2.0/mlflow/experiments/get-by-name?experiment_name=kubeyolo-kind")
  exp_id=$(echo "$exp" | sed -E 's/.*"experiment_id": *"([^"]+)".*/\1/')
  runs=$(curl -sf -X POST -H 'Content-Type: application/json' -d "{\"experiment_ids\": [\"$exp_id\"]}" \
      http://localhost:5000/api/2.0/mlflow/runs/search)
  echo "$runs" | grep -q 'mAP50-95' || { echo "no MLflow run with mAP50-95 in kubeyolo-kind: $runs" >&2; exit 1; }
  echo "ok: MLflow experiment kubeyolo-kind has the run's metrics"
fi
say "kind $format: passed"
