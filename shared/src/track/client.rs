//! The MLflow REST API 2.0 over `reqwest` (async), as a real 3.x server answers it
//! (see `/work/shared/reference/mlflow/NOTES.md` for the measured behaviour).
//!
//! Every call returns either the parsed JSON or an [`ApiError`] that says whether retrying can
//! help: connection errors, timeouts, HTTP 5xx and 429 are [`ApiError::Transient`] (the logger
//! retries them with backoff and spools when they persist); any other 4xx is
//! [`ApiError::Rejected`] with the server's `error_code` (retrying would give the same answer).
//! Artifacts go where the run's `artifact_uri` points: the server's artifact proxy for
//! `mlflow-artifacts:` URIs, S3 for `s3://`, or a plain copy for `file://` (shared volume).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::config::{Auth, S3Config, TrackingConfig};
use super::records::{KeyValue, Metric, Status};
use super::s3;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// Worth retrying: the server is unreachable, timed out, overloaded (5xx, 429).
    Transient(String),
    /// The server refused the request; the same request would be refused again.
    Rejected { status: u16, code: String, message: String },
    /// Nothing was sent: a local problem (unreadable file, unsupported artifact location).
    Local(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transient(m) => write!(f, "{m}"),
            ApiError::Rejected { status, code, message } if code.is_empty() => write!(f, "HTTP {status}: {message}"),
            ApiError::Rejected { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
            ApiError::Local(m) => write!(f, "{m}"),
        }
    }
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient(_))
    }
}

/// What kubeyolo needs to know about a server run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
    pub status: String,
}

/// A connection to one tracking server (cheap to clone: the HTTP pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    auth: Auth,
    s3: S3Config,
}

/// Timeout of one API call (artifact uploads get longer, see `upload_artifact`).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(600);

