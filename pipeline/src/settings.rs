//! Compile settings: everything about *where* the pipeline runs that is not part of the graph
//! (images, the volume, shared memory, GPUs, resource requests, MLflow wiring).
//!
//! Both emitters read the same [`CompileSettings`], so `--format v1` and `--format v2` of one
//! command line describe the same deployment. Values are validated here with the rules the KFP
//! SDK applies (`set_cpu_request`, `set_memory_request`), so a bad `--train-memory 8GB` fails at
//! compile time with a hint instead of at pod creation.

use kubeyolo::{Error, Result};

use crate::graph::{Step, Weight};

/// The volume every step mounts at `/data`.
#[derive(Debug, Clone, PartialEq)]
pub struct PvcSettings {
    /// Claim name (existing claim, or the name to create).
    pub name: String,
    /// `Some`: create (v2 `CreatePVC`) / apply (v1 `VolumeOp`) the claim first.
    pub create: Option<CreatePvc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreatePvc {
    /// Storage class; empty = the cluster default.
    pub storage_class: String,
    pub size: String,
    pub access_mode: String,
}

/// CPU / memory requests (Kubernetes quantity strings).
#[derive(Debug, Clone, PartialEq)]
pub struct Requests {
    pub cpu: String,
    pub memory: String,
}

/// Where MLflow settings come from. Never literal credentials: only names of Kubernetes objects,
/// plus the (non-secret) tracking URI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlflowSettings {
    /// Secret whose keys `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` become env vars (the
    /// artifact store, e.g. MinIO).
    pub secret: Option<String>,
    /// Secret whose keys `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` become env vars
    /// (a tracking server behind basic auth).
    pub auth_secret: Option<String>,
    /// ConfigMap whose keys `MLFLOW_TRACKING_URI` / `MLFLOW_S3_ENDPOINT_URL` become env vars.
    pub configmap: Option<String>,
    /// Plain `MLFLOW_TRACKING_URI` env var (an URL, not a credential).
    pub tracking_uri: Option<String>,
    /// Plain `MLFLOW_EXPERIMENT_NAME` env var.
    pub experiment: Option<String>,
}

/// Keys read from the MLflow Secret (same name for the env var).
pub const MLFLOW_SECRET_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
/// Keys read from the MLflow auth Secret (same name for the env var).
pub const MLFLOW_AUTH_KEYS: [&str; 2] = ["MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"];
/// Keys read from the MLflow ConfigMap (same name for the env var).
pub const MLFLOW_CONFIGMAP_KEYS: [&str; 2] = ["MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL"];

#[derive(Debug, Clone, PartialEq)]
pub struct CompileSettings {
    /// Images are `<image_prefix>/yolo-<step>:<tag>`.
    pub image_prefix: String,
    pub tag: String,
    pub pvc: PvcSettings,
    /// Size of the memory-backed emptyDir at `/dev/shm`; `None` = no shm mount.
    pub shm_size: Option<String>,
    /// `nvidia.com/gpu` count for heavy steps (train, tune, test); 0 = none (CPU cluster).
    pub gpus: u32,
    /// Requests for verify/distribution/plot; `None` = no resources section.
    pub light: Option<Requests>,
    /// Requests for train/tune/test; `None` = no resources section.
    pub heavy: Option<Requests>,
    pub mlflow: MlflowSettings,
    /// Run every container as root (`securityContext.runAsUser: 0`) instead of the images'
    /// non-root user 65532, for volumes that only root may write (a hostPath PV not chowned).
    pub run_as_root: bool,
    /// Node labels the GPU steps require (`nodeSelector`), e.g. `nvidia.com/gpu.present=true`.
    pub gpu_node_selector: Vec<(String, String)>,
    /// Taints of GPU nodes the GPU steps tolerate.
    pub gpu_tolerations: Vec<Toleration>,
}

/// A pod toleration: `key` (operator Exists) or `key=value` (operator Equal), optional effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Toleration {
    pub key: String,
    pub value: Option<String>,
    pub effect: Option<String>,
}

impl Toleration {
    /// `KEY[=VALUE][:EFFECT]`, e.g. `nvidia.com/gpu:NoSchedule`, `dedicated=gpu:NoExecute`.
    pub fn parse(text: &str) -> Result<Toleration> {
        let (kv, effect) = match text.rsplit_once(':') {
            Some((kv, e)) => (kv, Some(e.to_string())),
            None => (text, None),
        };
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        let t = Toleration { key, value, effect };
        let effect_ok =
            t.effect.as_deref().map_or(true, |e| ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e));
        if t.key.is_empty() || t.key.contains(char::is_whitespace) || !effect_ok {
            return Err(Error::usage(format!("--gpu-toleration '{text}' is not KEY[=VALUE][:EFFECT]"))
                .with_hint("e.g. nvidia.com/gpu:NoSchedule; EFFECT is NoSchedule, PreferNoSchedule or NoExecute"));
        }
        Ok(t)
    }

    /// `Equal` with a value, `Exists` without (Kubernetes' operators).
    pub fn operator(&self) -> &'static str {
        if self.value.is_some() {
            "Equal"
        } else {
            "Exists"
        }
    }
}

