//! `s3://bucket/prefix` artifact locations (AWS S3, or MinIO/other S3-compatible stores through
//! `MLFLOW_S3_ENDPOINT_URL`, as Kubeflow deployments use).
//!
//! Requests are signed with `rusty-s3` (a small, sans-IO SigV4 signer: presigned URLs) and sent
//! with the same `reqwest` client as the MLflow calls. The AWS SDK would add hundreds of crates to
//! every step's build for two operations (PUT and GET of one object), so it is not used.
//! Custom endpoints use path-style URLs (`http://minio:9000/bucket/key`), which every
//! S3-compatible server understands; AWS itself gets virtual-host style.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::client::ApiError;
use super::config::S3Config;

/// How long a presigned URL stays valid: one request, sent right away.
const SIGN_FOR: Duration = Duration::from_secs(3600);

/// `s3://bucket/some/prefix` → (`bucket`, `some/prefix`).
pub fn parse_s3_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("s3://").or_else(|| uri.strip_prefix("s3a://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

fn bucket(cfg: &S3Config, name: &str) -> Result<Bucket, ApiError> {
    let (endpoint, style) = match &cfg.endpoint {
        Some(e) => (e.clone(), UrlStyle::Path),
        None => (format!("https://s3.{}.amazonaws.com", cfg.region), UrlStyle::VirtualHost),
    };
    let url = endpoint
        .parse()
        .map_err(|e| ApiError::Local(format!("MLFLOW_S3_ENDPOINT_URL '{endpoint}' is not a URL: {e}")))?;
    Bucket::new(url, style, name.to_string(), cfg.region.clone())
        .map_err(|e| ApiError::Local(format!("S3 bucket '{name}' at '{endpoint}': {e}")))
}

fn credentials(cfg: &S3Config) -> Option<Credentials> {
    match (&cfg.access_key, &cfg.secret_key) {
        (Some(k), Some(s)) => Some(match &cfg.session_token {
            Some(t) => Credentials::new_with_token(k, s, t),
            None => Credentials::new(k, s),
        }),
        _ => None,
    }
}

/// Turn an S3 HTTP answer into success or the right kind of error.
async fn check(what: &str, resp: Result<reqwest::Response, reqwest::Error>) -> Result<reqwest::Response, ApiError> {
    let resp = resp.map_err(|e| ApiError::Transient(format!("S3 {what}: {e}")))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let code = between(&body, "<Code>", "</Code>").unwrap_or("").to_string();
    let message =
        between(&body, "<Message>", "</Message>").unwrap_or(body.trim()).chars().take(300).collect::<String>();
    if status.is_server_error() || status.as_u16() == 429 {
        Err(ApiError::Transient(format!("S3 {what}: HTTP {status} {code} {message}")))
    } else {
        let hint = if status.as_u16() == 403 {
            " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and MLFLOW_S3_ENDPOINT_URL)"
        } else {
            ""
        };
        Err(ApiError::Rejected { status: status.as_u16(), code, message: format!("S3 {what}: {message}{hint}") })
    }
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let start = s.find(a)? + a.len();
    let end = s[start..].find(b)? + start;
    Some(&s[start..end])
}

/// Upload `body` as `key` in `bucket`.
pub async fn put(
    http: &reqwest::Client,
    cfg: &S3Config,
    bucket_name: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), ApiError> {
    let b = bucket(cfg, bucket_name)?;
    let creds = credentials(cfg);
    let url = b.put_object(creds.as_ref(), key).sign(SIGN_FOR);
    let resp = http.put(url.as_str()).timeout(Duration::from_secs(600)).body(body).send().await;
    check(&format!("PUT s3://{bucket_name}/{key}"), resp).await.map(|_| ())
}

/// Download `key` from `bucket`.
pub async fn get(http: &reqwest::Client, cfg: &S3Config, bucket_name: &str, key: &str) -> Result<Vec<u8>, ApiError> {
    let b = bucket(cfg, bucket_name)?;
    let creds = credentials(cfg);
    let url = b.get_object(creds.as_ref(), key).sign(SIGN_FOR);
    let resp = http.get(url.as_str()).timeout(Duration::from_secs(600)).send().await;
    let resp = check(&format!("GET s3://{bucket_name}/{key}"), resp).await?;
    resp.bytes().await.map(|b| b.to_vec()).map_err(|e| ApiError::Transient(format!("S3 GET: {e}")))
}

/// Create `bucket` (used by tests and `scripts/services.sh` users; an existing bucket is fine).
pub async fn create_bucket(http: &reqwest::Client, cfg: &S3Config, bucket_name: &str) -> Result<(), ApiError> {
    let b = bucket(cfg, bucket_name)?;
    let creds = credentials(cfg)
        .ok_or_else(|| ApiError::Local("creating a bucket needs AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into()))?;
    let url = b.create_bucket(&creds).sign(SIGN_FOR);
    match check(&format!("create bucket {bucket_name}"), http.put(url.as_str()).send().await).await {
        Ok(_) => Ok(()),
        Err(ApiError::Rejected { code, .. }) if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris_split_into_bucket_and_prefix() {
        assert_eq!(parse_s3_uri("s3://mlflow/1/abc/artifacts"), Some(("mlflow".into(), "1/abc/artifacts".into())));
        assert_eq!(parse_s3_uri("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(parse_s3_uri("s3:///x"), None);
        assert_eq!(parse_s3_uri("mlflow-artifacts:/1"), None);
    }
}
