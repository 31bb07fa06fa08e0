//! Reading back what a step logged to the MLflow server that `scripts/services.sh` starts.
//!
//! The e2e crate has no HTTP client (and needs none for anything else), so this is a minimal
//! HTTP/1.1 over `TcpStream` for the server's plain-`http://` REST API: enough to find an
//! experiment's runs and their params, metrics, tags and artifacts.

use std::process::Command;

use serde_json::{json, Value};

/// The test server's URI (`KUBEYOLO_TEST_MLFLOW_URI`). Without it: `None` after printing
/// "skipped: <test>: ..." — or a panic when `KUBEYOLO_REQUIRE_SERVICES=1` (CI).
pub fn server(test: &str) -> Option<String> {
    match std::env::var("KUBEYOLO_TEST_MLFLOW_URI") {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ => {
            if std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: KUBEYOLO_TEST_MLFLOW_URI is not set but KUBEYOLO_REQUIRE_SERVICES=1");
            }
            println!("skipped: {test}: KUBEYOLO_TEST_MLFLOW_URI is not set (eval \"$(scripts/services.sh start)\")");
            None
        }
    }
}

/// Point a step at the test server and `experiment`, with the test S3 endpoint's credentials
/// when there is one (for experiments whose artifacts live in `s3://`).
pub fn track_into(cmd: &mut Command, uri: &str, experiment: &str) {
    cmd.env("MLFLOW_TRACKING_URI", uri).env("MLFLOW_EXPERIMENT_NAME", experiment);
    for (from, to) in [
        ("KUBEYOLO_TEST_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL"),
        ("KUBEYOLO_TEST_S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
        ("KUBEYOLO_TEST_S3_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    ] {
        if let Ok(v) = std::env::var(from) {
            cmd.env(to, v);
        }
    }
}

/// One request; returns the status line and the (de-chunked) body.
pub fn request(uri: &str, method: &str, path: &str, body: Option<&Value>) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let host = uri.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw.get(split + 4..).unwrap_or_default();
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return (head, rest.to_vec());
    }
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
        rest = rest.get(eol + 4 + n..).unwrap_or_default();
    }
    (head, out)
}

/// A REST call that must answer 200 with JSON.
pub fn http(uri: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (head, bytes) = request(uri, method, path, body);
    let text = String::from_utf8_lossy(&bytes);
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{method} {path}: {head}\n{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// Every run of the experiment called `experiment`.
pub fn runs(uri: &str, experiment: &str) -> Vec<Value> {
    let exp = http(uri, "GET", &format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}"), None);
    let id =
        exp["experiment"]["experiment_id"].as_str().unwrap_or_else(|| panic!("no experiment id in {exp}")).to_string();
    let found =
        http(uri, "POST", "/api/2.0/mlflow/runs/search", Some(&json!({"experiment_ids": [id], "max_results": 1000})));
    found["runs"].as_array().cloned().unwrap_or_default()
}

/// `data.<field>` (`params`, `metrics`, `tags`) of a run as key → value.
pub fn data(run: &Value, field: &str) -> std::collections::BTreeMap<String, Value> {
    let items = run["data"][field].as_array().cloned().unwrap_or_default();
    items.into_iter().filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"].clone()))).collect()
}

/// Artifact paths directly in folder `dir` of the run (`""` = the root).
pub fn artifacts(uri: &str, run: &Value, dir: &str) -> Vec<String> {
    let id = run["info"]["run_id"].as_str().unwrap_or_default();
    let listed = http(uri, "GET", &format!("/api/2.0/mlflow/artifacts/list?run_id={id}&path={dir}"), None);
    listed["files"].as_array().into_iter().flatten().filter_map(|f| f["path"].as_str().map(str::to_string)).collect()
}

/// Download an artifact through the server's proxy (runs whose `artifact_uri` is
/// `mlflow-artifacts:/…`); `None` for runs that store artifacts elsewhere (S3, a folder).
pub fn artifact_bytes(uri: &str, run: &Value, path: &str) -> Option<Vec<u8>> {
    let root =
        run["info"]["artifact_uri"].as_str()?.strip_prefix("mlflow-artifacts:")?.trim_start_matches('/').to_string();
    let (head, bytes) = request(uri, "GET", &format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"), None);
    assert!(head.starts_with("HTTP/1.1 200"), "artifact {path}: {head}");
    Some(bytes)
}
