//! Gradient checks for `kubeyolo::nn::ops`: the fast CPU conv against candle's stock conv2d
//! (forward and both gradients, many shapes) and against finite differences; the workaround
//! ops (upsample, SPPF max-pool, atan, BCE, softmax) against their definitions.
//!
//! Shapes stay small so the whole file runs in seconds on CI's 2 cores.

use candle_core::{Device, Tensor, Var, D};
use kubeyolo::nn::ops;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values in [-1, 1) (no RNG crate state shared across tests).
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// max |a − b| / max |b|: relative error at the tensor's scale.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = max_abs(&(a - b).unwrap());
    d / max_abs(b).max(1e-12)
}

/// Direct-loop convolution in f64: forward and, for an output gradient `r`, the input and
/// weight gradients. The independent reference for shapes where candle's stock conv backward
/// fails (stride 2 with (H + 2p − k) not divisible by 2 — every stride-2 conv of YOLOv8 at even
/// sizes: its conv-transpose input gradient comes out one pixel short).
#[allow(clippy::type_complexity)]
fn naive_conv(x: &Tensor, w: &Tensor, r: &Tensor, s: usize, p: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (o, _, k, _) = w.dims4().unwrap();
    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect();
    let wv: Vec<f64> = w.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect();
    let rv: Vec<f64> = r.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect();
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
    let (mut y, mut dx, mut dw) = (vec![0.0; n * o * oh * ow], vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for b in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((b * o + oc) * oh + oy) * ow + ox;
                    for ic in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let iy = (oy * s + ki) as isize - p as isize;
                                let ix = (ox * s + kj) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * c + ic) * h + iy as usize) * wd + ix as usize;
                                let wi = ((oc * c + ic) * k + ki) * k + kj;
                                y[yi] += xv[xi] * wv[wi];
                                dx[xi] += rv[yi] * wv[wi];
                                dw[wi] += rv[yi] * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (y, dx, dw)
}

/// max |a − b| / max |b| against an f64 reference.
fn rel_err64(a: &Tensor, b: &[f64]) -> f64 {
    let av = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(av.len(), b.len());
    let d = av.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max);
    d / b.iter().map(|v| v.abs()).fold(1e-12, f64::max)
}

/// Forward, input gradient, weight gradient and bias gradient of `ops::conv2d` against stock
/// candle (where its backward works) and against the direct loops in f64 (always).
fn check_conv(n: usize, c: usize, h: usize, w: usize, o: usize, k: usize, stride: usize, pad: usize, bias: bool) {
    let seed = (n * 1000 + c * 100 + h * 10 + w + o + k + stride + pad) as u64;
    let x = Var::from_tensor(&rand(&[n, c, h, w], seed)).unwrap();
    let wt = Var::from_tensor(&rand(&[o, c, k, k], seed + 1)).unwrap();
    let b = Var::from_tensor(&rand(&[o], seed + 2)).unwrap();
    let bias_ref = if bias { Some(b.as_tensor()) } else { None };
    let y = ops::conv2d(x.as_tensor(), wt.as_tensor(), bias_ref, stride, pad).unwrap();
    let what = format!("n{n} c{c} {h}x{w} o{o} k{k} s{stride} p{pad} bias {bias}");
    // A loss that weights every output differently so every gradient entry matters.
    let r = rand(y.dims(), seed + 3);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (gx, gw) = (g.get(x.as_tensor()).unwrap(), g.get(wt.as_tensor()).unwrap());

    // Direct loops in f64.
    let (y64, dx64, dw64) = naive_conv(x.as_tensor(), wt.as_tensor(), &r, stride, pad);
    let y_nb = if bias { y.broadcast_sub(&b.as_tensor().reshape((1, o, 1, 1)).unwrap()).unwrap() } else { y.clone() };
    for (name, t, want) in [("forward", &y_nb, &y64), ("input grad", gx, &dx64), ("weight grad", gw, &dw64)] {
        let e = rel_err64(t, want);
        assert!(e < 1e-5, "{name} vs direct loops, {what}: rel err {e}");
    }

    // Stock candle.
    let mut y_ref = x.as_tensor().conv2d(wt.as_tensor(), pad, stride, 1, 1).unwrap();
    if bias {
        y_ref = y_ref.broadcast_add(&b.as_tensor().reshape((1, o, 1, 1)).unwrap()).unwrap();
    }
    assert_eq!(y.dims(), y_ref.dims(), "{what}");
    let e = rel_err(&y, &y_ref);
    assert!(e < 1e-5, "forward {what}: rel err {e}");
    let Ok(g_ref) = (&y_ref * &r).unwrap().sum_all().unwrap().backward() else {
        // candle's own backward fails on this shape (see `naive_conv`); the f64 check above holds.
        return;
    };
    for (name, v) in [("input", &x), ("weight", &wt)] {
        let a = g.get(v.as_tensor()).unwrap_or_else(|| panic!("no {name} grad {what}"));
        let b = g_ref.get(v.as_tensor()).unwrap();
        let e = rel_err(a, b);
        assert!(e < 1e-5, "{name} grad {what}: rel err {e}");
    }
    if bias {
        let e = rel_err(g.get(b.as_tensor()).unwrap(), g_ref.get(b.as_tensor()).unwrap());
        assert!(e < 1e-5, "bias grad {what}: rel err {e}");
    }
}

