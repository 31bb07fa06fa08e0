//! kubeyolo's optimizers, gradient clipping, EMA and LR schedule against ultralytics 8.4 / torch
//! (`tests/fixtures/optim/*.json`, made by `scripts/fixtures/make_optim.py` with ultralytics' own
//! `build_optimizer`, its warm-up block, `clip_grad_norm_`, `ModelEMA` and `one_cycle`).
//!
//! Every optimizer is built the way ultralytics builds it (groups, boosted MuSGD groups, the
//! `auto` rule), then run for 7 steps over a tiny YOLOv8-named model with fixed gradients and the
//! warm-up changing lr and momentum between steps; the parameters must equal torch's after every
//! step. Each case also checks that the tolerance would catch a 0.1 % lr error, and that the
//! optimizer state survives a save/load in the middle of the run bit-exactly.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use kubeyolo::train::ema::ModelEma;
use kubeyolo::train::optim::{self, Optimizer, OptimizerKind, ParamGroup};
use kubeyolo::train::schedule::{self, interp, LrSchedule, Warmup};
use serde_json::Value;

/// Parameters after each step: |kubeyolo − torch| ≤ TOL · max(|torch|, peak |value|, 1e-2).
/// Measured worst errors (f32 rounding order only): SGD 1.6e-7, Adam/AdamW 1.6e-7, Adamax
/// 9.8e-8, NAdam 1.1e-7, RAdam 8.5e-8, RMSprop 3.8e-7, MuSGD 1.2e-7. MuSGD's bf16 Newton–Schulz
/// reproduces torch's bf16 values: computed in f32 the error is 3.9e-3, and orthogonalising each
/// matrix alone instead of in ultralytics' padded batches gives 7.2e-4. A 0.1 % lr error gives
/// ≥ 7e-5 (checked for every case below).
const TOL: f64 = 1e-6;

/// EMA: measured 1.9e-6, all of it from ema.rs forming `d·ema + (1 − d)·model` with f64
/// coefficients where torch's `_foreach_lerp_(ema, model, 1 − d)` rounds the weight to f32 and
/// computes `model − (model − ema)·(1 − w)` (emulating that gives 0 error on this fixture).
const EMA_TOL: f64 = 5e-6;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/optim").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn vec_f32(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| f(x) as f32).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Worst relative error, `|a − b| / max(|b|, 1e-2)`.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    rel_err_scaled(got, want, want)
}

/// Worst `|a − b| / max(|b|, |s|, 1e-2)`: relative to the larger of the value and a reference
/// scale `s` — for a trajectory, the largest magnitude the element has had: a parameter that a
/// few large steps (warm-up bias lr 0.1) moved to near 0 keeps the rounding error of their size.
fn rel_err_scaled(got: &[f32], want: &[f32], scale: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .zip(scale)
        .map(|((&a, &b), &s)| (a as f64 - b as f64).abs() / (b as f64).abs().max((s as f64).abs()).max(1e-2))
        .fold(0.0, f64::max)
}

struct Model {
    /// (name, var, frozen) in ultralytics' module order.
    params: Vec<(String, Var, bool)>,
}

fn model(fx: &Value) -> Model {
    let params = fx["model"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let t = Tensor::from_vec(vec_f32(&p["init"]), shape(&p["shape"]), &Device::Cpu).unwrap();
            (p["name"].as_str().unwrap().to_string(), Var::from_tensor(&t).unwrap(), p["frozen"].as_bool().unwrap())
        })
        .collect();
    Model { params }
}

/// The gradients of step `s` (the frozen DFL gets one too: it must be ignored).
fn grads(fx: &Value, m: &Model, s: usize) -> GradStore {
    let mut g = GradStore::default();
    let step = &fx["grads"][s];
    for (name, var, _) in &m.params {
        let vals = match step.get(name) {
            Some(v) => vec_f32(v),
            None => vec![1.0; var.elem_count()],
        };
        g.insert(var.as_tensor(), Tensor::from_vec(vals, var.shape(), &Device::Cpu).unwrap());
    }
    g
}

