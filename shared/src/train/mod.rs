//! Training: the loop ([`trainer`]), its schedule ([`schedule`]), EMA ([`ema`]), optimizers
//! ([`optim`]), checkpoints ([`checkpoint`]), results.csv ([`results`]) and console progress
//! ([`progress`]).
pub mod assigner;
pub mod checkpoint;
pub mod ema;
pub mod loss;
pub mod muon;
pub mod optim;
pub mod progress;
pub mod results;
pub mod schedule;
pub mod trainer;
