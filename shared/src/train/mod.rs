//! Training: optimizers (more — the loop, the loss, schedules — lands here from the trainer's
//! owner).
pub mod optim;