impl Client {
    pub fn new(cfg: &TrackingConfig) -> Result<Client, String> {
        let base: reqwest::Url =
            cfg.tracking_uri.parse().map_err(|e| format!("tracking URI '{}' is not a URL: {e}", cfg.tracking_uri))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .danger_accept_invalid_certs(cfg.insecure_tls)
            .user_agent(format!("kubeyolo/{}", crate::VERSION))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client { http, base, auth: cfg.auth.clone(), s3: cfg.s3.clone() })
    }

    /// The server this client talks to.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The HTTP client (shared with S3 requests).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn s3_config(&self) -> &S3Config {
        &self.s3
    }

    /// `base` + path segments (each percent-encoded).
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty();
            for s in segments {
                for part in s.split('/').filter(|x| !x.is_empty()) {
                    p.push(part);
                }
            }
        }
        url
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => rb,
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }

    /// Send, classify the answer, parse JSON (an empty body is `{}`).
    async fn send(&self, what: &str, rb: reqwest::RequestBuilder) -> Result<Json, ApiError> {
        let resp =
            self.authed(rb).send().await.map_err(|e| {
                ApiError::Transient(format!("{what}: cannot reach {}: {}", self.base(), error_chain(&e)))
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| ApiError::Transient(format!("{what}: reading the answer failed: {}", error_chain(&e))))?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(json!({}));
            }
            return serde_json::from_str(&text).map_err(|e| ApiError::Rejected {
                status: status.as_u16(),
                code: String::new(),
                message: format!("{what}: answer is not JSON ({e})"),
            });
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(ApiError::Transient(format!("{what}: HTTP {status}: {}", short(&text))));
        }
        let parsed: Option<Json> = serde_json::from_str(&text).ok();
        let code = parsed.as_ref().and_then(|j| j["error_code"].as_str()).unwrap_or("").to_string();
        let mut message =
            parsed.as_ref().and_then(|j| j["message"].as_str().map(str::to_string)).unwrap_or_else(|| short(&text));
        if text.contains("Invalid Host header") {
            message.push_str(
                " (the server's host check refused this URL's host name: start mlflow server with \
                 --allowed-hosts listing it, or use an IP address)",
            );
        } else if status.as_u16() == 401 || status.as_u16() == 403 {
            message.push_str(" (check MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)");
        }
        Err(ApiError::Rejected { status: status.as_u16(), code, message: format!("{what}: {message}") })
    }

    /// GET an API path with query parameters.
    pub async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Json, ApiError> {
        let rb = self.http.get(self.url(&[path])).query(query).timeout(CALL_TIMEOUT);
        self.send(path, rb).await
    }

    /// POST a JSON body to an API path.
    pub async fn post_json(&self, path: &str, body: &Json) -> Result<Json, ApiError> {
        let rb = self.http.post(self.url(&[path])).json(body).timeout(CALL_TIMEOUT);
        self.send(path, rb).await
    }

    /// `GET /health`: is anything answering? (Exempt from the host check, so also call an API.)
    pub async fn health(&self) -> Result<(), ApiError> {
        let rb = self.http.get(self.url(&["health"])).timeout(Duration::from_secs(5));
        let resp = rb
            .send()
            .await
            .map_err(|e| ApiError::Transient(format!("cannot reach {}: {}", self.base(), error_chain(&e))))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ApiError::Transient(format!("{}/health answered HTTP {}", self.base(), resp.status())))
        }
    }

    /// Experiment id by name, creating the experiment when missing (a concurrent creator is fine).
    pub async fn experiment_id(&self, name: &str) -> Result<String, ApiError> {
        for _ in 0..2 {
            match self.get_json("api/2.0/mlflow/experiments/get-by-name", &[("experiment_name", name)]).await {
                Ok(j) => {
                    if let Some(id) = j["experiment"]["experiment_id"].as_str() {
                        if j["experiment"]["lifecycle_stage"].as_str() == Some("deleted") {
                            return Err(ApiError::Rejected {
                                status: 400,
                                code: "INVALID_STATE".into(),
                                message: format!("experiment '{name}' is deleted: restore it or choose another name"),
                            });
                        }
                        return Ok(id.to_string());
                    }
                }
                Err(ApiError::Rejected { code, .. }) if code == "RESOURCE_DOES_NOT_EXIST" => {}
                Err(e) => return Err(e),
            }
            match self.post_json("api/2.0/mlflow/experiments/create", &json!({ "name": name })).await {
                Ok(j) => {
                    if let Some(id) = j["experiment_id"].as_str() {
                        return Ok(id.to_string());
                    }
                }
                Err(ApiError::Rejected { code, .. }) if code == "RESOURCE_ALREADY_EXISTS" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Rejected {
            status: 0,
            code: String::new(),
            message: format!("cannot find or create experiment '{name}'"),
        })
    }

    /// `runs/create`.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        start_time: i64,
        tags: &[KeyValue],
    ) -> Result<RunInfo, ApiError> {
        let mut body = json!({ "experiment_id": experiment_id, "start_time": start_time, "tags": tags });
        if let Some(n) = run_name {
            body["run_name"] = json!(n);
        }
        let j = self.post_json("api/2.0/mlflow/runs/create", &body).await?;
        run_info(&j["run"]["info"]).ok_or_else(|| bad_answer("runs/create"))
    }

    /// `runs/get` → run info.
    pub async fn get_run(&self, run_id: &str) -> Result<RunInfo, ApiError> {
        let j = self.get_json("api/2.0/mlflow/runs/get", &[("run_id", run_id)]).await?;
        run_info(&j["run"]["info"]).ok_or_else(|| bad_answer("runs/get"))
    }

    /// `runs/update`: status, and the end time for terminal states.
    pub async fn update_run(&self, run_id: &str, status: Status, end_time: Option<i64>) -> Result<(), ApiError> {
        let mut body = json!({ "run_id": run_id, "status": status.as_str() });
        if let Some(t) = end_time {
            body["end_time"] = json!(t);
        }
        self.post_json("api/2.0/mlflow/runs/update", &body).await.map(|_| ())
    }

    /// `runs/log-batch` (the caller keeps within the server's limits).
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<(), ApiError> {
        let body = json!({ "run_id": run_id, "metrics": metrics, "params": params, "tags": tags });
        self.post_json("api/2.0/mlflow/runs/log-batch", &body).await.map(|_| ())
    }

    /// Upload a local file to `dest` (a path inside the run's artifacts) under `artifact_uri`.
    pub async fn upload_artifact(&self, artifact_uri: &str, file: &Path, dest: &str) -> Result<(), ApiError> {
        let body = tokio::fs::read(file)
            .await
            .map_err(|e| ApiError::Local(format!("cannot read artifact {}: {e}", file.display())))?;
        self.put_artifact_bytes(artifact_uri, dest, body).await
    }

    /// Store `body` at `dest` under `artifact_uri`.
    pub async fn put_artifact_bytes(&self, artifact_uri: &str, dest: &str, body: Vec<u8>) -> Result<(), ApiError> {
        match ArtifactTarget::parse(artifact_uri)? {
            ArtifactTarget::Proxy(root) => {
                let url = self.url(&["api/2.0/mlflow-artifacts/artifacts", &root, dest]);
                let rb = self
                    .http
                    .put(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(body)
                    .timeout(ARTIFACT_TIMEOUT);
                self.send("artifact upload", rb).await.map(|_| ())
            }
            ArtifactTarget::S3 { bucket, prefix } => {
                s3::put(&self.http, &self.s3, &bucket, &join_key(&prefix, dest), body).await
            }
            ArtifactTarget::Local(root) => {
                let path = root.join(dest);
                crate::files::write_atomic(&path, &body).map_err(|e| ApiError::Local(e.to_string()))
            }
        }
    }

    /// Download the artifact `dest` of a run whose artifacts live at `artifact_uri`.
    pub async fn download_artifact(&self, artifact_uri: &str, dest: &str) -> Result<Vec<u8>, ApiError> {
        match ArtifactTarget::parse(artifact_uri)? {
            ArtifactTarget::Proxy(root) => {
                let url = self.url(&["api/2.0/mlflow-artifacts/artifacts", &root, dest]);
                let resp = self
                    .authed(self.http.get(url).timeout(ARTIFACT_TIMEOUT))
                    .send()
                    .await
                    .map_err(|e| ApiError::Transient(format!("artifact download: {}", error_chain(&e))))?;
                let status = resp.status();
                let bytes = resp.bytes().await.map_err(|e| ApiError::Transient(format!("artifact download: {e}")))?;
                if status.is_success() {
                    Ok(bytes.to_vec())
                } else {
                    Err(ApiError::Rejected {
                        status: status.as_u16(),
                        code: String::new(),
                        message: short(&String::from_utf8_lossy(&bytes)),
                    })
                }
            }
            ArtifactTarget::S3 { bucket, prefix } => {
                s3::get(&self.http, &self.s3, &bucket, &join_key(&prefix, dest)).await
            }
            ArtifactTarget::Local(root) => std::fs::read(root.join(dest)).map_err(|e| ApiError::Local(e.to_string())),
        }
    }
}

