//! `multi_scale`'s batch resize against torch's `F.interpolate(mode="bilinear",
//! align_corners=False)`, as ultralytics 8.4 calls it (`tests/fixtures/multi_scale/cases.json`,
//! made by `scripts/fixtures/make_multi_scale.py`): down- and up-scaling, square and not.

use std::path::PathBuf;

use kubeyolo::data::multi_scale::resize_bilinear;
use serde_json::Value;

/// Measured worst |kubeyolo − torch|: 2.4e-7 (one f32 ulp near 1: torch's float kernel may
/// contract the two-tap sums into FMAs). A source coordinate shifted by 0.01 pixel gives 1.8e-2.
const TOL: f32 = 1e-6;

#[test]
fn bilinear_resize_equals_torch() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/multi_scale/cases.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut worst = 0f32;
    for c in v["cases"].as_array().unwrap() {
        let dims: Vec<usize> = c["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let size: Vec<usize> = c["size"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let input: Vec<f32> =
            c["input_u8"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as f32 / 255.0).collect();
        let want: Vec<f32> = c["output"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap() as f32).collect();
        let got = resize_bilinear(&input, dims[0] * dims[1], (dims[2], dims[3]), (size[0], size[1]));
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((g - w).abs());
        }
    }
    assert!(worst <= TOL, "worst |kubeyolo - torch| = {worst:e} > {TOL:e}");
    eprintln!("worst |kubeyolo - torch| = {worst:e}");
}
