//! Hyper-parameter tuning: ultralytics 8.4's genetic evolution (`engine/tuner.py`), run natively
//! on kubeyolo's trainer, resumable, and shared by several workers (pods) through one results
//! file.
//!
//! | module | what lives there |
//! |---|---|
//! | [`space`] | the search space: 8.4's default bounds and gains, or a user yaml |
//! | [`mutate`] | the next iteration's values: parent selection, mutation, constraints (8.4's `_mutate`) |
//! | [`store`] | `tune_results.ndjson` (8.4's layout), the claims that keep workers apart, the lock |
//! | [`tuner`] | the loop: claim, train, record, and the outputs (best weights and yaml, csv, plots) |

pub mod mutate;
pub mod space;
pub mod store;
pub mod tuner;
