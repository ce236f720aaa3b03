//! The weft node runtime.
//!
//! Where things live:
//! * `module`: load, validate, check and rewrite a module; `weft inspect`.
//! * `engine`: wasmtime engine configuration and the compiled-artefact cache.
//! * `host`: the `weft` host functions and the per-process host state.
//! * `process`: one process (a store with one or more linked instances) and its calls.
//! * `ports`: messages, ordered inboxes and the router.
//! * `snapshot`: capturing and restoring a process at a call boundary.
//! * `record` and `replay`: recording what a run saw, and running it again offline.
//! * `sched` and `rt`: the rt-thread and be-task schedulers, supervision and restarts.
//! * `device`: node-provided devices such as the simulated thermal plant.
//! * `metrics`: per-process counters, histograms and reports.
//! * `node`: putting it together to run an app from a manifest.
//! * `wasi`: WASI preview 1 for command modules.

pub mod device;
pub mod engine;
mod host;
pub mod metrics;
pub mod module;
pub mod node;
pub mod ports;
pub mod process;
pub mod record;
pub mod replay;
pub mod rt;
mod sched;
pub mod snapshot;
pub mod tag;
mod wasi;

pub use engine::{RuntimeConfig, WeftEngine};
pub use metrics::{ChainMark, ProcessReport, ProcessState};
pub use module::{LoadedModule, ModuleInfo};
pub use node::{AppReport, Node, RemoteInlet, RunningApp, StartOptions};
pub use process::{Fault, FaultKind, Process, ProcessEnv, Program};
pub use record::{Recorder, Recording};
pub use replay::{ReplayReport, replay};
pub use sched::{CheckpointSink, Checkpointing, Stop};
pub use snapshot::{Snapshot, SnapshotError};
pub use tag::Tag;
