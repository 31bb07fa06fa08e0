//! Network weights and modes: kubeyolo checkpoints round-trip, official weights download (from a
//! local HTTP server, never the internet), clear errors for files that are not ultralytics
//! detection checkpoints, and the training forward (batch statistics, gradients).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kubeyolo::config::model_yaml::ModelYaml;
use kubeyolo::error::ErrorKind;
use kubeyolo::nn::model::YoloModel;
use kubeyolo::nn::weights::{self, CheckpointMeta};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/parity").join(name)
}

fn tiny_model(nc: usize) -> (YoloModel, VarMap) {
    let yaml = ModelYaml::builtin("yolov8n.yaml").unwrap();
    let varmap = VarMap::new();
    let m = YoloModel::new(&yaml, nc, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    m.seed_init(&varmap, 7).unwrap();
    (m, varmap)
}

fn input(b: usize, s: usize) -> Tensor {
    let n = b * 3 * s * s;
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    Tensor::from_vec(v, (b, 3, s, s), &Device::Cpu).unwrap()
}

#[test]
fn checkpoint_round_trip_keeps_weights_and_metadata() {
    let (m, varmap) = tiny_model(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w/best.safetensors");
    let meta = CheckpointMeta {
        model_yaml: m.yaml.text.clone(),
        model_name: "yolov8n.yaml".into(),
        scale: Some("n".into()),
        nc: 3,
        names: vec!["a".into(), "b".into(), "c".into()],
        train_args: serde_json::json!({"epochs": 2, "imgsz": 64}),
        epoch: Some(1),
        best_fitness: Some(0.25),
        writer: "test".into(),
    };
    weights::save_checkpoint(&path, &varmap, &meta).unwrap();
    let lm = weights::load_model(&path, &Device::Cpu).unwrap();
    assert_eq!(lm.names, meta.names);
    assert_eq!(lm.meta.epoch, Some(1));
    assert_eq!(lm.meta.best_fitness, Some(0.25));
    assert_eq!(lm.meta.train_args["imgsz"], 64);
    assert_eq!(lm.model.summary(640).parameters, m.summary(640).parameters);
    let x = input(1, 64);
    let a = m.forward_eval(&x).unwrap().decoded;
    let b = lm.model.forward_eval(&x).unwrap().decoded;
    let d: f32 = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
    assert_eq!(d, 0.0, "reloaded network must compute the same outputs");
    // Names are ultralytics' state-dict keys.
    let names = YoloModel::variable_names(&lm.varmap);
    for k in [
        "model.0.conv.weight",
        "model.2.m.0.cv1.bn.running_mean",
        "model.22.cv2.0.2.weight",
        "model.22.dfl.conv.weight",
    ] {
        assert!(names.contains(k), "missing {k}");
    }
    assert_eq!(names.len(), 355 - 57, "ultralytics' 355 keys minus 57 num_batches_tracked");
}

#[test]
fn pretrained_transfer_keeps_matching_tensors_only() {
    // custom_fp32.pt has nc=4: training it on 2 classes transfers all but the class convs.
    let src = kubeyolo::root::ModelSource::File { path: fixture("custom_fp32.pt"), requested: "custom_fp32.pt".into() };
    let names = vec!["x".to_string(), "y".to_string()];
    let (lm, rep) = weights::build_for_training(&src, 2, &names, &Device::Cpu, 0).unwrap();
    let rep = rep.unwrap();
    assert_eq!(lm.model.nc, 2);
    assert_eq!(rep.mismatched.len(), 4, "{rep:?}"); // cv3.{0,1}.2.{weight,bias}
    assert_eq!(rep.loaded + 4, rep.total);
    assert!(rep.line().starts_with("Transferred "));
}

/// Serve each connection with the next canned response, then stop.
fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mirror/", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        for resp in responses {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&resp);
        }
    });
    (url, h)
}

