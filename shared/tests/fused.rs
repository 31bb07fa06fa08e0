//! The folded eval network (`nn::fused`, what predict, test and validation run on CPU) against
//! candle's unfolded eval forward: every block type, BatchNorm statistics that make the fold
//! non-trivial, square and rectangular inputs, batch 1 (convs split over threads) and batches
//! larger than the thread count (one image per thread).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kubeyolo::config::model_yaml::ModelYaml;
use kubeyolo::nn::fused::{EvalNet, FusedModel};
use kubeyolo::nn::model::YoloModel;

/// Largest |fused − unfused| measured on these networks: decoded boxes ≤ 9.2e-5 px, class
/// probabilities ≤ 1.2e-7, raw logits ≤ 2.4e-7 (summation order of the GEMMs, the
/// vectorized exp). Tolerances are a few times that.
const TOL_BOX_PX: f32 = 4e-4;
const TOL_PROB: f32 = 5e-7;
const TOL_RAW: f32 = 1e-6;

/// Every block the fused path has an op for: Conv, a repeated Bottleneck (`nn.Sequential`),
/// C3, C2f with and without shortcut, SPP, SPPF, Upsample, Concat, Detect.
const EVERY_BLOCK: &str = r#"
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 2, Bottleneck, [32]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, C3, [64]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, C2f, [64, True]]
  - [-1, 1, Conv, [128, 3, 2]]
  - [-1, 1, SPP, [128, [5, 9, 13]]]
  - [-1, 1, SPPF, [128, 5]]
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 6], 1, Concat, [1]]
  - [-1, 1, C2f, [64]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 1, C3, [64, False]]
  - [[15, 12, 9], 1, Detect, [nc]]
"#;

/// A network with seeded weights and BatchNorm parameters / running statistics away from their
/// initial 1 / 0, so folding changes every weight.
fn network(yaml: &ModelYaml) -> (YoloModel, VarMap) {
    let varmap = VarMap::new();
    let m = YoloModel::new(yaml, 3, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    m.seed_init(&varmap, 11).unwrap();
    let data = varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let n = var.elem_count();
        let wave = |scale: f32, base: f32| -> Vec<f32> {
            (0..n).map(|i| base + scale * ((i as f32 * 1.37 + name.len() as f32).sin())).collect()
        };
        // Gains γ/√var ≈ 2 keep the signal alive through the depth (seeded conv weights shrink
        // it ~3× per layer), and Detect biases near 0 keep class scores off their saturated
        // initial values: the outputs depend on the input and on every BatchNorm.
        let vals = if name.ends_with("bn.running_mean") || name.ends_with("bn.bias") {
            wave(0.2, 0.0)
        } else if name.ends_with("bn.running_var") {
            wave(0.3, 0.6)
        } else if name.ends_with("bn.weight") {
            wave(0.5, 1.5)
        } else if name.ends_with(".2.bias") {
            wave(0.5, 0.0)
        } else {
            continue;
        };
        var.set(&Tensor::from_vec(vals, n, &Device::Cpu).unwrap()).unwrap();
    }
    drop(data);
    (m, varmap)
}

fn input(b: usize, h: usize, w: usize) -> Tensor {
    let v: Vec<f32> = (0..b * 3 * h * w).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn check(what: &str, m: &YoloModel, x: &Tensor) {
    let want = m.forward_eval(x).unwrap();
    let net = EvalNet::new(m, &Device::Cpu).unwrap();
    assert!(net.is_fused());
    let (dec, raw) = net.forward(x, true).unwrap();
    let raw = raw.unwrap();
    let nc = dec.dim(1).unwrap() - 4;
    let e_box = max_abs(&dec.narrow(1, 0, 4).unwrap(), &want.decoded.narrow(1, 0, 4).unwrap());
    let e_prob = max_abs(&dec.narrow(1, 4, nc).unwrap(), &want.decoded.narrow(1, 4, nc).unwrap());
    let e_raw = max_abs(&raw.boxes().unwrap(), &want.raw.boxes().unwrap())
        .max(max_abs(&raw.scores().unwrap(), &want.raw.scores().unwrap()));
    let spread = want
        .decoded
        .narrow(1, 4, nc)
        .unwrap()
        .flatten_all()
        .unwrap()
        .var(0)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(spread > 0.05, "{what}: class probabilities barely vary (std {spread}): the check would be blind");
    eprintln!("{what} {:?}: boxes {e_box:.2e} px, probabilities {e_prob:.2e}, raw {e_raw:.2e}", x.dims());
    assert!(e_box <= TOL_BOX_PX, "{what}: decoded boxes differ by {e_box:e}");
    assert!(e_prob <= TOL_PROB, "{what}: class probabilities differ by {e_prob:e}");
    assert!(e_raw <= TOL_RAW, "{what}: raw head outputs differ by {e_raw:e}");
    assert_eq!(raw.level_shapes().unwrap(), want.raw.level_shapes().unwrap());
}

#[test]
fn yolov8n_fused_equals_unfused() {
    let (m, _vm) = network(&ModelYaml::builtin("yolov8n.yaml").unwrap());
    check("yolov8n", &m, &input(1, 96, 64));
    check("yolov8n", &m, &input(5, 64, 64));
}

#[test]
fn every_block_fused_equals_unfused() {
    let yaml = ModelYaml::parse(EVERY_BLOCK, "every-block.yaml", "every-block.yaml").unwrap();
    let (m, _vm) = network(&yaml);
    check("every block", &m, &input(1, 64, 128));
    check("every block", &m, &input(3, 96, 64));
}

/// A wrong fold (BatchNorm ignored) must be caught by the tolerances above: the test's
/// networks have BatchNorm statistics that matter.
#[test]
fn the_check_sees_an_unfolded_batchnorm() {
    let (m, vm) = network(&ModelYaml::builtin("yolov8n.yaml").unwrap());
    let x = input(1, 64, 64);
    let fused = FusedModel::new(&m).unwrap().forward(&x).unwrap().decoded;
    // Reset one BatchNorm's statistics: the unfused model now computes something else.
    let data = vm.data().lock().unwrap();
    let v = &data["model.2.m.0.cv1.bn.running_mean"];
    v.set(&v.zeros_like().unwrap()).unwrap();
    drop(data);
    let changed = m.forward_eval(&x).unwrap().decoded;
    let nc = fused.dim(1).unwrap() - 4;
    let e_box = max_abs(&fused.narrow(1, 0, 4).unwrap(), &changed.narrow(1, 0, 4).unwrap());
    let e_prob = max_abs(&fused.narrow(1, 4, nc).unwrap(), &changed.narrow(1, 4, nc).unwrap());
    eprintln!("one BatchNorm's running mean zeroed: boxes move {e_box:.2e} px, probabilities {e_prob:.2e}");
    assert!(
        e_box > 10.0 * TOL_BOX_PX || e_prob > 10.0 * TOL_PROB,
        "one BatchNorm's statistics moved boxes by only {e_box:e}, probabilities by {e_prob:e}"
    );
}
