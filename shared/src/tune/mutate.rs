//! Mutation: the next iteration's hyper-parameters from the results so far, as ultralytics
//! 8.4.190 `Tuner._mutate` computes them.
//!
//! In order: the first iteration trains the base cfg's values. Later ones pick a parent among
//! the best 9 results (weighted by fitness above the worst of them), mutate each mutable key with
//! probability 0.5 by a normal step of `sigma · decay · gain` in the space normalised to [0, 1]
//! (decay shrinks sigma by up to 20 % as the best result grows stale; the step is at least the
//! key's resolution, 1 for integer keys and 1e-5 otherwise), clip to the bounds, and round
//! (5 decimals, integers for integer keys). From 30 results on, with probability
//! 0.4 · confidence the step is drawn from the elite's covariance instead (reflected into
//! [0, 1]). A candidate equal to any earlier one is redrawn (100 tries), then uniform random
//! genes are tried (100 more), so every iteration trains values no other iteration trained.
//!
//! Differences from ultralytics, both deliberate: the random stream is seeded per iteration
//! (`seed`, iteration number) instead of numpy's unseeded generator, so a tuning run can be
//! replayed; and iterations other workers have claimed but not finished count as "existing"
//! (ultralytics' MongoDB mode does the same for the default generation), so two workers never
//! train the same values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::space::Space;
use crate::error::{Error, Result};

/// Parents considered (ultralytics' `n`).
const PARENTS: usize = 9;
/// Normalised mutation sigma (ultralytics' `sigma`).
const SIGMA: f64 = 0.2;

/// One earlier iteration: its fitness and its values, in the space's key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub fitness: f64,
    pub values: Vec<f64>,
}

/// What the mutation knows: finished iterations in file order, values being trained by other
/// workers right now, and the base cfg's values (the first generation).
pub struct History<'a> {
    pub finished: &'a [Trial],
    pub pending: &'a [Vec<f64>],
    pub defaults: &'a [f64],
}

