//! Where and how to track: MLflow's own environment variables, plus flags every step shares.
//!
//! A step flattens [`TrackingArgs`] into its clap arguments; [`TrackingConfig::resolve`] turns them
//! (and the credential variables, which are never flags so they stay out of pod specs and `ps`)
//! into a [`TrackingConfig`]. No tracking URI means tracking is off: nothing is sent and nothing
//! breaks. The variables are the ones the MLflow Python client reads, so a Kubernetes Secret made
//! for an ultralytics pod works unchanged:
//!
//! | variable | meaning |
//! |---|---|
//! | `MLFLOW_TRACKING_URI` | `http(s)://host:port` of the tracking server (no value: tracking off) |
//! | `MLFLOW_EXPERIMENT_NAME` / `MLFLOW_EXPERIMENT_ID` | experiment to log into (created if missing) |
//! | `MLFLOW_RUN_ID` | attach to this existing run instead of creating one |
//! | `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD` | HTTP basic auth |
//! | `MLFLOW_TRACKING_TOKEN` | bearer token |
//! | `MLFLOW_TRACKING_INSECURE_TLS` | `true`: accept any TLS certificate |
//! | `MLFLOW_S3_ENDPOINT_URL` | S3-compatible endpoint (MinIO) for `s3://` artifact roots |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION` | S3 credentials |

use std::path::PathBuf;
use std::time::Duration;

/// Tracking flags shared by every step (`#[command(flatten)] tracking: TrackingArgs`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrackingArgs {
    /// MLflow tracking server, e.g. `http://mlflow.mlflow-system.svc:5000`. Without it nothing is
    /// logged. Credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN.
    #[arg(long = "mlflow-uri", env = "MLFLOW_TRACKING_URI", value_name = "URL")]
    pub tracking_uri: Option<String>,

    /// Experiment to log into; created when missing. Default: `kubeyolo`.
    #[arg(long = "mlflow-experiment", env = "MLFLOW_EXPERIMENT_NAME", value_name = "NAME")]
    pub experiment_name: Option<String>,

    /// Experiment id to log into (instead of a name), e.g. `3`.
    #[arg(long = "mlflow-experiment-id", env = "MLFLOW_EXPERIMENT_ID", value_name = "ID")]
    pub experiment_id: Option<String>,

    /// Attach to this existing run instead of creating a new one (32 hex characters).
    #[arg(long = "mlflow-run-id", env = "MLFLOW_RUN_ID", value_name = "RUN_ID")]
    pub run_id: Option<String>,

    /// Name of the run this step creates. Default: the step name, e.g. `train`.
    #[arg(long = "mlflow-run-name", value_name = "NAME")]
    pub run_name: Option<String>,

    /// Create this step's run as a child of that run (sets the `mlflow.parentRunId` tag).
    #[arg(long = "mlflow-parent-run-id", env = "KUBEYOLO_MLFLOW_PARENT_RUN_ID", value_name = "RUN_ID")]
    pub parent_run_id: Option<String>,

    /// Extra run tag, repeatable: `--mlflow-tag team=vision --mlflow-tag dataset=coco8`.
    #[arg(long = "mlflow-tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,

    /// Folder for records that could not be sent (replayed by the next step or `yolo-track replay`).
    /// Default: `<data root>/.kubeyolo/mlflow-spool`.
    #[arg(long = "mlflow-spool-dir", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Seconds to keep retrying an unreachable server before records go to the spool file.
    #[arg(long = "mlflow-retry-secs", value_name = "SECS", default_value_t = 30.0)]
    pub retry_secs: f64,

    /// Seconds the end of a step may wait for pending records to reach the server; whatever is
    /// still pending then is spooled.
    #[arg(long = "mlflow-flush-secs", value_name = "SECS", default_value_t = 60.0)]
    pub flush_secs: f64,

    /// Turn tracking off even when MLFLOW_TRACKING_URI is set.
    #[arg(long = "no-mlflow")]
    pub disabled: bool,
}

/// `KEY=VALUE` → pair (for `--mlflow-tag`).
fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

/// S3 settings for `s3://` artifact locations (MLflow's and AWS's variables).
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// `MLFLOW_S3_ENDPOINT_URL`; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub session_token: Option<String>,
    pub region: String,
}

impl S3Config {
    /// Read the standard variables.
    pub fn from_env() -> S3Config {
        S3Config {
            endpoint: env("MLFLOW_S3_ENDPOINT_URL"),
            access_key: env("AWS_ACCESS_KEY_ID"),
            secret_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            region: env("AWS_DEFAULT_REGION").or_else(|| env("AWS_REGION")).unwrap_or_else(|| "us-east-1".into()),
        }
    }
}

