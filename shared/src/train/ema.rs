//! ultralytics' `ModelEMA`: an exponential moving average of every floating-point tensor of the
//! model's state (parameters and BatchNorm running statistics), with the decay ramp
//! `d = decay · (1 − exp(−updates / tau))` (decay 0.9999, tau 2000) so early updates move it fast.
//! Validation and the saved checkpoints use the EMA, not the raw model.

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::{Error, Result};

/// The moving average, held as a second set of variables with the model's names.
pub struct ModelEma {
    /// The EMA weights (a network built on this VarMap is the EMA model).
    pub varmap: VarMap,
    pub updates: u64,
    pub decay: f64,
    pub tau: f64,
    /// (ema variable, model variable) pairs, in name order.
    pairs: Vec<(candle_core::Var, candle_core::Var)>,
}

impl ModelEma {
    /// An EMA of `model` whose variables live in `ema` (a VarMap with the same names, e.g. a
    /// second network built from the same yaml); its values are copied from the model now.
    pub fn new(model: &VarMap, ema: VarMap, updates: u64) -> Result<Self> {
        let pairs = pair_up(model, &ema)?;
        for (e, m) in &pairs {
            e.set(&m.as_tensor().detach().copy()?)?;
        }
        Ok(ModelEma { varmap: ema, updates, decay: 0.9999, tau: 2000.0, pairs })
    }

    /// The decay for update number `updates`.
    pub fn decay_at(&self, updates: u64) -> f64 {
        self.decay * (1.0 - (-(updates as f64) / self.tau).exp())
    }

    /// One update after an optimizer step: `ema = d·ema + (1 − d)·model`.
    pub fn update(&mut self) -> Result<()> {
        self.updates += 1;
        let d = self.decay_at(self.updates);
        // torch's `_foreach_lerp_(ema, model, w = 1 - d)` as ultralytics calls it: the weight
        // rounded to f32, and for w >= 0.5 computed from the model's side,
        // `model - (model - ema)·(1 - w)` (bit-equal to ultralytics on the parity fixture)
        let w = (1.0 - d) as f32;
        for (e, m) in &self.pairs {
            let (et, mt) = (e.as_tensor().detach(), m.as_tensor().detach());
            let diff = (&mt - &et)?;
            let v = if w < 0.5 { (&et + (diff * w as f64)?)? } else { (&mt - (diff * (1.0f32 - w) as f64)?)? };
            e.set(&v)?;
        }
        Ok(())
    }

    /// Copy the EMA's values into the model (NaN recovery reloads the last good EMA this way).
    pub fn copy_into_model(&self) -> Result<()> {
        for (e, m) in &self.pairs {
            m.set(&e.as_tensor().detach().copy()?)?;
        }
        Ok(())
    }

    /// Whether every EMA tensor is finite.
    pub fn is_finite(&self) -> Result<bool> {
        for (e, _) in &self.pairs {
            if !all_finite(e.as_tensor())? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether every element of `t` is finite.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let v = t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
    Ok(v.iter().all(|x| x.is_finite()))
}

fn pair_up(model: &VarMap, ema: &VarMap) -> Result<Vec<(candle_core::Var, candle_core::Var)>> {
    let md = model.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
    let ed = ema.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
    let mut names: Vec<&String> = md.keys().collect();
    names.sort();
    let mut pairs = Vec::with_capacity(names.len());
    for n in names {
        let e = ed.get(n).ok_or_else(|| Error::internal(format!("EMA network has no variable {n}")))?;
        pairs.push((e.clone(), md[n].clone()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn ema_follows_ultralytics_ramp() {
        let dev = Device::Cpu;
        let m = VarMap::new();
        let e = VarMap::new();
        m.get((2,), "w", candle_nn::Init::Const(1.0), DType::F32, &dev).unwrap();
        e.get((2,), "w", candle_nn::Init::Const(0.0), DType::F32, &dev).unwrap();
        let mut ema = ModelEma::new(&m, e, 0).unwrap();
        // the model moves to 3; one update with d(1) = 0.9999·(1 − e^(−1/2000))
        m.data().lock().unwrap()["w"].set(&Tensor::new(&[3f32, 3.], &dev).unwrap()).unwrap();
        ema.update().unwrap();
        let d = 0.9999 * (1.0 - (-1.0f64 / 2000.0).exp());
        let want = d * 1.0 + (1.0 - d) * 3.0;
        let got = ema.varmap.data().lock().unwrap()["w"].as_tensor().to_vec1::<f32>().unwrap();
        assert!((got[0] as f64 - want).abs() < 1e-6, "{got:?} vs {want}");
    }
}
