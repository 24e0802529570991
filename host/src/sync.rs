//! The synchronisation primitives of the JobContext state machine.
//!
//! Owns the switch between `std` and `loom`: with the `loom-model` feature the
//! state machine in `job::state` runs under loom's model checker. Nothing else
//! in the crate may use these aliases.

#[cfg(feature = "loom-model")]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(feature = "loom-model"))]
pub(crate) use std::sync::{Mutex, MutexGuard};