/// Everything the background logger needs; tests build it directly.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// Base URL without a trailing slash.
    pub tracking_uri: String,
    pub experiment_name: String,
    pub experiment_id: Option<String>,
    pub run_id: Option<String>,
    pub run_name: Option<String>,
    pub parent_run_id: Option<String>,
    pub tags: Vec<(String, String)>,
    pub auth: Auth,
    pub insecure_tls: bool,
    pub s3: S3Config,
    /// Spool folder; `None` → `<data root>/.kubeyolo/mlflow-spool`.
    pub spool_dir: Option<PathBuf>,
    pub retry_budget: Duration,
    pub flush_timeout: Duration,
    /// Replay spool files left by earlier steps when starting (on by default).
    pub replay_on_start: bool,
    /// Install the SIGTERM/SIGINT handler that marks runs KILLED (on by default).
    pub handle_signals: bool,
}

/// Default experiment when none is named.
pub const DEFAULT_EXPERIMENT: &str = "kubeyolo";

impl TrackingConfig {
    /// A config for `uri` with every other setting at its default (used by tests and tools).
    pub fn new(uri: &str) -> TrackingConfig {
        TrackingConfig {
            tracking_uri: uri.trim_end_matches('/').to_string(),
            experiment_name: DEFAULT_EXPERIMENT.to_string(),
            experiment_id: None,
            run_id: None,
            run_name: None,
            parent_run_id: None,
            tags: Vec::new(),
            auth: Auth::None,
            insecure_tls: false,
            s3: S3Config::default(),
            spool_dir: None,
            retry_budget: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(60),
            replay_on_start: true,
            handle_signals: true,
        }
    }

    /// Flags + environment → config. `Ok(None)`: tracking is off. `Err(text)`: the configuration
    /// is unusable (reported once by the caller, tracking then stays off).
    pub fn resolve(args: &TrackingArgs) -> Result<Option<TrackingConfig>, String> {
        let uri = match nonempty(&args.tracking_uri) {
            Some(u) if !args.disabled => u,
            _ => return Ok(None),
        };
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(format!(
                "tracking URI '{uri}' is not supported: kubeyolo talks to an MLflow tracking server over \
                 http(s)://host:port (file stores, databricks and database URIs are not supported)"
            ));
        }
        let mut cfg = TrackingConfig::new(&uri);
        if let Some(name) = nonempty(&args.experiment_name) {
            cfg.experiment_name = name;
        }
        cfg.experiment_id = nonempty(&args.experiment_id);
        cfg.run_id = nonempty(&args.run_id);
        cfg.run_name = nonempty(&args.run_name);
        cfg.parent_run_id = nonempty(&args.parent_run_id);
        cfg.tags = args.tags.clone();
        cfg.spool_dir = args.spool_dir.clone();
        cfg.retry_budget = secs(args.retry_secs, 30.0);
        cfg.flush_timeout = secs(args.flush_secs, 60.0);
        cfg.auth =
            match (env("MLFLOW_TRACKING_USERNAME"), env("MLFLOW_TRACKING_PASSWORD"), env("MLFLOW_TRACKING_TOKEN")) {
                (Some(username), password, _) => Auth::Basic { username, password: password.unwrap_or_default() },
                (None, _, Some(token)) => Auth::Bearer(token),
                _ => Auth::None,
            };
        cfg.insecure_tls = env("MLFLOW_TRACKING_INSECURE_TLS")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        cfg.s3 = S3Config::from_env();
        Ok(Some(cfg))
    }
}

fn secs(v: f64, default: f64) -> Duration {
    Duration::from_secs_f64(if v.is_finite() && v >= 0.0 { v } else { default })
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// A non-empty environment variable.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_uri_means_off_and_bad_scheme_is_reported() {
        assert!(TrackingConfig::resolve(&TrackingArgs::default()).unwrap().is_none());
        let args = TrackingArgs { tracking_uri: Some("  ".into()), ..Default::default() };
        assert!(TrackingConfig::resolve(&args).unwrap().is_none());
        let args = TrackingArgs { tracking_uri: Some("http://h:5000/".into()), disabled: true, ..Default::default() };
        assert!(TrackingConfig::resolve(&args).unwrap().is_none());
        let args = TrackingArgs { tracking_uri: Some("file:///tmp/mlruns".into()), ..Default::default() };
        assert!(TrackingConfig::resolve(&args).is_err());
        let args = TrackingArgs { tracking_uri: Some("http://h:5000/".into()), ..Default::default() };
        let cfg = TrackingConfig::resolve(&args).unwrap().unwrap();
        assert_eq!(cfg.tracking_uri, "http://h:5000");
        assert_eq!(cfg.experiment_name, DEFAULT_EXPERIMENT);
    }

    #[test]
    fn tags_parse() {
        assert_eq!(parse_tag("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_tag("=x").is_err());
        assert!(parse_tag("novalue").is_err());
    }
}