/// The random stream of one iteration: the same (seed, iteration) gives the same draws.
pub fn iteration_rng(seed: u64, iteration: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ iteration.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The values the next iteration trains, in the space's key order.
pub fn mutate(space: &Space, h: &History, rng: &mut impl Rng) -> Result<Vec<f64>> {
    if h.finished.is_empty() && h.pending.is_empty() {
        return Ok(constrain(space, h.defaults));
    }
    // With nothing finished yet but the defaults being trained elsewhere, mutate from the
    // defaults with fitness 0 (ultralytics' MongoDB workers do this).
    let seeded;
    let finished: &[Trial] = if h.finished.is_empty() {
        seeded = [Trial { fitness: 0.0, values: constrain(space, h.defaults) }];
        &seeded
    } else {
        h.finished
    };
    let ng = space.dims.len();
    let fit: Vec<f64> = finished.iter().map(|t| round_to(t.fitness, 5)).collect();
    let stale = finished.len() - 1 - argmax(&fit);
    let mut order: Vec<usize> = (0..finished.len()).collect();
    order.sort_by(|&a, &b| finished[b].fitness.total_cmp(&finished[a].fitness));
    let x: Vec<&Trial> = order.iter().take(PARENTS).map(|&i| &finished[i]).collect();
    let span: Vec<f64> = space.dims.iter().map(|d| d.span()).collect();
    let mutable: Vec<bool> = span.iter().map(|&s| s > 0.0).collect();
    let n_mutable = mutable.iter().filter(|&&m| m).count();
    if n_mutable == 0 {
        return Err(Error::config("the tune space is exhausted: every key has min == max, so no mutation is possible")
            .with_hint("give at least one key a range (min < max)"));
    }
    let normalise = |values: &[f64]| -> Vec<f64> {
        (0..ng).map(|i| if mutable[i] { (values[i] - space.dims[i].min) / span[i] } else { 0.0 }).collect()
    };
    let population: Vec<Vec<f64>> = x.iter().map(|t| normalise(&t.values)).collect();
    let worst = x.iter().map(|t| t.fitness).fold(f64::INFINITY, f64::min);
    let mut weights: Vec<f64> = x.iter().map(|t| t.fitness - worst + 1e-6).collect();
    let total: f64 = weights.iter().sum();
    if !weights.iter().all(|w| w.is_finite()) || total == 0.0 {
        weights = vec![1.0; x.len()];
    }
    let decay = 1.0 - 0.2 * (stale as f64 / 25.0).min(1.0);
    let scale: Vec<f64> = (0..ng)
        .map(|i| {
            let d = &space.dims[i];
            let resolution = if d.int { 1.0 } else { 1e-5 };
            let floor = if mutable[i] { resolution / span[i] } else { 0.0 };
            (SIGMA * decay * d.gain).max(floor)
        })
        .collect();
    let mut existing: Vec<&[f64]> = finished.iter().map(|t| t.values.as_slice()).collect();
    existing.extend(h.pending.iter().map(|v| v.as_slice()));

    // From 30 results: the elite's covariance (ultralytics' CMA-like step).
    let elite_step = (finished.len() >= 30).then(|| {
        let n_elite = ((finished.len() as f64 * 0.2).ceil() as usize).min(30);
        let confidence = (n_elite as f64 / n_mutable as f64).min(1.0);
        let elite: Vec<Vec<f64>> = order[..n_elite].iter().map(|&i| normalise(&finished[i].values)).collect();
        let mut cov = covariance(&elite);
        for (i, row) in cov.iter_mut().enumerate() {
            for v in row.iter_mut() {
                *v *= decay * decay * confidence;
            }
            row[i] += scale[i] * scale[i] / n_mutable as f64;
        }
        (cholesky(&cov), confidence)
    });

    for attempt in 0..200 {
        let parent = &population[weighted_choice(&weights, rng)];
        let genes: Vec<f64> = if attempt < 100 {
            let mask: Vec<bool> = (0..ng).map(|i| rng.gen::<f64>() < 0.5 && mutable[i]).collect();
            match &elite_step {
                Some((Some(chol), confidence)) if rng.gen::<f64>() < 0.4 * confidence => {
                    let draw = multivariate_normal(parent, chol, rng);
                    (0..ng)
                        .map(|i| if mask[i] { 1.0 - ((draw[i].rem_euclid(2.0)) - 1.0).abs() } else { parent[i] })
                        .collect()
                }
                _ => (0..ng)
                    .map(|i| {
                        let z = standard_normal(rng);
                        let step = if mask[i] { z * scale[i] } else { 0.0 };
                        (parent[i] + step).clamp(0.0, 1.0)
                    })
                    .collect(),
            }
        } else {
            (0..ng).map(|i| if mutable[i] { rng.gen::<f64>() } else { parent[i] }).collect()
        };
        let values: Vec<f64> = (0..ng).map(|i| space.dims[i].min + genes[i] * span[i]).collect();
        let values = constrain(space, &values);
        if !existing.iter().any(|e| *e == values.as_slice()) {
            return Ok(values);
        }
    }
    Err(Error::config("unable to generate a hyper-parameter mutation that no earlier iteration trained")
        .with_hint("the space is too small for this many iterations: widen the bounds or lower --iterations"))
}

/// Clip to the bounds and round as ultralytics' `_constrain`: integer keys to an integer inside
/// the bounds (Python's `round`, ties to even), others to 5 decimals.
pub fn constrain(space: &Space, values: &[f64]) -> Vec<f64> {
    space
        .dims
        .iter()
        .zip(values)
        .map(|(d, &v)| {
            if d.int {
                v.round_ties_even().clamp(d.min.ceil(), d.max.floor())
            } else {
                round_to(v, 5).clamp(d.min, d.max)
            }
        })
        .collect()
}

/// Python's `round(v, digits)`: the double nearest to the correctly rounded decimal (Rust's
/// `{:.N}` formatting rounds the exact binary value, as CPython does).
pub fn round_to(v: f64, digits: usize) -> f64 {
    if !v.is_finite() {
        return v;
    }
    format!("{v:.digits$}").parse().unwrap_or(v)
}

/// First index of the largest value (numpy's `argmax`).
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn weighted_choice(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Sample covariance of the rows (numpy `cov(rowvar=False)`, ddof 1).
fn covariance(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = rows.len();
    let d = rows[0].len();
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
    let mut cov = vec![vec![0.0; d]; d];
    for r in rows {
        for a in 0..d {
            for b in 0..d {
                cov[a][b] += (r[a] - mean[a]) * (r[b] - mean[b]);
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    cov.iter_mut().for_each(|row| row.iter_mut().for_each(|v| *v /= denom));
    cov
}

/// Lower Cholesky factor; None when the matrix is not positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    Some(l)
}

fn multivariate_normal(mean: &[f64], chol: &[Vec<f64>], rng: &mut impl Rng) -> Vec<f64> {
    let z: Vec<f64> = (0..mean.len()).map(|_| standard_normal(rng)).collect();
    (0..mean.len()).map(|i| mean[i] + (0..=i).map(|k| chol[i][k] * z[k]).sum::<f64>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::space::Dim;

    fn defaults(space: &Space) -> Vec<f64> {
        let hyp = crate::config::hyp::Hyp::default();
        space.dims.iter().map(|d| hyp.value(&d.key).and_then(|v| v.as_f64()).unwrap()).collect()
    }

    #[test]
    fn first_generation_is_the_base_cfg() {
        let space = Space::default();
        let d = defaults(&space);
        let h = History { finished: &[], pending: &[], defaults: &d };
        let v = mutate(&space, &h, &mut iteration_rng(0, 1)).unwrap();
        assert_eq!(v, constrain(&space, &d));
        assert_eq!(v[0], 0.01);
    }

    /// A property test over many draws: bounds kept, integers integral, 5 decimals, a new value
    /// every time, and the step size follows sigma · gain (momentum's gain 0.3 moves it ~0.3× as
    /// far as a gain-1 key).
    #[test]
    fn mutations_keep_the_rules() {
        let space = Space::default();
        let d = defaults(&space);
        let mut finished = vec![Trial { fitness: 0.3, values: constrain(&space, &d) }];
        let mut rng = iteration_rng(7, 2);
        let (mut steps_momentum, mut steps_lrf, mut changed_keys, mut interior_keys) =
            (Vec::new(), Vec::new(), 0usize, 0usize);
        for it in 0..400 {
            let h = History { finished: &finished[..1], pending: &[], defaults: &d };
            let v = mutate(&space, &h, &mut rng).unwrap();
            let parent = &finished[0].values;
            assert_ne!(&v, parent, "draw {it} changed nothing");
            for (i, dim) in space.dims.iter().enumerate() {
                assert!(
                    v[i] >= dim.min && v[i] <= dim.max,
                    "{} = {} outside [{}, {}]",
                    dim.key,
                    v[i],
                    dim.min,
                    dim.max
                );
                if dim.int {
                    assert_eq!(v[i].fract(), 0.0);
                } else {
                    assert_eq!(round_to(v[i], 5), v[i]);
                }
                // Keys strictly inside their bounds, not integer: a mutated one moves.
                if !dim.int && parent[i] > dim.min && parent[i] < dim.max {
                    interior_keys += 1;
                    changed_keys += usize::from(v[i] != parent[i]);
                }
            }
            let m = space.dims.iter().position(|x| x.key == "momentum").unwrap();
            let l = space.dims.iter().position(|x| x.key == "lrf").unwrap();
            if v[m] != parent[m] {
                steps_momentum.push(((v[m] - parent[m]) / space.dims[m].span()).abs());
            }
            if v[l] != parent[l] && v[l] > space.dims[l].min && v[l] < space.dims[l].max {
                steps_lrf.push(((v[l] - parent[l]) / space.dims[l].span()).abs());
            }
            if it == 0 {
                finished.push(Trial { fitness: 0.1, values: v });
            }
        }
        // About half the keys change per draw (mask probability 0.5).
        let frac = changed_keys as f64 / interior_keys as f64;
        assert!((0.4..0.6).contains(&frac), "changed fraction {frac}");
        // Mean |N(0, s)| = s·sqrt(2/pi): momentum 0.2·0.3, lrf 0.2 (decay 1: the best is the newest).
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let expect_m = 0.2 * 0.3 * (2.0 / std::f64::consts::PI).sqrt();
        assert!(
            (mean(&steps_momentum) / expect_m - 1.0).abs() < 0.25,
            "momentum step {} vs {expect_m}",
            mean(&steps_momentum)
        );
        assert!(mean(&steps_lrf) > 2.0 * mean(&steps_momentum), "gain not honoured");
    }

    #[test]
    fn pending_and_finished_are_never_repeated() {
        let space = Space { dims: vec![Dim { key: "close_mosaic".into(), min: 0.0, max: 3.0, gain: 1.0, int: true }] };
        let d = [10.0];
        let finished = vec![Trial { fitness: 0.5, values: vec![3.0] }, Trial { fitness: 0.2, values: vec![1.0] }];
        let pending = vec![vec![0.0]];
        let h = History { finished: &finished, pending: &pending, defaults: &d };
        for s in 0..50 {
            assert_eq!(mutate(&space, &h, &mut iteration_rng(s, 3)).unwrap(), vec![2.0]);
        }
        let pending = vec![vec![0.0], vec![2.0]];
        let h = History { finished: &finished, pending: &pending, defaults: &d };
        assert!(mutate(&space, &h, &mut iteration_rng(1, 5)).is_err());
        // The defaults being trained elsewhere: the second worker mutates away from them.
        let h = History { finished: &[], pending: &[vec![3.0]], defaults: &d };
        assert_ne!(mutate(&space, &h, &mut iteration_rng(1, 2)).unwrap(), vec![3.0]);
    }

    #[test]
    fn exhausted_space_is_an_error() {
        let space = Space { dims: vec![Dim { key: "lr0".into(), min: 0.01, max: 0.01, gain: 1.0, int: false }] };
        let f = [Trial { fitness: 0.1, values: vec![0.01] }];
        let h = History { finished: &f, pending: &[], defaults: &[0.01] };
        assert!(format!("{}", mutate(&space, &h, &mut iteration_rng(0, 2)).unwrap_err()).contains("exhausted"));
    }

    #[test]
    fn elite_covariance_branch_stays_in_bounds() {
        let space = Space::default();
        let d = defaults(&space);
        let mut rng = iteration_rng(3, 1);
        let mut finished = Vec::new();
        for i in 0..40 {
            let h = History { finished: &finished, pending: &[], defaults: &d };
            let v = mutate(&space, &h, &mut rng).unwrap();
            for (x, dim) in v.iter().zip(&space.dims) {
                assert!(*x >= dim.min && *x <= dim.max);
            }
            finished.push(Trial { fitness: (i as f64 * 0.37).sin().abs(), values: v });
        }
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round_to(0.123456, 5), 0.12346);
        assert_eq!(round_to(1e-5, 5), 1e-5);
        assert_eq!(
            constrain(
                &Space { dims: vec![Dim { key: "close_mosaic".into(), min: 0.0, max: 10.0, gain: 1.0, int: true }] },
                &[2.5]
            ),
            vec![2.0]
        );
        assert_eq!(covariance(&[vec![0.0, 1.0], vec![2.0, 3.0]]), vec![vec![2.0, 2.0], vec![2.0, 2.0]]);
        assert!(cholesky(&[vec![1.0, 2.0], vec![2.0, 1.0]]).is_none());
        let l = cholesky(&[vec![4.0, 2.0], vec![2.0, 2.0]]).unwrap();
        assert_eq!(l, vec![vec![2.0, 0.0], vec![1.0, 1.0]]);
    }
}
