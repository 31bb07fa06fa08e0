//! `kubeyolo compile --format v2` checked with the real kfp SDK (`scripts/check_kfp.py`).
//!
//! The kfp venv comes from `scripts/venv.sh kfp`; its python is `KUBEYOLO_KFP_PYTHON` or
//! `<repo>/.venvs/kfp/bin/python`. Without it these tests print "skipped: ..." — or fail when
//! `KUBEYOLO_REQUIRE_SERVICES=1` (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The kfp venv's python, or None (after printing why) when the test should be skipped.
fn kfp_python(test: &str) -> Option<PathBuf> {
    let py = std::env::var_os("KUBEYOLO_KFP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venvs/kfp/bin/python"));
    if py.exists() {
        return Some(py);
    }
    let msg = format!("{test}: no kfp python at {} (run scripts/venv.sh kfp or set KUBEYOLO_KFP_PYTHON)", py.display());
    if std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    println!("skipped: {msg}");
    None
}

fn compile(args: &[&str], out: &Path) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
        .arg("compile")
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    o
}

fn check(py: &Path, file: &Path, extra: &[&str]) -> Output {
    Command::new(py).arg(repo().join("scripts/check_kfp.py")).arg(file).args(extra).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const REFERENCE: &[&str] =
    &["--format", "v2", "--image-prefix", "REGISTRY", "--tag", "TAG", "--pvc", "pvc-local-cocodata", "--gpus", "0", "--no-requests"];

#[test]
fn v2_reference_settings_reproduce_the_sdk_compilation() {
    let Some(py) = kfp_python("v2_reference") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let o = compile(REFERENCE, &out);
    assert!(o.status.success(), "{}", text(&o));
    let expect = fixture("reference_v2.yaml");
    let c = check(&py, &out, &["--expect", expect.to_str().unwrap()]);
    assert!(c.status.success(), "check_kfp failed:\n{}", text(&c));

    // The CreatePVC variant.
    let mut args = REFERENCE.to_vec();
    args.extend(["--create-pvc", "--storage-class", "local-path", "--pvc-size", "10Gi"]);
    let o = compile(&args, &out);
    assert!(o.status.success(), "{}", text(&o));
    let expect = fixture("reference_v2_createpvc.yaml");
    let c = check(&py, &out, &["--expect", expect.to_str().unwrap()]);
    assert!(c.status.success(), "check_kfp failed (create-pvc):\n{}", text(&c));
}

#[test]
fn v2_full_settings_equal_the_sdk_build() {
    let Some(py) = kfp_python("v2_full") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let o = compile(
        &[
            "--image-prefix", "reg.example.com/kubeyolo", "--tag", "0.1.0", "--pvc", "yolo-data", "--create-pvc",
            "--pvc-size", "5Gi", "--shm-size", "2Gi", "--gpus", "2", "--heavy-cpu", "4", "--heavy-memory", "16G",
            "--mlflow-secret", "mlflow-s3", "--mlflow-auth-secret", "mlflow-auth", "--mlflow-configmap", "mlflow-settings",
            "--mlflow-tracking-uri", "http://mlflow-server-service.mlflow-system.svc:5000", "--mlflow-experiment", "yolo",
        ],
        &out,
    );
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    // Credentials only by reference: the Secret's name, never a value.
    assert!(yaml.contains("secretAsEnv") && yaml.contains("secretName: mlflow-s3"), "{yaml}");
    assert!(!yaml.contains("name: AWS_SECRET_ACCESS_KEY"), "secret key as a literal env var:\n{yaml}");
    let settings = r#"{"image_prefix":"reg.example.com/kubeyolo","tag":"0.1.0",
        "pvc":{"name":"yolo-data","create":{"storage_class":"","size":"5Gi","access_mode":"ReadWriteOnce"}},
        "shm_size":"2Gi","gpus":2,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"4","memory":"16G"},
        "mlflow":{"secret":"mlflow-s3","auth_secret":"mlflow-auth","configmap":"mlflow-settings",
                  "tracking_uri":"http://mlflow-server-service.mlflow-system.svc:5000","experiment":"yolo"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed:\n{}", text(&c));

    // Defaults (existing claim, 1 GPU, default requests, no MLflow).
    let o = compile(&[], &out);
    assert!(o.status.success(), "{}", text(&o));
    let settings = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"shm_size":"1Gi",
        "gpus":1,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"2","memory":"8Gi"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed (defaults):\n{}", text(&c));

    // Everything omittable omitted (CPU cluster, no shm mount, no requests), plain tracking URI.
    let o = compile(&["--gpus", "0", "--shm-size", "0", "--no-requests", "--mlflow-tracking-uri", "http://mlflow:5000"], &out);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(!yaml.contains("nvidia.com/gpu") && !yaml.contains("emptyDirMounts") && !yaml.contains("resources:"), "{yaml}");
    let settings = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"gpus":0,
        "mlflow":{"tracking_uri":"http://mlflow:5000"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed (minimal):\n{}", text(&c));
}

/// The checker must be able to fail: hand-broken variants of a good file are rejected.
#[test]
fn v2_checker_rejects_broken_variants() {
    let Some(py) = kfp_python("v2_broken") else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let o = compile(REFERENCE, &good);
    assert!(o.status.success(), "{}", text(&o));
    let src = std::fs::read_to_string(&good).unwrap();
    let breaks: &[(&str, &str, &str)] = &[
        ("misspelled field", "sizeLimit:", "sizeLimt:"),
        ("bad enum", "parameterType: BOOLEAN", "parameterType: BOOL"),
        ("dangling producer", "producerTask: distribution", "producerTask: distrib"),
        ("unknown output key", "outputParameterKey: result_json", "outputParameterKey: results"),
        ("dangling componentRef", "name: comp-plot\n", "name: comp-plott\n"),
        ("trigger on unknown input", "['pipelinechannel--bool_tune'] == true", "['pipelinechannel--tune'] == true"),
        ("unbound input", "componentInputParameter: cfg\n", "componentInputParameter: cfgg\n"),
    ];
    for (what, from, to) in breaks {
        assert!(src.contains(from), "{what}: pattern {from:?} not in the compiled file");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, src.replacen(from, to, 1)).unwrap();
        let c = check(&py, &bad, &[]);
        assert!(!c.status.success(), "{what}: check_kfp accepted a broken file");
        assert!(text(&c).contains("FAIL"), "{what}: {}", text(&c));
    }
}

#[test]
fn compile_rejects_bad_settings_with_usage_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    for args in [
        &["--pvc", "Bad_Name"][..],
        &["--shm-size", "1.5Gi"][..],
        &["--heavy-memory", "8GB"][..],
        &["--mlflow-tracking-uri", "http://user:pw@mlflow:5000"][..],
    ] {
        let o = compile(args, &out);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("error:"), "{args:?}: {}", text(&o));
        assert!(!out.exists(), "{args:?}: output written despite the error");
    }
}

#[test]
fn compile_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    for f in [&a, &b] {
        let o = compile(&["--mlflow-secret", "s", "--create-pvc"], f);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}