/// The tag suffix of the CUDA image flavour (`docker/build.sh --cuda`), used by steps with GPUs.
pub const CUDA_TAG_SUFFIX: &str = "-cuda";

impl Default for CompileSettings {
    fn default() -> Self {
        CompileSettings {
            image_prefix: "kubeyolo".into(),
            tag: "latest".into(),
            pvc: PvcSettings { name: "pvc-local-cocodata".into(), create: None },
            shm_size: Some("1Gi".into()),
            gpus: 1,
            light: Some(Requests { cpu: "500m".into(), memory: "1Gi".into() }),
            heavy: Some(Requests { cpu: "2".into(), memory: "8Gi".into() }),
            mlflow: MlflowSettings::default(),
            run_as_root: false,
            gpu_node_selector: Vec::new(),
            gpu_tolerations: Vec::new(),
        }
    }
}

impl MlflowSettings {
    /// (Secret name, keys) pairs to set as env vars, in emission order.
    pub fn secrets(&self) -> Vec<(&str, &'static [&'static str])> {
        let mut v: Vec<(&str, &'static [&'static str])> = Vec::new();
        if let Some(s) = &self.secret {
            v.push((s, &MLFLOW_SECRET_KEYS));
        }
        if let Some(s) = &self.auth_secret {
            v.push((s, &MLFLOW_AUTH_KEYS));
        }
        v
    }
}

impl CompileSettings {
    /// The settings of the reference compilation (`reference_v2.py`): no resources, no GPU,
    /// no MLflow, image `REGISTRY/yolo-<step>:TAG`, claim `pvc-local-cocodata`.
    pub fn reference() -> Self {
        CompileSettings {
            image_prefix: "REGISTRY".into(),
            tag: "TAG".into(),
            gpus: 0,
            light: None,
            heavy: None,
            ..CompileSettings::default()
        }
    }

    /// `<prefix>/yolo-<step>:<tag>`; a step that gets GPUs runs the CUDA flavour, `<tag>-cuda`.
    pub fn image(&self, step: &Step) -> String {
        let suffix = if self.gpus_for(step) > 0 { CUDA_TAG_SUFFIX } else { "" };
        format!("{}/{}:{}{suffix}", self.image_prefix.trim_end_matches('/'), step.binary(), self.tag)
    }

    /// Node selector and tolerations of `step`: the GPU ones for a step that gets GPUs.
    pub fn scheduling(&self, step: &Step) -> (&[(String, String)], &[Toleration]) {
        if self.gpus_for(step) > 0 {
            (&self.gpu_node_selector, &self.gpu_tolerations)
        } else {
            (&[], &[])
        }
    }

    pub fn requests(&self, step: &Step) -> Option<&Requests> {
        match step.weight {
            Weight::Light => self.light.as_ref(),
            Weight::Heavy => self.heavy.as_ref(),
        }
    }

    pub fn gpus_for(&self, step: &Step) -> u32 {
        match step.weight {
            Weight::Light => 0,
            Weight::Heavy => self.gpus,
        }
    }

