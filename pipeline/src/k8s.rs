//! Kubernetes pod-spec pieces that the Argo workflow ([`crate::v1`]) and the Katib trial Job
//! ([`crate::katib`]) write the same way: a step container's environment (plain values, MLflow
//! Secret/ConfigMap references), its resources (requests, GPU limit), the `/data` claim +
//! `/dev/shm` emptyDir volumes, and the pod's scheduling (GPU node selector, tolerations) and
//! the container's security context (`--run-as-root`).

use serde_json::{json, Map, Value};

use crate::graph::Step;
use crate::settings::{CompileSettings, MLFLOW_CONFIGMAP_KEYS};

/// `env` of a step container: plain variables, then the MLflow Secret and ConfigMap keys by
/// reference (never a credential as a literal).
pub fn env(s: &CompileSettings, step: &Step) -> Vec<Value> {
    let mut env: Vec<Value> = s.plain_env(step).into_iter().map(|(k, v)| json!({ "name": k, "value": v })).collect();
    if step.tracks {
        for (secret, keys) in s.mlflow.secrets() {
            for k in keys {
                env.push(json!({ "name": k, "valueFrom": { "secretKeyRef": { "key": k, "name": secret } } }));
            }
        }
        if let Some(cm) = &s.mlflow.configmap {
            for k in MLFLOW_CONFIGMAP_KEYS {
                env.push(json!({ "name": k, "valueFrom": { "configMapKeyRef": { "key": k, "name": cm } } }));
            }
        }
    }
    env
}

/// `resources` of a step container (`None`: nothing to set): the requests of its weight, the
/// `nvidia.com/gpu` limit of a heavy step.
pub fn resources(s: &CompileSettings, step: &Step) -> Option<Value> {
    let mut resources = Map::new();
    if let Some(r) = s.requests(step) {
        resources.insert("requests".into(), json!({ "cpu": r.cpu, "memory": r.memory }));
    }
    let gpus = s.gpus_for(step);
    if gpus > 0 {
        resources.insert("limits".into(), json!({ "nvidia.com/gpu": gpus.to_string() }));
    }
    (!resources.is_empty()).then_some(Value::Object(resources))
}

/// (volumeMounts, volumes): the claim `claim` as volume `name` at `/data`, and the memory
/// emptyDir `dshm` at `/dev/shm` when a shm size is set (listed first, as kfp 1.8 does).
pub fn data_volumes(s: &CompileSettings, name: &str, claim: &str) -> (Vec<Value>, Vec<Value>) {
    let mut mounts = vec![json!({ "mountPath": "/data", "name": name })];
    let mut volumes = vec![json!({ "name": name, "persistentVolumeClaim": { "claimName": claim } })];
    if let Some(size) = &s.shm_size {
        mounts.push(json!({ "mountPath": "/dev/shm", "name": "dshm" }));
        volumes.insert(0, json!({ "emptyDir": { "medium": "Memory", "sizeLimit": size }, "name": "dshm" }));
    }
    (mounts, volumes)
}

/// The container's `securityContext` (`None`: the image's user, 65532): root with `--run-as-root`.
pub fn security_context(s: &CompileSettings) -> Option<Value> {
    s.run_as_root.then(|| json!({ "runAsUser": 0 }))
}

/// (`nodeSelector`, `tolerations`) of the pod running `step`, `None` where empty.
pub fn scheduling(s: &CompileSettings, step: &Step) -> (Option<Value>, Option<Value>) {
    let (selector, tolerations) = s.scheduling(step);
    let selector =
        (!selector.is_empty()).then(|| Value::Object(selector.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
    let tolerations = (!tolerations.is_empty()).then(|| {
        Value::Array(
            tolerations
                .iter()
                .map(|t| {
                    let mut m = Map::new();
                    m.insert("key".into(), json!(t.key));
                    m.insert("operator".into(), json!(t.operator()));
                    if let Some(v) = &t.value {
                        m.insert("value".into(), json!(v));
                    }
                    if let Some(e) = &t.effect {
                        m.insert("effect".into(), json!(e));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    });
    (selector, tolerations)
}
