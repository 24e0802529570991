//! lk-go host: runs LiveKit agent jobs as native plugins.
//!
//! The crate is a library with a thin binary (`src/bin/lk-go.rs`) on top.
//! One job = one plugin run in one room, driven by [`runner::run_job`], the
//! function both the CLI and the worker's job processes call.
//!
//! Module map (see docs/ARCHITECTURE.md for the full picture):
//! - [`job`]: Job, JobContext, ShutdownInfo, hooks. Knows nothing of rooms.
//! - [`events`]: the room event vocabulary and its fan-out.
//! - [`room`]: the room wrapper and the seams a session plugs into.
//! - [`media`]: audio in and out, data packets; [`datastream`]: data
//!   streams and RPC.
//! - [`plugin`]: loading/validating plugins and the host side of the C ABI.
//! - [`runner`]: one job from start to exit code, including the cascade.
//! - [`exit`]: the exit code table.
//! - [`worker`]: `lk-go worker`: agent dispatch, one process per job.
//! - [`cli`]: argument parsing and process-wide concerns (signals, logging).
//! - [`logsink`]: stderr, non-blocking and lossy; [`secrets`]: what it
//!   must never print; [`stdio`]: the plugin's stdout/stderr pipes.
//! - [`scaffold`]: `lk-go plugin new`; `sync` (private): the std/loom
//!   switch of `job::state`.

pub mod cli;
pub mod datastream;
pub mod events;
pub mod exit;
pub mod job;
pub mod logsink;
pub mod media;
pub mod plugin;
pub mod room;
pub mod runner;
pub mod scaffold;
pub mod secrets;
pub mod stdio;
mod sync;
pub mod worker;

pub use job::{Job, JobConfig, JobContext, ShutdownInfo, ShutdownReason, ASSIGNMENT_TIMEOUT};
pub use runner::{run_job, JobOutcome, RunError, RunOptions};
