//! Training: the loop ([`trainer`]), its schedule ([`schedule`]), EMA ([`ema`]), optimizers
//! ([`optim`]), checkpoints ([`checkpoint`]), results.csv ([`results`]), console progress
//! ([`progress`]), the GPU batch size ([`autobatch`]) and what depends on the batch size
//! ([`batch_size`]: the loaders, accumulation and decay, rebuilt by the out-of-memory retry).
pub mod assigner;
pub mod autobatch;
pub mod batch_size;
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