/// Where a run's artifacts live.
enum ArtifactTarget {
    /// Path below the proxy's artifacts root (`1/<run>/artifacts`).
    Proxy(String),
    S3 {
        bucket: String,
        prefix: String,
    },
    Local(std::path::PathBuf),
}

impl ArtifactTarget {
    fn parse(uri: &str) -> Result<ArtifactTarget, ApiError> {
        if let Some(rest) = uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/1/x` or `mlflow-artifacts://host:port/1/x`: the path starts after the authority.
            let path = match rest.strip_prefix("//") {
                Some(after) => after.split_once('/').map(|(_, p)| p).unwrap_or(""),
                None => rest,
            };
            return Ok(ArtifactTarget::Proxy(path.trim_matches('/').to_string()));
        }
        if let Some((bucket, prefix)) = s3::parse_s3_uri(uri) {
            return Ok(ArtifactTarget::S3 { bucket, prefix });
        }
        if let Some(p) = uri.strip_prefix("file://") {
            return Ok(ArtifactTarget::Local(p.into()));
        }
        if uri.starts_with('/') {
            return Ok(ArtifactTarget::Local(uri.into()));
        }
        Err(ApiError::Local(format!(
            "artifact location '{uri}' is not supported (kubeyolo uploads to mlflow-artifacts:, s3:// and file:// locations)"
        )))
    }
}

fn join_key(prefix: &str, dest: &str) -> String {
    let dest = dest.trim_start_matches('/');
    if prefix.is_empty() {
        dest.to_string()
    } else {
        format!("{}/{dest}", prefix.trim_end_matches('/'))
    }
}

fn run_info(j: &Json) -> Option<RunInfo> {
    Some(RunInfo {
        run_id: j["run_id"].as_str().or_else(|| j["run_uuid"].as_str())?.to_string(),
        experiment_id: j["experiment_id"].as_str().unwrap_or("").to_string(),
        artifact_uri: j["artifact_uri"].as_str().unwrap_or("").to_string(),
        status: j["status"].as_str().unwrap_or("").to_string(),
    })
}

fn bad_answer(what: &str) -> ApiError {
    ApiError::Rejected {
        status: 200,
        code: String::new(),
        message: format!("{what}: unexpected answer from the server"),
    }
}

fn short(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        s.push('…');
    }
    s
}

/// `reqwest` errors hide the useful part ("connection refused") in their source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_route_to_the_right_store() {
        match ArtifactTarget::parse("mlflow-artifacts:/1/abc/artifacts").unwrap() {
            ArtifactTarget::Proxy(p) => assert_eq!(p, "1/abc/artifacts"),
            _ => panic!(),
        }
        match ArtifactTarget::parse("mlflow-artifacts://srv:5000/mlartifacts/1/abc/artifacts").unwrap() {
            ArtifactTarget::Proxy(p) => assert_eq!(p, "mlartifacts/1/abc/artifacts"),
            _ => panic!(),
        }
        assert!(matches!(ArtifactTarget::parse("s3://b/p").unwrap(), ArtifactTarget::S3 { .. }));
        assert!(matches!(ArtifactTarget::parse("file:///tmp/x").unwrap(), ArtifactTarget::Local(_)));
        assert!(ArtifactTarget::parse("gs://b/p").is_err());
        assert_eq!(join_key("", "a/b.txt"), "a/b.txt");
        assert_eq!(join_key("1/r/artifacts", "a.txt"), "1/r/artifacts/a.txt");
    }

    #[test]
    fn urls_encode_each_segment() {
        let c = Client::new(&TrackingConfig::new("http://127.0.0.1:5000/prefix/")).unwrap();
        let u = c.url(&["api/2.0/mlflow-artifacts/artifacts", "1/r/artifacts", "plots/results (1).png"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:5000/prefix/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/plots/results%20(1).png"
        );
    }
}
