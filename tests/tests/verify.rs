//! End-to-end tests of `yolo-verify`: resolved outputs on good inputs, every problem listed (and
//! no output written) on bad ones.

use std::path::{Path, PathBuf};

use kubeyolo::data::synth::{generate, SynthSpec};
use kubeyolo_e2e::{run, text};

/// A data root laid out like the volume: cfg-yaml/cfg-custom.yaml, data-yaml/data-custom.yaml
/// pointing at a small synthetic dataset in datasets/synth.
fn volume() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let spec = SynthSpec { images_per_split: [4, 2, 2], imgsz: 64, nc: 3, ..SynthSpec::default() };
    generate(&d.path().join("datasets/synth"), &spec).unwrap();
    write(
        d.path(),
        "cfg-yaml/cfg-custom.yaml",
        "epochs: 2\nimgsz: 64\nbatch: 4\nlr0: 0.02\ndevice: cpu\nformat: onnx\n",
    );
    // `path` relative: not under data-yaml/, so it resolves against the data root
    write(
        d.path(),
        "data-yaml/data-custom.yaml",
        "path: datasets/synth\ntrain: images/train\nval: images/val\ntest: images/test\nnames:\n  0: circle\n  1: square\n  2: triangle\n",
    );
    d
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn outs(dir: &Path) -> [PathBuf; 3] {
    ["out/model_path", "out/cfg_yaml", "out/data_yaml"].map(|p| dir.join(p))
}

fn verify(root: &Path, out: &Path, model: &str, cfg: &str, data: &str) -> std::process::Output {
    let [m, c, d] = outs(out);
    run(
        "yolo-verify",
        root,
        &[
            "--model-name",
            model,
            "--cfg",
            cfg,
            "--data",
            data,
            "--out-model-path",
            m.to_str().unwrap(),
            "--out-cfg-yaml",
            c.to_str().unwrap(),
            "--out-data-yaml",
            d.to_str().unwrap(),
        ],
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn good_inputs_write_exact_outputs_and_summary() {
    let vol = volume();
    let out = tempfile::tempdir().unwrap();
    let o = verify(vol.path(), out.path(), "yolov8n.yaml", "cfg-custom", "data-custom");
    assert!(o.status.success(), "{}", text(&o));
    let [m, c, d] = outs(out.path());
    assert_eq!(read(&m), "yolov8n.yaml");
    assert_eq!(read(&c), vol.path().join("cfg-yaml/cfg-custom.yaml").display().to_string());
    assert_eq!(read(&d), vol.path().join("data-yaml/data-custom.yaml").display().to_string());

    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&o)));
    assert_eq!(j["ok"], true);
    assert_eq!(j["model"]["source"], "builtin");
    assert_eq!(j["model"]["scale"], "n");
    assert_eq!(j["model"]["nc"], 80);
    assert_eq!(j["data"]["nc"], 3);
    assert_eq!(j["data"]["splits"]["train"]["images"], 4);
    assert_eq!(j["data"]["splits"]["val"]["images"], 2);
    assert_eq!(j["data"]["splits"]["test"]["label_files"], 2);
    assert_eq!(j["cfg"]["epochs"], 2);
    assert_eq!(j["cfg"]["ignored_keys"], serde_json::json!(["format"]));
    assert!(j["device"]["cpu_threads"].as_u64().unwrap() >= 1);
    assert_eq!(j["cfg"]["batch"], 4, "batch is the cfg's number, not Rust debug text");
    let warnings = j["warnings"].to_string();
    // export's `format` is listed as ignored but changes nothing in training: no warning
    assert!(warnings.contains("nc=80") && !warnings.contains("format"), "{warnings}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("verify ok"));
}

#[test]
fn scaled_yaml_official_weights_and_pt_files() {
    let vol = volume();
    let root = vol.path();
    // a user's scratch yaml, requested with a scale letter
    write(root, "yolov8-scratch.yaml", &kubeyolo::config::model_yaml::YOLOV8_YAML.replace("nc: 80", "nc: 3"));
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8s-scratch.yaml", "cfg-custom.yaml", "data-custom.yaml");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read(&outs(out.path())[0]), root.join("yolov8s-scratch.yaml").display().to_string());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["model"]["scale"], "s");
    assert_eq!(j["model"]["path"], root.join("yolov8-scratch.yaml").display().to_string());

    // official weights not on the volume: the path they will be downloaded to
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8m", "cfg-custom", "data-custom");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read(&outs(out.path())[0]), root.join("weights/yolov8m.pt").display().to_string());
    assert!(String::from_utf8_lossy(&o.stderr).contains("downloads it"), "{}", text(&o));

    // a kubeyolo checkpoint in weights/: read through nn::weights, its architecture reported
    std::fs::create_dir_all(root.join("weights")).unwrap();
    std::fs::write(root.join("weights/best.safetensors"), tiny_checkpoint()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "best.safetensors", "cfg-custom", "data-custom");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read(&outs(out.path())[0]), root.join("weights/best.safetensors").display().to_string());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["model"]["scale"].as_str(), j["model"]["nc"].as_u64()), (Some("s"), Some(3)), "{j}");

    // a .pt that is not a PyTorch zip archive
    std::fs::write(root.join("weights/broken.pt"), b"not a checkpoint").unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "broken.pt", "cfg-custom", "data-custom");
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("zip archive"), "{}", text(&o));
    assert!(outs(out.path()).iter().all(|p| !p.exists()));
}

