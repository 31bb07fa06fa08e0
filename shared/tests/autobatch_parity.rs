//! AutoBatch's choice against ultralytics 8.4's own `autobatch()` (`tests/fixtures/autobatch/
//! cases.json`, made by `scripts/fixtures/make_autobatch.py` with the GPU replaced by fakes):
//! the probed batch sizes, the fit, the out-of-memory ceiling, the clamps and the dataset cap.
//! The batches compare exactly; the fixture's memory lines avoid solutions at an exact integer,
//! where numpy's SVD-based `polyfit` and the closed-form fit here can round to either side
//! (measured: 26.9999999 vs 27.0 for a line through exact values). Checked to fail with any one
//! rule of `choose` changed: no out-of-memory ceiling, rounding instead of truncation, the 16 GiB
//! probe threshold at 24, every reading kept (not only growing ones), readings above the total
//! kept, numpy's single-point fit replaced, no dataset cap, a 4096 clamp.

use std::path::PathBuf;

use kubeyolo::train::autobatch::{choose, loss_envelope_gib, probe_batches, Memory};
use serde_json::Value;

fn fixture() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/autobatch/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn autobatch_picks_ultralytics_batch() {
    let v = fixture();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for (i, c) in cases.iter().enumerate() {
        let f = |k: &str| c[k].as_f64().unwrap();
        let dataset = c["dataset_size"].as_u64().unwrap() as usize;
        let batches: Vec<usize> =
            c["probe_batches"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as usize).collect();
        assert_eq!(probe_batches(f("total_gib"), dataset), batches, "case {i}: probed batch sizes");
        let probes: Vec<(usize, Option<f64>)> =
            batches.iter().zip(c["probe_mem_gib"].as_array().unwrap()).map(|(&b, m)| (b, m.as_f64())).collect();
        let mem = Memory { total_gib: f("total_gib"), available_gib: f("reserved_gib") + f("free_gib") };
        let got = choose(&probes, mem, f("fraction"), dataset);
        match c["batch"].as_u64() {
            Some(want) => assert_eq!(got.unwrap().batch, want as usize, "case {i}: {c}"),
            None => assert!(got.is_err(), "case {i}: ultralytics raised, kubeyolo chose {got:?}"),
        }
    }
}

#[test]
fn loss_envelope_is_profile_ops_formula() {
    for e in fixture()["loss_envelope"].as_array().unwrap() {
        let u = |k: &str| e[k].as_u64().unwrap() as usize;
        let strides: Vec<f64> = e["strides"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        let got = loss_envelope_gib(u("batch"), u("imgsz"), &strides, u("max_num_obj"), u("nc"));
        let want = e["gib"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-12 * want, "{e}: {got}");
    }
}