    /// Plain (non-secret) env vars for a step, sorted by name.
    pub fn plain_env(&self, step: &Step) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if step.tracks {
            if let Some(uri) = &self.mlflow.tracking_uri {
                env.push(("MLFLOW_TRACKING_URI".to_string(), uri.clone()));
            }
            if let Some(exp) = &self.mlflow.experiment {
                env.push(("MLFLOW_EXPERIMENT_NAME".to_string(), exp.clone()));
            }
        }
        env.sort();
        env
    }

    /// Check every value against the rules Kubernetes / the KFP SDK apply.
    pub fn validate(&self) -> Result<()> {
        if self.image_prefix.is_empty() || self.image_prefix.chars().any(char::is_whitespace) {
            return Err(Error::usage(format!("bad --image-prefix '{}'", self.image_prefix))
                .with_hint("e.g. --image-prefix registry.example.com/kubeyolo"));
        }
        if self.tag.is_empty() || !self.tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(
                Error::usage(format!("bad --tag '{}'", self.tag)).with_hint("letters, digits, '.', '_' and '-' only")
            );
        }
        check_dns1123("--pvc", &self.pvc.name)?;
        if let Some(c) = &self.pvc.create {
            check_memory("--pvc-size", &c.size)?;
            if !c.storage_class.is_empty() {
                check_dns1123("--storage-class", &c.storage_class)?;
            }
        }
        if let Some(s) = &self.shm_size {
            check_memory("--shm-size", s)?;
        }
        for (what, r) in [("light", &self.light), ("heavy", &self.heavy)] {
            if let Some(r) = r {
                check_cpu(&format!("{what} cpu request"), &r.cpu)?;
                check_memory(&format!("{what} memory request"), &r.memory)?;
            }
        }
        for (flag, name) in [
            ("--mlflow-secret", &self.mlflow.secret),
            ("--mlflow-auth-secret", &self.mlflow.auth_secret),
            ("--mlflow-configmap", &self.mlflow.configmap),
        ] {
            if let Some(n) = name {
                check_dns1123(flag, n)?;
            }
        }
        if self.gpus == 0 && (!self.gpu_node_selector.is_empty() || !self.gpu_tolerations.is_empty()) {
            return Err(Error::usage("--gpu-node-selector / --gpu-toleration apply to GPU steps, but --gpus is 0")
                .with_hint("give --gpus N, or drop the GPU scheduling options"));
        }
        for (k, v) in &self.gpu_node_selector {
            if k.is_empty() || k.contains(char::is_whitespace) || v.contains(char::is_whitespace) {
                return Err(Error::usage(format!("--gpu-node-selector '{k}={v}' is not a label KEY=VALUE"))
                    .with_hint("e.g. nvidia.com/gpu.present=true"));
            }
        }
        if let Some(uri) = &self.mlflow.tracking_uri {
            if uri.contains('@') {
                return Err(Error::usage("--mlflow-tracking-uri must not carry credentials (user:password@)")
                    .with_hint("put credentials in a Secret and pass --mlflow-secret NAME"));
            }
        }
        Ok(())
    }
}

/// Kubernetes object names (claims, secrets, storage classes): DNS-1123 subdomain.
pub fn check_dns1123(flag: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("{flag} '{name}' is not a valid Kubernetes name"))
            .with_hint("lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"))
    }
}

/// Same rule as the KFP SDK's `set_cpu_request`: a number, optionally with an `m` suffix.
pub fn check_cpu(what: &str, cpu: &str) -> Result<()> {
    let body = cpu.strip_suffix('m').unwrap_or(cpu);
    let ok = !body.is_empty()
        && body.split('.').count() <= 2
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !body.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("{what} '{cpu}' is not a CPU quantity")).with_hint("e.g. 2, 0.5 or 500m"))
    }
}

const MEMORY_SUFFIXES: [(&str, f64); 12] = [
    ("Ei", 1152921504606846976.0),
    ("Pi", 1125899906842624.0),
    ("Ti", 1099511627776.0),
    ("Gi", 1073741824.0),
    ("Mi", 1048576.0),
    ("Ki", 1024.0),
    ("E", 1e18),
    ("P", 1e15),
    ("T", 1e12),
    ("G", 1e9),
    ("M", 1e6),
    ("K", 1e3),
];

/// Same rule as the KFP SDK's `set_memory_request`: an integer with an optional unit suffix.
pub fn check_memory(what: &str, mem: &str) -> Result<()> {
    let digits = MEMORY_SUFFIXES.iter().find_map(|(s, _)| mem.strip_suffix(s)).unwrap_or(mem);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::usage(format!("{what} '{mem}' is not a memory quantity"))
            .with_hint("an integer with an optional unit: 512Mi, 8Gi, 8G"))
    }
}

/// Legacy float fields of the v2 IR: CPU cores (`500m` → 0.5).
pub fn cpu_to_float(cpu: &str) -> f64 {
    match cpu.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap_or(0.0) / 1000.0,
        None => cpu.parse().unwrap_or(0.0),
    }
}

/// Legacy float fields of the v2 IR: memory in GB (10^9 bytes), as the KFP SDK computes it.
pub fn memory_to_float(mem: &str) -> f64 {
    for (suffix, factor) in MEMORY_SUFFIXES {
        if let Some(n) = mem.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap_or(0.0) * factor / 1e9;
        }
    }
    mem.parse::<f64>().unwrap_or(0.0) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kfp_rules() {
        assert!(check_cpu("x", "500m").is_ok());
        assert!(check_cpu("x", "0.5").is_ok());
        assert!(check_cpu("x", "two").is_err());
        assert!(check_memory("x", "8Gi").is_ok());
        assert!(check_memory("x", "8GB").is_err());
        assert!(check_memory("x", "1.5Gi").is_err());
        assert_eq!(cpu_to_float("500m"), 0.5);
        assert_eq!(memory_to_float("8G"), 8.0);
        assert!((memory_to_float("1Gi") - 1.073741824).abs() < 1e-12);
    }

    #[test]
    fn credentials_in_uri_are_refused() {
        let mut s = CompileSettings::default();
        s.mlflow.tracking_uri = Some("http://user:pw@mlflow:5000".into());
        assert!(s.validate().is_err());
    }
}