/// A minimal kubeyolo safetensors checkpoint (one tensor, the metadata nn::weights reads),
/// written by hand so the test needs no network code.
fn tiny_checkpoint() -> Vec<u8> {
    let yaml = kubeyolo::config::model_yaml::YOLOV8_YAML.replace("nc: 80", "nc: 3");
    let header = serde_json::json!({
        "__metadata__": {
            "format": "kubeyolo", "model_yaml": yaml, "model_name": "yolov8s.yaml", "scale": "s",
            "nc": "3", "names": "[\"circle\",\"square\",\"triangle\"]", "train_args": "null", "writer": "test",
        },
        "model.0.conv.weight": { "dtype": "F32", "shape": [1], "data_offsets": [0, 4] },
    });
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(&1.0f32.to_le_bytes());
    bytes
}

#[test]
fn missing_files_all_listed_and_nothing_written() {
    let vol = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = verify(vol.path(), out.path(), "mynet.pt", "cfg-nope", "data-nope");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3 problems"), "{err}");
    for want in ["weights/mynet.pt", "cfg-yaml/cfg-nope.yaml", "data-yaml/data-nope.yaml", "hint:"] {
        assert!(err.contains(want), "missing {want} in:\n{err}");
    }
    assert!(outs(out.path()).iter().all(|p| !p.exists()), "no output may be written on failure");
    assert!(!out.path().join("out").exists());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["problems"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_cfg_and_empty_split_reported_together() {
    let vol = volume();
    let root = vol.path();
    write(root, "cfg-yaml/cfg-bad.yaml", "epochs: 2\nmomentun: 0.9\nlr0: 7\n");
    std::fs::create_dir_all(root.join("datasets/synth/images/empty")).unwrap();
    write(
        root,
        "data-yaml/data-bad.yaml",
        "path: datasets/synth\ntrain: images/train\nval: images/empty\nnames: [a, b, c]\n",
    );
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8n.yaml", "cfg-bad", "data-bad");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("cfg-bad.yaml:2: key 'momentun': unknown cfg key") && err.contains("did you mean 'momentum'"),
        "{err}"
    );
    assert!(err.contains("cfg-bad.yaml:3: key 'lr0'"), "{err}");
    assert!(err.contains("data-bad.yaml:3") && err.contains("holds no images"), "{err}");
    assert!(outs(out.path()).iter().all(|p| !p.exists()));

    // one problem: its own exit code (3 = config), malformed yaml names the line
    write(root, "cfg-yaml/cfg-broken.yaml", "epochs: 2\nlr0: [0.1\nbatch: 4\n");
    let o = verify(root, out.path(), "yolov8n.yaml", "cfg-broken", "data-custom");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cfg-broken.yaml:"), "{}", text(&o));
    assert!(outs(out.path()).iter().all(|p| !p.exists()));
}

/// The image files of one split of the synthetic dataset in `volume()`, sorted.
fn split_images(root: &Path, split: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(root.join("datasets/synth/images").join(split)).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn one_corrupt_image_is_a_warning_naming_it() {
    let vol = volume();
    let root = vol.path();
    let bad = root.join("datasets/synth/images/train/corrupt_0001.jpg");
    std::fs::write(&bad, b"these bytes are not a JPEG at all").unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8n.yaml", "cfg-custom", "data-custom");
    assert!(o.status.success(), "{}", text(&o));
    assert!(outs(out.path()).iter().all(|p| p.is_file()), "outputs must be written: {}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&o)));
    assert_eq!(j["ok"], true);
    let train = &j["data"]["splits"]["train"];
    assert_eq!(
        (train["images"].as_u64(), train["corrupt_images"].as_u64(), train["usable_images"].as_u64()),
        (Some(5), Some(1), Some(4)),
        "{j}"
    );
    assert_eq!(j["data"]["splits"]["val"]["corrupt_images"], 0);
    let warned: Vec<&str> = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .filter(|w| w.contains("corrupt image"))
        .collect();
    assert_eq!(warned.len(), 1, "{j}");
    assert!(warned[0].contains(&bad.display().to_string()) && warned[0].contains("re-export"), "{}", warned[0]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: ") && err.contains("corrupt_0001.jpg"), "{err}");

    // --skip-image-check: no header read, no warning
    let out = tempfile::tempdir().unwrap();
    let [m, c, d] = outs(out.path());
    let o = run(
        "yolo-verify",
        root,
        &[
            "--model-name",
            "yolov8n.yaml",
            "--cfg",
            "cfg-custom",
            "--data",
            "data-custom",
            "--skip-image-check",
            "--out-model-path",
            m.to_str().unwrap(),
            "--out-cfg-yaml",
            c.to_str().unwrap(),
            "--out-data-yaml",
            d.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["data"]["image_check"], "skipped");
    assert!(!j["warnings"].to_string().contains("corrupt"), "{j}");
}

#[test]
fn too_many_corrupt_images_are_capped_in_the_list() {
    let vol = volume();
    let root = vol.path();
    for i in 0..25 {
        std::fs::write(root.join(format!("datasets/synth/images/train/junk_{i:02}.png")), b"junk").unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8n.yaml", "cfg-custom", "data-custom");
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["data"]["splits"]["train"]["corrupt_images"], 25);
    let ws = j["warnings"].as_array().unwrap();
    assert_eq!(ws.iter().filter(|w| w.as_str().unwrap().contains("corrupt image (")).count(), 20, "{j}");
    assert!(ws.iter().any(|w| w.as_str().unwrap().contains("5 more image warnings")), "{j}");
}

#[test]
fn split_with_only_corrupt_images_fails_and_writes_nothing() {
    let vol = volume();
    let root = vol.path();
    let val = split_images(root, "val");
    assert_eq!(val.len(), 2);
    std::fs::write(&val[0], b"garbage").unwrap();
    std::fs::write(&val[1], [0u8; 4096]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = verify(root, out.path(), "yolov8n.yaml", "cfg-custom", "data-custom");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 problem;") && err.contains("no output was written"), "{err}");
    assert!(
        err.contains("split 'val' has no usable image") && err.contains("all 2 of its images are corrupt"),
        "{err}"
    );
    assert!(err.contains("data-custom.yaml") && err.contains("remove or re-export"), "{err}");
    assert!(outs(out.path()).iter().all(|p| !p.exists()), "no output may be written on failure");
    assert!(!out.path().join("out").exists());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["data"]["splits"]["val"]["usable_images"], 0);
    assert_eq!(j["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn data_root_flag_wins_over_env() {
    let vol = volume();
    let empty = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let [m, c, d] = outs(out.path());
    // env (set by `run`) points at an empty folder; the flag at the real volume
    let o = run(
        "yolo-verify",
        empty.path(),
        &[
            "--data-root",
            vol.path().to_str().unwrap(),
            "--model-name",
            "yolov8n.yaml",
            "--cfg",
            "cfg-custom",
            "--data",
            "data-custom",
            "--out-model-path",
            m.to_str().unwrap(),
            "--out-cfg-yaml",
            c.to_str().unwrap(),
            "--out-data-yaml",
            d.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(read(&c).starts_with(&vol.path().display().to_string()));
}

#[test]
fn help_explains_every_flag_with_an_example() {
    let o = run("yolo-verify", Path::new("/nonexistent"), &["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--model-name",
        "--cfg",
        "--data",
        "--out-model-path",
        "--out-cfg-yaml",
        "--out-data-yaml",
        "--data-root",
        "--print-default-cfg",
        "--skip-image-check",
    ] {
        assert!(help.contains(flag), "{flag} missing in --help");
    }
    assert!(help.matches("Example:").count() >= 9, "{help}");
    let o = run("yolo-verify", Path::new("/nonexistent"), &["--print-default-cfg"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("lr0: 0.01"));
}

/// The pipeline's `tune_space` is checked by verify, before train runs for hours: a good yaml
/// is summarised, a bad one is a config problem naming its line and nothing is written, an
/// empty value (the parameter left blank) means ultralytics' space.
#[test]
fn tune_space_is_checked_before_training() {
    let vol = volume();
    let root = vol.path();
    let out = tempfile::tempdir().unwrap();
    let [m, c, d] = outs(out.path());
    let with_space = |space: &str| {
        run(
            "yolo-verify",
            root,
            &[
                "--model-name",
                "yolov8n.yaml",
                "--cfg",
                "cfg-custom",
                "--data",
                "data-custom",
                "--tune-space",
                space,
                "--out-model-path",
                m.to_str().unwrap(),
                "--out-cfg-yaml",
                c.to_str().unwrap(),
                "--out-data-yaml",
                d.to_str().unwrap(),
            ],
        )
    };
    write(root, "spaces/lr.yaml", "lr0: [1.0e-5, 1.0e-2]\nmomentum: [0.6, 0.98, 0.3]\n");
    let o = with_space("spaces/lr.yaml");
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["tune_space"]["keys"], 2, "{j}");

    let o = with_space("");
    assert!(o.status.success(), "{}", text(&o));
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["tune_space"].is_null());

    std::fs::remove_dir_all(out.path().join("out")).unwrap();
    write(root, "spaces/bad.yaml", "lr0: [1.0e-5, 1.0e-2]\nmomentum: [0.98, 0.6]\n");
    let o = with_space("spaces/bad.yaml");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.yaml:2") && err.contains("greater than max"), "{err}");
    assert!(outs(out.path()).iter().all(|p| !p.exists()), "outputs written despite a bad space");
}