#[test]
fn conv_matches_stock_candle_on_many_shapes() {
    for &(n, c, h, w, o) in &[(1, 3, 7, 9, 4), (2, 5, 8, 8, 6), (3, 4, 11, 6, 5), (16, 3, 5, 7, 2)] {
        for &k in &[1, 3] {
            for &stride in &[1, 2] {
                for &pad in &[0, 1] {
                    check_conv(n, c, h, w, o, k, stride, pad, false);
                }
            }
        }
    }
    check_conv(2, 3, 6, 5, 4, 3, 1, 1, true);
    check_conv(2, 3, 6, 5, 4, 1, 1, 0, true);
    // Larger channel counts (yolov8n-like) at a tiny spatial size.
    check_conv(2, 32, 6, 6, 64, 3, 2, 1, false);
    check_conv(16, 16, 4, 4, 8, 1, 1, 0, false);
}

#[test]
fn conv_gradients_match_finite_differences() {
    // L(x, w) = Σ conv(x, w) ⊙ r is linear in x and in w separately, so a central difference
    // along a random direction is exact up to rounding: check ⟨∇L, v⟩ against it.
    for &(n, c, h, w, o, k, s, p) in &[(2, 3, 7, 6, 4, 3, 2, 1), (1, 2, 5, 5, 3, 3, 1, 1), (3, 4, 5, 4, 2, 1, 1, 0)] {
        let x = Var::from_tensor(&rand(&[n, c, h, w], 11)).unwrap();
        let wt = Var::from_tensor(&rand(&[o, c, k, k], 12)).unwrap();
        let loss = |x: &Tensor, wt: &Tensor, r: Option<&Tensor>| {
            let y = ops::conv2d(x, wt, None, s, p).unwrap();
            let r = r.cloned().unwrap_or_else(|| rand(y.dims(), 13));
            (y * r).unwrap().sum_all().unwrap()
        };
        let l = loss(x.as_tensor(), wt.as_tensor(), None);
        let r = rand(ops::conv2d(x.as_tensor(), wt.as_tensor(), None, s, p).unwrap().dims(), 13);
        let grads = l.backward().unwrap();
        for (which, var) in [(0, &x), (1, &wt)] {
            let v = rand(var.dims(), 14 + which);
            let plus = (var.as_tensor() + &v).unwrap();
            let minus = (var.as_tensor() - &v).unwrap();
            let (lp, lm) = if which == 0 {
                (loss(&plus, wt.as_tensor(), Some(&r)), loss(&minus, wt.as_tensor(), Some(&r)))
            } else {
                (loss(x.as_tensor(), &plus, Some(&r)), loss(x.as_tensor(), &minus, Some(&r)))
            };
            let fd = ((lp - lm).unwrap() / 2.0).unwrap().to_scalar::<f32>().unwrap();
            let an = (grads.get(var.as_tensor()).unwrap() * &v).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!((fd - an).abs() <= 1e-4 * fd.abs().max(1.0), "which {which}: fd {fd} analytic {an}");
        }
    }
}

