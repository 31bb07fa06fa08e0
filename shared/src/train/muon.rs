//! The Muon half of ultralytics 8.4's `MuSGD` (`ultralytics/optim/muon.py`): momentum, then a
//! quintic Newton–Schulz orthogonalisation of every matrix update, computed in bfloat16.
//!
//! Why bfloat16 emulation: ultralytics runs `zeropower_via_newtonschulz5` in `bfloat16`, and its
//! result (relative precision 2⁻⁸) *is* the update, so computing it in f32 would move the weights
//! by ~0.4 % of each update away from ultralytics' trajectory. Every tensor that PyTorch holds in
//! bf16 is rounded to bf16 here at the same point (round-to-nearest-even, as `c10::BFloat16`);
//! each matmul accumulates exact bf16 products in f32 and rounds once, as PyTorch's CPU/cuBLAS
//! bf16 GEMMs do, and `baddbmm`'s `β·C + α·A@B` is formed in f32 before its one rounding. The
//! tensors stay f32 in candle (holding bf16-representable values), so this runs on any device.
//!
//! ultralytics also batches the matrices of a param group: updates with the same column count and
//! scale share one zero-padded batch (rows padded, split so row counts span ≤ 16×), and the batch
//! is transposed when its *padded* row count exceeds its columns. Zeros stay zeros through the
//! iteration, but the transposition changes which products are rounded, so the batching is
//! reproduced too.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Newton–Schulz coefficients `(a, b, c)` of ultralytics' quintic iteration.
pub const NS_COEFFS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);
/// Newton–Schulz iterations.
pub const NS_STEPS: usize = 5;
/// Added to the Frobenius norm before the first division.
pub const NS_EPS: f64 = 1e-7;

/// Rounds f32 values to the nearest bfloat16 (ties to even), kept as f32.
fn bf16(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)
}

/// `zeropower_via_newtonschulz5` on a batch `(n, rows, cols)` (or one `(rows, cols)` matrix) of
/// f32 values; returns f32 tensors holding the bf16 result, shaped like the input.
pub fn zeropower_via_newtonschulz5(g: &Tensor) -> Result<Tensor> {
    let shape = g.shape().clone();
    let g3 = match g.rank() {
        2 => g.unsqueeze(0)?,
        3 => g.clone(),
        r => return Err(Error::internal(format!("Newton-Schulz needs a 2-D or 3-D tensor, got rank {r}"))),
    };
    let (_, rows, cols) = g3.dims3()?;
    let (a, b, c) = NS_COEFFS;
    let mut x = bf16(&g3.to_dtype(DType::F32)?)?;
    // X /= X.norm(dim=(-2, -1), keepdim=True) + eps: norm and sum are bf16 tensors in torch.
    let norm = bf16(&x.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?)?;
    let denom = bf16(&(norm + NS_EPS)?)?;
    x = bf16(&x.broadcast_div(&denom)?)?;
    let tall = rows > cols;
    if tall {
        x = x.transpose(1, 2)?.contiguous()?;
    }
    for _ in 0..NS_STEPS {
        let xt = x.transpose(1, 2)?.contiguous()?;
        let am = bf16(&x.matmul(&xt)?)?; // A = X @ X^T
        let aa = am.matmul(&am)?; // f32 accumulation, rounded only after the baddbmm sum
        let bm = bf16(&((&am * b)? + (aa * c)?)?)?; // B = b·A + c·A@A
        let bx = bm.matmul(&x)?;
        x = bf16(&((&x * a)? + bx)?)?; // X = a·X + B@X
    }
    if tall {
        x = x.transpose(1, 2)?.contiguous()?;
    }
    Ok(x.reshape(shape)?)
}

