//! Training: the loop ([`trainer`]), its schedule ([`schedule`]), EMA ([`ema`]), optimizers
//! ([`optim`]), checkpoints ([`checkpoint`]), results.csv ([`results`]), console progress
//! ([`progress`]) and the GPU batch size ([`autobatch`]).
pub mod assigner;
pub mod autobatch;
pub mod checkpoint;
pub mod ema;
pub mod loss;
pub mod muon;
pub mod optim;
pub mod phases;
pub mod progress;
pub mod results;
pub mod schedule;
pub mod trainer;