fn http(status: &str, declared_len: usize, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("HTTP/1.1 {status}\r\nContent-Length: {declared_len}\r\nConnection: close\r\n\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn official_weights_download_check_and_cache() {
    let body = std::fs::read(fixture("custom_fp32.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("weights/yolov8n.pt");
    let (url, h) = serve(vec![
        http("404 Not Found", 0, b""),
        http("200 OK", body.len() + 1000, &body), // connection closes early: incomplete
        http("200 OK", 5, b"hello"),              // too small / not a zip
        http("200 OK", body.len(), &body),
    ]);
    std::env::set_var(weights::ENV_WEIGHTS_URL, &url);
    assert_eq!(weights::official_url("yolov8n.pt"), format!("{url}yolov8n.pt").replace("mirror//", "mirror/"));
    for what in ["404", "incomplete", "not a zip"] {
        let e = weights::ensure_official("yolov8n.pt", &cache).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Network, "{what}: {e}");
        assert!(!cache.exists(), "{what}: nothing may be cached");
    }
    let got = weights::ensure_official("yolov8n.pt", &cache).unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), body);
    h.join().unwrap();
    // Cached: no server needed any more, and the file loads.
    assert_eq!(weights::ensure_official("yolov8n.pt", &cache).unwrap(), cache);
    assert!(weights::read_weights(&cache).is_ok());
    // Offline (nothing listening): a clear network error with a hint.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::env::set_var(weights::ENV_WEIGHTS_URL, format!("http://127.0.0.1:{port}"));
    let e = weights::ensure_official("yolov8s.pt", &dir.path().join("weights/yolov8s.pt")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Network);
    assert!(e.hint.unwrap_or_default().contains("KUBEYOLO_WEIGHTS_URL"));
    std::env::remove_var(weights::ENV_WEIGHTS_URL);
}

/// A zip holding `archive/data.pkl` with the given pickle bytes.
fn pt_with_pickle(path: &Path, pickle: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.finish().unwrap();
}

#[test]
fn files_that_are_not_ultralytics_detect_checkpoints_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pt");
    std::fs::write(&text, "hello").unwrap();
    let e = weights::read_weights(&text).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Model);
    assert!(e.to_string().contains("not an ultralytics detection checkpoint"), "{e}");

    // A plain state-dict-like pickle: {"a": 1}.
    let sd = dir.path().join("state_dict.pt");
    pt_with_pickle(&sd, b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.");
    let e = weights::read_weights(&sd).unwrap_err();
    assert!(e.to_string().contains("no `model` or `ema` entry"), "{e}");

    // {"model": SegmentationModel()} is refused by class.
    let seg = dir.path().join("seg.pt");
    pt_with_pickle(
        &seg,
        b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01cultralytics.nn.tasks\nSegmentationModel\nq\x02)\x81q\x03}q\x04bs.",
    );
    let e = weights::read_weights(&seg).unwrap_err();
    assert!(e.to_string().contains("detection models"), "{e}");

    let other = dir.path().join("w.onnx");
    std::fs::write(&other, "x").unwrap();
    assert_eq!(weights::read_weights(&other).unwrap_err().kind, ErrorKind::Model);
}

#[test]
fn training_forward_uses_batch_statistics_and_backpropagates() {
    let (m, varmap) = tiny_model(2);
    let x = input(2, 64);
    let rm_name = "model.0.bn.running_mean";
    let before: Vec<f32> = varmap.data().lock().unwrap()[rm_name].as_tensor().to_vec1().unwrap();
    let out = m.forward_train(&x).unwrap();
    assert_eq!(out.boxes().unwrap().dims(), &[2, 64, 8 * 8 + 4 * 4 + 2 * 2]);
    assert_eq!(out.scores().unwrap().dims(), &[2, 2, 84]);
    assert_eq!(out.levels().unwrap()[0].dims(), &[2, 66, 8, 8]);
    let after: Vec<f32> = varmap.data().lock().unwrap()[rm_name].as_tensor().to_vec1().unwrap();
    assert!(before.iter().zip(&after).any(|(a, b)| a != b), "running mean must move in training mode");
    let loss =
        (out.boxes().unwrap().sqr().unwrap().mean_all().unwrap() + out.scores().unwrap().mean_all().unwrap()).unwrap();
    let grads = loss.backward().unwrap();
    let data = varmap.data().lock().unwrap();
    for k in ["model.0.conv.weight", "model.9.cv1.conv.weight", "model.22.cv3.1.2.bias", "model.4.m.1.cv2.bn.weight"] {
        let g = grads.get(data[k].as_tensor()).unwrap_or_else(|| panic!("no gradient for {k}"));
        let n: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(n > 0.0 && n.is_finite(), "{k}: gradient norm {n}");
    }
    assert!(grads.get(data["model.22.dfl.conv.weight"].as_tensor()).is_none(), "DFL is not trained in training mode");
}