struct Built {
    opt: Optimizer,
    kind: OptimizerKind,
    auto: bool,
}

fn build(case: &Value, m: &Model, lr_factor: f64) -> Built {
    let (kind, lr, momentum, auto) = optim::resolve_auto(
        case["optimizer"].as_str().unwrap(),
        f(&case["lr0"]),
        f(&case["momentum"]),
        case["nc"].as_u64().unwrap() as usize,
        case["iterations"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let vars = m.params.iter().map(|(n, v, _)| (n.clone(), v.clone()));
    let mut opt = Optimizer::new(kind, vars, lr * lr_factor, momentum, f(&case["decay"]));
    let frozen = opt.set_frozen(&optim::freeze_layer_names::<usize>(&[]));
    assert_eq!(frozen, m.params.iter().filter(|p| p.2).count());
    Built { opt, kind, auto }
}

/// ultralytics' warm-up block at iteration `ni` (epoch 0), applied through the optimizer API.
fn warm_up(b: &mut Built, case: &Value, ni: usize) {
    let nw = case["nw"].as_u64().unwrap() as usize;
    if ni > nw {
        return;
    }
    let xi = [0.0, nw as f64];
    let x = ni as f64;
    let wbl = if b.auto { 0.0 } else { f(&case["warmup_bias_lr"]) };
    let lf = f(&case["lf"][0]);
    b.opt.set_lrs_by(|g| interp(x, xi, [if g.group == ParamGroup::Bias { wbl } else { 0.0 }, g.initial_lr * lf]));
    if b.kind.has_momentum() {
        // ultralytics warms up to args.momentum (0.937 here), not auto's 0.9
        let mom = interp(x, xi, [f(&case["warmup_momentum"]), f(&case["momentum"])]);
        for g in ParamGroup::ALL {
            b.opt.set_momentum(g, mom);
        }
    }
}

/// Runs one case; returns the worst relative error over all steps and parameters.
fn run_case(fx: &Value, case: &Value, lr_factor: f64, check_hyp: bool) -> f64 {
    let m = model(fx);
    let mut b = build(case, &m, lr_factor);
    let label = format!("{} ({} iterations)", case["optimizer"].as_str().unwrap(), case["iterations"]);
    let mut worst = 0.0f64;
    // per element, the largest magnitude it has had: the scale its rounding errors carry
    let mut peak: Vec<Vec<f32>> = m.params.iter().map(|(_, v, _)| vec![0.0; v.elem_count()]).collect();
    for (ni, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        warm_up(&mut b, case, ni);
        if check_hyp {
            for (i, g) in b.opt.param_groups().iter().enumerate() {
                let lr = f(&step["lr"][i]);
                assert!(
                    (g.hyp.lr - lr).abs() <= 1e-15 * lr.abs().max(1.0),
                    "{label} step {ni} group {i}: lr {} vs {lr}",
                    g.hyp.lr
                );
                if let Some(mom) = step["momentum"][i].as_f64() {
                    assert!(
                        (g.hyp.momentum - mom).abs() <= 1e-15,
                        "{label} step {ni} group {i}: momentum {} vs {mom}",
                        g.hyp.momentum
                    );
                }
            }
        }
        for ((_, v, _), pk) in m.params.iter().zip(peak.iter_mut()) {
            for (p, x) in pk.iter_mut().zip(values(v.as_tensor())) {
                *p = p.max(x.abs());
            }
        }
        b.opt.step(&grads(fx, &m, ni)).unwrap();
        for ((name, var, _), prev) in m.params.iter().zip(&peak) {
            let (g, w) = (values(var.as_tensor()), vec_f32(&step["params"][name]));
            let e = rel_err_scaled(&g, &w, prev);
            if std::env::var("OPTIM_DEBUG").is_ok() && e > TOL && lr_factor == 1.0 {
                for (k, (a, b)) in g.iter().zip(&w).enumerate() {
                    if rel_err_scaled(&[*a], &[*b], &prev[k..k + 1]) > TOL {
                        println!("  {label} step {ni} {name}[{k}]: {a:e} vs {b:e}");
                    }
                }
            }
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn optimizers_match_torch() {
    let fx = fixture("optimizers.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    let mut failed = Vec::new();
    for case in cases {
        let label = format!("{} ({} iterations)", case["optimizer"].as_str().unwrap(), case["iterations"]);
        let err = run_case(&fx, case, 1.0, true);
        // the tolerance is tight enough to see a 0.1 % learning-rate error
        let off = run_case(&fx, case, 1.001, false);
        println!("{label}: worst relative error {err:.3e} (with lr × 1.001: {off:.3e})");
        if err > TOL || off <= TOL {
            failed.push(label);
        }
    }
    assert!(failed.is_empty(), "outside tolerance {TOL:e} (or lr × 1.001 inside it): {failed:?}");
}

/// The groups (order, names, boosted, initial lr, decay, membership) are ultralytics'.
#[test]
fn groups_match_build_optimizer() {
    let fx = fixture("optimizers.json");
    for case in fx["cases"].as_array().unwrap() {
        let m = model(&fx);
        let b = build(case, &m, 1.0);
        let label = case["optimizer"].as_str().unwrap();
        assert_eq!(b.kind.name(), case["resolved"].as_str().unwrap(), "{label}");
        let want = case["groups"].as_array().unwrap();
        let got = b.opt.param_groups();
        assert_eq!(got.len(), want.len(), "{label}: group count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.group.name(), w["param_group"].as_str().unwrap(), "{label} group {i}");
            assert_eq!(g.boosted, w["boosted"].as_bool().unwrap(), "{label} group {i}");
            assert_eq!(g.initial_lr, f(&w["initial_lr"]), "{label} group {i}: initial_lr");
            assert_eq!(g.hyp.weight_decay, f(&w["weight_decay"]), "{label} group {i}: weight_decay");
            assert_eq!(g.group == ParamGroup::Muon, w["use_muon"].as_bool().unwrap(), "{label} group {i}: use_muon");
            if let Some(mom) = w["momentum"].as_f64() {
                assert_eq!(g.hyp.momentum, mom, "{label} group {i}: momentum");
            }
            if let Some(betas) = w["betas"].as_array() {
                assert_eq!(g.hyp.momentum, f(&betas[0]), "{label} group {i}: beta1");
            }
            for name in w["params"].as_array().unwrap() {
                assert_eq!(b.opt.group_index_of(name.as_str().unwrap()), Some(i), "{label}: group of {name}");
            }
        }
        let sizes = b.opt.group_sizes();
        let count = |pg: &str| {
            want.iter().filter(|w| w["param_group"] == pg).map(|w| w["params"].as_array().unwrap().len()).sum::<usize>()
        };
        let first = if b.kind == OptimizerKind::MuSgd { "muon" } else { "weight" };
        assert_eq!(sizes, [count(first), count("bn"), count("bias")], "{label}: logged group sizes");
    }
}

#[test]
fn auto_rule_matches_ultralytics() {
    let fx = fixture("optimizers.json");
    for a in fx["auto"].as_array().unwrap() {
        let (nc, it) = (a["nc"].as_u64().unwrap() as usize, a["iterations"].as_u64().unwrap() as usize);
        let (kind, lr, mom, auto) = optim::resolve_auto("AUTO", 0.01, 0.937, nc, it).unwrap();
        assert!(auto);
        assert_eq!(kind.name(), a["optimizer"].as_str().unwrap(), "nc {nc} iterations {it}");
        assert_eq!(lr, f(&a["lr0"]), "nc {nc} iterations {it}: lr");
        assert_eq!(mom, f(&a["momentum"]), "nc {nc} iterations {it}: momentum");
        assert_eq!(f(&a["warmup_bias_lr"]), 0.0);
    }
    assert_eq!(optim::resolve_auto("sgd", 0.01, 0.937, 3, 1).unwrap(), (OptimizerKind::Sgd, 0.01, 0.937, false));
    for k in OptimizerKind::ALL {
        assert_eq!(OptimizerKind::parse(&k.name().to_uppercase()).unwrap(), k);
    }
    assert!(OptimizerKind::parse("lion").is_err());
    assert!(OptimizerKind::parse("auto").is_err());
    assert_eq!(optim::auto_iterations(1000, 16, 64, 3), 48);
}

/// Saving the state after 3 steps and loading it into a fresh optimizer continues bit-exactly.
#[test]
fn state_round_trips_exactly() {
    let fx = fixture("optimizers.json");
    for case in fx["cases"].as_array().unwrap() {
        let label = case["optimizer"].as_str().unwrap();
        let steps = case["steps"].as_array().unwrap().len();
        let straight = model(&fx);
        let mut a = build(case, &straight, 1.0);
        let mut resumed = model(&fx);
        let mut b = build(case, &resumed, 1.0);
        for ni in 0..steps {
            warm_up(&mut a, case, ni);
            a.opt.step(&grads(&fx, &straight, ni)).unwrap();
            warm_up(&mut b, case, ni);
            b.opt.step(&grads(&fx, &resumed, ni)).unwrap();
            if ni == 2 {
                // a new process: fresh variables holding the saved weights, a fresh optimizer
                let state: HashMap<String, Tensor> = b.opt.state_tensors().unwrap();
                let fresh = model(&fx);
                for ((_, v, _), (_, old, _)) in fresh.params.iter().zip(&resumed.params) {
                    v.set(old.as_tensor()).unwrap();
                }
                b = build(case, &fresh, 1.0);
                b.opt.load_state_tensors(&state).unwrap();
                assert_eq!(b.opt.param_groups(), a.opt.param_groups(), "{label}: groups after load");
                resumed = fresh;
            }
        }
        for ((n, x, _), (_, y, _)) in straight.params.iter().zip(&resumed.params) {
            assert_eq!(values(x.as_tensor()), values(y.as_tensor()), "{label}: {n} after resume");
        }
    }
}

#[test]
fn clip_grad_norm_matches_torch() {
    let fx = fixture("clip.json");
    for (c, case) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let vars: Vec<Var> = case["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Var::zeros(shape(s), DType::F32, &Device::Cpu).unwrap())
            .collect();
        let mut g = GradStore::default();
        for (v, vals) in vars.iter().zip(case["grads"].as_array().unwrap()) {
            g.insert(v.as_tensor(), Tensor::from_vec(vec_f32(vals), v.shape(), &Device::Cpu).unwrap());
        }
        let norm = optim::clip_grad_norm(&mut g, &vars, 10.0).unwrap();
        let want = f(&case["total_norm"]);
        assert!((norm - want).abs() <= 1e-6 * want, "case {c}: norm {norm} vs {want}");
        for (i, (v, vals)) in vars.iter().zip(case["clipped"].as_array().unwrap()).enumerate() {
            let got = values(g.get(v.as_tensor()).unwrap());
            let e = rel_err(&got, &vec_f32(vals));
            assert!(e <= 1e-6, "case {c} tensor {i}: clipped gradient error {e:.3e}");
        }
    }
}

#[test]
fn ema_matches_model_ema() {
    let fx = fixture("ema.json");
    let dev = Device::Cpu;
    let (model, ema) = (VarMap::new(), VarMap::new());
    let init = fx["init"].as_object().unwrap();
    for (name, t) in init {
        let s = shape(&t["shape"]);
        for vm in [&model, &ema] {
            vm.get(s.clone(), name, candle_nn::Init::Const(0.0), DType::F32, &dev).unwrap();
            let vals = Tensor::from_vec(vec_f32(&t["values"]), s.clone(), &dev).unwrap();
            vm.data().lock().unwrap()[name].set(&vals).unwrap();
        }
    }
    let mut e = ModelEma::new(&model, ema, 0).unwrap();
    let mut worst = 0.0f64;
    for u in fx["updates"].as_array().unwrap() {
        for (name, vals) in u["model"].as_object().unwrap() {
            let d = model.data().lock().unwrap();
            d[name].set(&Tensor::from_vec(vec_f32(vals), d[name].shape(), &dev).unwrap()).unwrap();
        }
        e.update().unwrap();
        assert_eq!(e.updates, u["updates"].as_u64().unwrap());
        assert!((e.decay_at(e.updates) - f(&u["d"])).abs() < 1e-15);
        let d = e.varmap.data().lock().unwrap();
        for (name, vals) in u["ema"].as_object().unwrap() {
            let (g, w) = (values(d[name].as_tensor()), vec_f32(vals));
            // ema = d·ema + (1 − d)·model: the error scale is the larger input
            let scale = vec_f32(&u["model"][name]);
            if std::env::var("OPTIM_DEBUG").is_ok() {
                for (k, (a, b)) in g.iter().zip(&w).enumerate() {
                    if rel_err_scaled(&[*a], &[*b], &scale[k..k + 1]) > 1e-6 {
                        println!("  EMA update {} {name}[{k}]: {a:e} vs {b:e}", e.updates);
                    }
                }
            }
            worst = worst.max(rel_err_scaled(&g, &w, &scale));
        }
    }
    println!("EMA: worst relative error {worst:.3e}");
    assert!(worst <= EMA_TOL, "EMA: worst relative error {worst:.3e}");
}

#[test]
fn schedule_matches_ultralytics() {
    let fx = fixture("schedule.json");
    for c in fx["lf"].as_array().unwrap() {
        let (epochs, lrf) = (c["epochs"].as_u64().unwrap() as usize, f(&c["lrf"]));
        for (cos_lr, key) in [(false, "linear"), (true, "cos")] {
            let s = LrSchedule { epochs, lrf, cos_lr };
            for (e, want) in c[key].as_array().unwrap().iter().enumerate() {
                let got = s.factor(e);
                assert!((got - f(want)).abs() <= 1e-15, "{key} epochs {epochs} lrf {lrf} epoch {e}: {got} vs {want}");
            }
        }
    }
    for c in fx["warmup_iterations"].as_array().unwrap() {
        let got = schedule::warmup_iterations(
            f(&c["warmup_epochs"]),
            c["epochs"].as_u64().unwrap() as usize,
            c["nb"].as_u64().unwrap() as usize,
        );
        assert_eq!(got as u64, c["nw"].as_u64().unwrap(), "{c}");
    }
    for c in fx["warmup"].as_array().unwrap() {
        let w = Warmup {
            iterations: c["nw"].as_u64().unwrap() as usize,
            accumulate: c["acc0"].as_u64().unwrap() as usize,
            lr0: f(&c["lr0"]),
            warmup_bias_lr: f(&c["warmup_bias_lr"]),
            warmup_momentum: f(&c["warmup_momentum"]),
            momentum: f(&c["momentum"]),
        };
        let s = LrSchedule {
            epochs: c["epochs"].as_u64().unwrap() as usize,
            lrf: f(&c["lrf"]),
            cos_lr: c["cos_lr"].as_bool().unwrap(),
        };
        for r in c["rows"].as_array().unwrap() {
            let (ni, epoch) = (r["ni"].as_u64().unwrap() as usize, r["epoch"].as_u64().unwrap() as usize);
            let got = w.at(ni, epoch, &s);
            assert_eq!(got.is_some(), r["warm"].as_bool().unwrap(), "ni {ni}");
            if let Some(g) = got {
                assert_eq!(g.accumulate as u64, r["accumulate"].as_u64().unwrap(), "ni {ni}: accumulate");
                for k in 0..3 {
                    let want = f(&r["lr"][k]);
                    assert!((g.lr[k] - want).abs() <= 1e-15, "ni {ni} group {k}: lr {} vs {want}", g.lr[k]);
                }
                assert!((g.momentum - f(&r["momentum"])).abs() <= 1e-15, "ni {ni}: momentum");
            }
        }
    }
}