#[test]
fn upsample_gradient_accumulates() {
    // up(x).sum() + 3·x.sum() must give gradient 4 + 3 = 7 everywhere (stock candle gives 3).
    let x = Var::from_tensor(&rand(&[2, 3, 4, 5], 1)).unwrap();
    let up = ops::upsample_nearest2x(x.as_tensor()).unwrap();
    assert_eq!(up.dims(), &[2, 3, 8, 10]);
    let stock = x.as_tensor().upsample_nearest2d(8, 10).unwrap();
    assert_eq!(max_abs(&(&up - &stock).unwrap()), 0.0);
    let l = (up.sum_all().unwrap() + (x.as_tensor().sum_all().unwrap() * 3.0).unwrap()).unwrap();
    let g = l.backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap();
    assert_eq!(max_abs(&(gx - 7.0).unwrap()), 0.0);
    // A non-uniform output gradient r: each input pixel gets the sum of its 2×2 block of r.
    let r = rand(&[2, 3, 8, 10], 2);
    let g = (&up * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let want = r.reshape((2, 3, 4, 2, 5, 2)).unwrap().sum(5).unwrap().sum(3).unwrap();
    assert!(rel_err(g.get(x.as_tensor()).unwrap(), &want) < 1e-6);
}

/// Reference max-pool (k, stride 1, pad k/2, −∞ padding) computed element by element.
fn max_pool_ref(x: &[f32], n: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let p = (k / 2) as isize;
    let mut out = vec![0f32; x.len()];
    for b in 0..n * c {
        for i in 0..h as isize {
            for j in 0..w as isize {
                let mut m = f32::NEG_INFINITY;
                for di in -p..=p {
                    for dj in -p..=p {
                        let (y, xx) = (i + di, j + dj);
                        if y >= 0 && y < h as isize && xx >= 0 && xx < w as isize {
                            m = m.max(x[b * h * w + y as usize * w + xx as usize]);
                        }
                    }
                }
                out[b * h * w + i as usize * w + j as usize] = m;
            }
        }
    }
    out
}

#[test]
fn max_pool_same_forward_and_gradient() {
    let (n, c, h, w, k) = (2, 3, 7, 6, 5);
    // Negative values everywhere: zero padding would show up as 0 maxima.
    let x = Var::from_tensor(&(rand(&[n, c, h, w], 5) - 2.0).unwrap()).unwrap();
    let y = ops::max_pool_same(x.as_tensor(), k).unwrap();
    let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let xv = x.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(yv, max_pool_ref(&xv, n, c, h, w, k));
    // Gradient: each output's upstream gradient goes to its window's maximum.
    let r = rand(&[n, c, h, w], 6);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rv = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut expect = vec![0f32; xv.len()];
    let p = (k / 2) as isize;
    for b in 0..n * c {
        for i in 0..h as isize {
            for j in 0..w as isize {
                let o = b * h * w + i as usize * w + j as usize;
                let mut arg = 0;
                for di in -p..=p {
                    for dj in -p..=p {
                        let (yy, xx) = (i + di, j + dj);
                        if yy >= 0 && yy < h as isize && xx >= 0 && xx < w as isize {
                            let q = b * h * w + yy as usize * w + xx as usize;
                            if xv[q] == yv[o] {
                                arg = q;
                            }
                        }
                    }
                }
                expect[arg] += rv[o];
            }
        }
    }
    for (a, e) in gx.iter().zip(&expect) {
        assert!((a - e).abs() < 1e-5, "max-pool grad {a} vs {e}");
    }
}

#[test]
fn atan_value_and_gradient() {
    let vals = [-1e4f32, -30.0, -2.5, -1.0, -0.7, -0.3, -1e-3, 0.0, 1e-3, 0.2, 0.41, 0.9, 1.0, 1.7, 8.0, 500.0];
    let x = Var::from_slice(&vals, vals.len(), &Device::Cpu).unwrap();
    let y = ops::atan(x.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let yv = y.to_vec1::<f32>().unwrap();
    let gv = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for ((v, a), d) in vals.iter().zip(&yv).zip(&gv) {
        assert!((a - v.atan()).abs() < 2e-6, "atan({v}) = {a}, want {}", v.atan());
        let want = 1.0 / (1.0 + v * v);
        assert!((d - want).abs() < 1e-5 * want.max(1e-3) + 1e-7, "atan'({v}) = {d}, want {want}");
    }
}

#[test]
fn bce_with_logits_is_stable_with_exact_gradient() {
    let xs = [-200.0f32, -20.0, -1.5, 0.0, 0.3, 4.0, 90.0];
    let ts = [0.0f32, 1.0, 0.25, 0.5, 1.0, 0.0, 1.0];
    let x = Var::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
    let t = Tensor::from_slice(&ts, ts.len(), &Device::Cpu).unwrap();
    let l = ops::bce_with_logits(x.as_tensor(), &t).unwrap();
    let g = l.sum_all().unwrap().backward().unwrap();
    let lv = l.to_vec1::<f32>().unwrap();
    let gv = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    for i in 0..xs.len() {
        let (x, t) = (xs[i] as f64, ts[i] as f64);
        let want = x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
        assert!(
            lv[i].is_finite() && (lv[i] as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
            "bce({x},{t}) {} vs {want}",
            lv[i]
        );
        let gwant = 1.0 / (1.0 + (-x).exp()) - t;
        assert!((gv[i] as f64 - gwant).abs() < 1e-6, "bce'({x},{t}) {} vs {gwant}", gv[i]);
    }
}

#[test]
fn softmax_last_keeps_gradient() {
    let x = Var::from_tensor(&rand(&[3, 5], 9)).unwrap();
    let s = ops::softmax_last(x.as_tensor()).unwrap();
    let sums = s.sum(D::Minus1).unwrap().to_vec1::<f32>().unwrap();
    assert!(sums.iter().all(|v| (v - 1.0).abs() < 1e-6));
    // d/dx of s[.., 0] is non-zero.
    let g = s.narrow(1, 0, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(max_abs(g.get(x.as_tensor()).unwrap()) > 1e-3);
}

/// The fused BatchNorm(+SiLU) against candle_nn's BatchNorm::forward_train (+ silu): output,
/// gradients of input, weight and bias, and the running statistics it updates.
fn check_bn(n: usize, c: usize, h: usize, w: usize, silu: bool) {
    use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
    let cfg = BatchNormConfig { eps: 1e-3, remove_mean: true, affine: true, momentum: 0.03 };
    let make = || {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
        let bn = candle_nn::batch_norm(c, cfg, vb).unwrap();
        // Non-trivial weight/bias.
        let (g, b) = bn.weight_and_bias().unwrap();
        Var::from_tensor(g).unwrap().set(&(rand(&[c], 21) + 1.5).unwrap()).unwrap();
        Var::from_tensor(b).unwrap().set(&rand(&[c], 22)).unwrap();
        bn
    };
    let (bn, bn_ref) = (make(), make());
    let x = Var::from_tensor(&((rand(&[n, c, h, w], 23) * 3.0).unwrap() + 0.5).unwrap()).unwrap();
    let y = ops::batch_norm_train(x.as_tensor(), &bn, silu).unwrap();
    let mut y_ref = bn_ref.forward_train(x.as_tensor()).unwrap();
    if silu {
        y_ref = y_ref.silu().unwrap();
    }
    let what = format!("bn n{n} c{c} {h}x{w} silu {silu}");
    let e = rel_err(&y, &y_ref);
    assert!(e < 1e-5, "{what} forward: {e}");
    let r = rand(y.dims(), 24);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = (&y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (gw, gb) = bn.weight_and_bias().unwrap();
    let (gw_ref, gb_ref) = bn_ref.weight_and_bias().unwrap();
    for (name, a, b) in [
        ("input", g.get(x.as_tensor()).unwrap(), g_ref.get(x.as_tensor()).unwrap()),
        ("weight", g.get(gw).unwrap(), g_ref.get(gw_ref).unwrap()),
        ("bias", g.get(gb).unwrap(), g_ref.get(gb_ref).unwrap()),
    ] {
        let e = rel_err(a, b);
        assert!(e < 2e-5, "{what} {name} grad: {e}");
    }
    for (name, a, b) in [
        ("running_mean", bn.running_mean(), bn_ref.running_mean()),
        ("running_var", bn.running_var(), bn_ref.running_var()),
    ] {
        let e = rel_err(a, b);
        assert!(e < 1e-5, "{what} {name}: {e}");
    }
}

#[test]
fn batch_norm_train_matches_candle() {
    for &(n, c, h, w) in &[(1, 3, 5, 7), (4, 6, 3, 3), (16, 2, 4, 5)] {
        check_bn(n, c, h, w, false);
        check_bn(n, c, h, w, true);
    }
}

/// The fused training Conv block (`blocks::Conv::forward(x, true)` on CPU: one op for conv +
/// BatchNorm + SiLU) against the same block composed from `ops::conv2d` and
/// `ops::batch_norm_train`: output, gradients of input, conv weight, BatchNorm weight and bias,
/// and the running statistics.
fn check_conv_block(n: usize, c: usize, hw: (usize, usize), o: usize, k: usize, s: usize, act: bool) {
    use candle_nn::{VarBuilder, VarMap};
    use kubeyolo::nn::blocks::Conv;
    let make = || {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
        let conv = Conv::new(vb, c, o, k, s, None, act).unwrap();
        Var::from_tensor(&conv.weight).unwrap().set(&rand(&[o, c, k, k], 31)).unwrap();
        let (g, b) = conv.bn.weight_and_bias().unwrap();
        Var::from_tensor(g).unwrap().set(&(rand(&[o], 32) + 1.5).unwrap()).unwrap();
        Var::from_tensor(b).unwrap().set(&rand(&[o], 33)).unwrap();
        conv
    };
    let (fused, composed) = (make(), make());
    let x = Var::from_tensor(&((rand(&[n, c, hw.0, hw.1], 34) * 2.0).unwrap() + 0.3).unwrap()).unwrap();
    let y = fused.forward(x.as_tensor(), true).unwrap();
    let y_ref = ops::batch_norm_train(
        &ops::conv2d(x.as_tensor(), &composed.weight, None, s, k / 2).unwrap(),
        &composed.bn,
        act,
    )
    .unwrap();
    let what = format!("conv block n{n} c{c} {hw:?} o{o} k{k} s{s} act {act}");
    let e = rel_err(&y, &y_ref);
    assert!(e < 1e-5, "{what} forward: {e}");
    let r = rand(y.dims(), 35);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = (&y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (gw, gb) = fused.bn.weight_and_bias().unwrap();
    let (gw_ref, gb_ref) = composed.bn.weight_and_bias().unwrap();
    for (name, a, b) in [
        ("input", g.get(x.as_tensor()).unwrap(), g_ref.get(x.as_tensor()).unwrap()),
        ("conv weight", g.get(&fused.weight).unwrap(), g_ref.get(&composed.weight).unwrap()),
        ("bn weight", g.get(gw).unwrap(), g_ref.get(gw_ref).unwrap()),
        ("bn bias", g.get(gb).unwrap(), g_ref.get(gb_ref).unwrap()),
    ] {
        let e = rel_err(a, b);
        assert!(e < 1e-5, "{what} {name} grad: {e}");
    }
    for (name, a, b) in [
        ("running_mean", fused.bn.running_mean(), composed.bn.running_mean()),
        ("running_var", fused.bn.running_var(), composed.bn.running_var()),
    ] {
        let e = rel_err(a, b);
        assert!(e < 1e-5, "{what} {name}: {e}");
    }
}

#[test]
fn fused_conv_block_matches_composed_ops() {
    // k 1 and 3, stride 1 and 2, odd sizes, batch 1 (parallel inside each GEMM) and 16 (images
    // spread over threads), with and without SiLU.
    for &(n, c, hw, o, k, s, act) in &[
        (2, 3, (9, 7), 5, 3, 2, true),
        (3, 8, (10, 10), 16, 1, 1, true),
        (16, 4, (6, 6), 8, 3, 1, true),
        (1, 6, (5, 5), 4, 3, 1, false),
        (16, 5, (8, 6), 7, 3, 2, false),
        (4, 12, (4, 4), 6, 1, 1, false),
        // Stride-1 "same" convs run as shifted GEMMs (`nn::cpu::shifted`): odd, non-square, k 5.
        (3, 5, (7, 9), 6, 3, 1, true),
        (2, 3, (8, 6), 4, 5, 1, true),
    ] {
        check_conv_block(n, c, hw, o, k, s, act);
    }
}

/// A block built by `build` on a fresh VarMap, with deterministic random values in every
/// trainable variable (BatchNorm weights shifted to ~1.5); returns the variables sorted by name.
fn randomized<B>(build: impl Fn(candle_nn::VarBuilder) -> B) -> (Vec<(String, Var)>, B) {
    let vm = candle_nn::VarMap::new();
    let block = build(candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu));
    let mut names: Vec<(String, Var)> = vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, v)) in names.iter().enumerate() {
        let t = rand(v.dims(), 40 + i as u64);
        let t = if name.ends_with("bn.weight") { (t + 1.5).unwrap() } else { t };
        if !name.contains("running") {
            v.set(&t).unwrap();
        }
    }
    (names, block)
}

/// Fused output `y` against the composed `y_ref` (same input `x`): output, input gradient, every
/// trainable variable's gradient and every running statistic.
fn check_fused_block(
    what: &str,
    x: &Var,
    (y, vars): (Tensor, &[(String, Var)]),
    (y_ref, vars_ref): (Tensor, &[(String, Var)]),
) {
    let e = rel_err(&y, &y_ref);
    assert!(e < 1e-5, "{what} forward: {e}");
    let r = rand(y.dims(), 51);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_ref = (&y_ref * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let e = rel_err(g.get(x.as_tensor()).unwrap(), g_ref.get(x.as_tensor()).unwrap());
    assert!(e < 1e-5, "{what} input grad: {e}");
    assert_eq!(vars.len(), vars_ref.len());
    for ((name, v), (_, v_ref)) in vars.iter().zip(vars_ref) {
        if name.contains("running") {
            let e = rel_err(v.as_tensor(), v_ref.as_tensor());
            assert!(e < 1e-5, "{what} {name}: {e}");
        } else {
            let e = rel_err(g.get(v.as_tensor()).unwrap(), g_ref.get(v_ref.as_tensor()).unwrap());
            assert!(e < 1e-5, "{what} {name} grad: {e}");
        }
    }
}

/// The fused training C2f (`C2f::forward(x, true)` on CPU: one op, Convs writing into one
/// concatenation buffer) against the same block from candle ops (`forward_composed`).
fn check_c2f(nb: usize, c1: usize, c2: usize, n: usize, shortcut: bool, hw: (usize, usize)) {
    use kubeyolo::nn::blocks::C2f;
    let build = |vb: candle_nn::VarBuilder| C2f::new(vb, c1, c2, n, shortcut, 0.5).unwrap();
    let ((vars, fused), (vars_ref, composed)) = (randomized(build), randomized(build));
    let x = Var::from_tensor(&rand(&[nb, c1, hw.0, hw.1], 50)).unwrap();
    let y = fused.forward(x.as_tensor(), true).unwrap();
    let y_ref = composed.forward_composed(x.as_tensor(), true).unwrap();
    let what = format!("C2f nb{nb} c1 {c1} c2 {c2} n{n} shortcut {shortcut} {hw:?}");
    check_fused_block(&what, &x, (y, &vars), (y_ref, &vars_ref));
}

#[test]
fn fused_c2f_matches_composed_block() {
    check_c2f(16, 8, 8, 1, true, (6, 5));
    check_c2f(2, 6, 10, 2, false, (5, 5));
    check_c2f(1, 4, 4, 2, true, (4, 6));
    check_c2f(3, 12, 8, 3, true, (3, 3));
}

#[test]
fn fused_conv_block_matches_on_multi_band_images() {
    // 16 channels at 96×96 (k 3): the im2col matrix is 144×9216 floats (5.3 MB), processed in
    // bands of output rows; stride 2 with an odd size exercises the pairwise gather/scatter.
    check_conv_block(2, 16, (96, 96), 8, 3, 1, true);
    check_conv_block(2, 16, (97, 95), 8, 3, 2, true);
}

#[test]
fn max_pool_ties_go_to_the_first_maximum() {
    // A constant plane: every window ties; PyTorch sends each gradient to the window's first
    // element in row-major order, i.e. its clamped top-left corner.
    let (h, w, k) = (4usize, 5usize, 3usize);
    let x = Var::from_tensor(&Tensor::zeros((1, 1, h, w), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let y = ops::max_pool_same(x.as_tensor(), k).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut expect = vec![0f32; h * w];
    for i in 0..h {
        for j in 0..w {
            expect[i.saturating_sub(k / 2) * w + j.saturating_sub(k / 2)] += 1.0;
        }
    }
    assert_eq!(gx, expect);
}

#[test]
fn fused_detect_branch_matches_composed_branch() {
    use kubeyolo::nn::blocks::DetectBranch;
    for &(nb, cin, c, out, hw) in &[(16, 6, 8, 10, (5, 4)), (1, 4, 5, 3, (6, 6)), (3, 8, 4, 7, (7, 3))] {
        let build = |vb: candle_nn::VarBuilder| DetectBranch::new(vb, cin, c, out, -1.5).unwrap();
        let ((vars, fused), (vars_ref, composed)) = (randomized(build), randomized(build));
        let x = Var::from_tensor(&rand(&[nb, cin, hw.0, hw.1], 52)).unwrap();
        let y = fused.forward(x.as_tensor(), true).unwrap();
        let y_ref = composed.forward_composed(x.as_tensor(), true).unwrap();
        let what = format!("Detect branch nb{nb} cin {cin} c {c} out {out} {hw:?}");
        check_fused_block(&what, &x, (y, &vars), (y_ref, &vars_ref));
    }
}