/// ultralytics' `muon_update` for the parameters of one param group: updates each momentum
/// buffer in place (`m = β·m + (1−β)·g`), forms the Nesterov update `β·m + (1−β)·g` (or `m`), and
/// returns it orthogonalised and scaled by `√max(1, g.size(-2) / g.size(-1))` — the last two
/// dimensions of the *gradient* (for a conv weight the kernel's, so 1), as ultralytics computes it.
pub fn muon_update(grads: &[Tensor], momentums: &mut [Tensor], beta: f64, nesterov: bool) -> Result<Vec<Tensor>> {
    if grads.len() != momentums.len() {
        return Err(Error::internal("muon_update: one momentum buffer per gradient"));
    }
    let mut updates = Vec::with_capacity(grads.len());
    for (g, m) in grads.iter().zip(momentums.iter_mut()) {
        *m = ((&*m * beta)? + (g * (1.0 - beta))?)?;
        updates.push(if nesterov { ((&*m * beta)? + (g * (1.0 - beta))?)? } else { m.clone() });
    }
    // Buckets by (columns, scale); BTreeMap for a fixed order (results do not depend on it).
    let mut buckets: BTreeMap<(usize, u64), Vec<(usize, Tensor)>> = BTreeMap::new();
    for (i, u) in updates.iter().enumerate() {
        let dims = grads[i].dims();
        if dims.len() < 2 {
            return Err(Error::internal(format!("Muon needs matrices or conv filters, got shape {dims:?}")));
        }
        let m = if dims.len() > 2 { u.flatten_from(1)? } else { u.contiguous()? };
        let ratio = dims[dims.len() - 2] as f64 / dims[dims.len() - 1] as f64;
        let scale = ratio.max(1.0).powf(0.5);
        buckets.entry((m.dim(1)?, scale.to_bits())).or_default().push((i, m));
    }
    let mut out: Vec<Option<Tensor>> = vec![None; updates.len()];
    for ((cols, scale_bits), mut items) in buckets {
        let scale = f64::from_bits(scale_bits);
        // Stable sort by descending rows; split where the first rows exceed 16× the next item's.
        items.sort_by_key(|(_, m)| std::cmp::Reverse(m.dim(0).unwrap_or(0)));
        let rows: Vec<usize> = items.iter().map(|(_, m)| m.dim(0)).collect::<candle_core::Result<_>>()?;
        let mut start = 0;
        for j in 1..=items.len() {
            if j == items.len() || rows[start] > 16 * rows[j] {
                let chunk = &items[start..j];
                let r0 = rows[start];
                let padded: Vec<Tensor> = chunk
                    .iter()
                    .map(|(_, m)| m.pad_with_zeros(0, 0, r0 - m.dim(0)?)?.unsqueeze(0))
                    .collect::<candle_core::Result<_>>()?;
                let x = Tensor::cat(&padded, 0)?;
                debug_assert_eq!(x.dim(2)?, cols);
                let x = (zeropower_via_newtonschulz5(&x)? * scale)?;
                for (k, (i, m)) in chunk.iter().enumerate() {
                    let r = m.dim(0)?;
                    out[*i] = Some(x.get(k)?.narrow(0, 0, r)?.reshape(grads[*i].shape())?);
                }
                start = j;
            }
        }
    }
    out.into_iter().map(|u| u.ok_or_else(|| Error::internal("muon_update: an update was not computed"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The iteration drives every singular value towards ~1 (ultralytics: into about
    /// [0.5, 1.5]); tall and wide inputs give the transpose of each other's result.
    #[test]
    fn orthogonalises_and_transposes() {
        let dev = Device::Cpu;
        let g = Tensor::new(&[[3.0f32, 1.0, 0.5, -1.0], [0.2, -2.0, 1.0, 0.3], [1.0, 0.0, -0.5, 2.0]], &dev).unwrap();
        let x = zeropower_via_newtonschulz5(&g).unwrap();
        let xxt = x.matmul(&x.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in xxt.iter().enumerate() {
            assert!(row[i] > 0.4 && row[i] < 2.3, "diagonal {row:?}");
        }
        let xt = zeropower_via_newtonschulz5(&g.t().unwrap().contiguous().unwrap()).unwrap();
        let diff = (xt.t().unwrap() - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0);
        // every value is bf16-representable
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|f| f.to_bits() & 0xffff == 0));
    }

    #[test]
    fn scale_reads_the_last_two_dims() {
        let dev = Device::Cpu;
        let g2 = Tensor::ones((8, 2), DType::F32, &dev).unwrap();
        let mut m = vec![g2.zeros_like().unwrap()];
        let u = muon_update(std::slice::from_ref(&g2), &mut m, 0.9, true).unwrap();
        // rank-1 matrix of ones: orthogonalised entries ~ 1/4, times √(8/2) = 2
        let v = u[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (x - v[0]).abs() < 1e-6) && v[0] > 0.3, "{v:?}");
        assert!(muon_update(
            &[Tensor::ones(3, DType::F32, &dev).unwrap()],
            &mut [Tensor::zeros(3, DType::F32, &dev).unwrap()],
            0.9,
            true
        )
        .is_err());
    }
}
