//! The weft node runtime.
//!
//! Where things live:
//! * `types`: the small shared types (ids, messages, outputs, faults, the hash chain).
//! * `module`: load, validate, check and rewrite a module; `weft inspect`.
//! * `engine`: wasmtime engine configuration and the compiled-artefact cache.
//! * `program`: a process's modules checked against its grants and compiled.
//! * `host`: the `weft` host functions and the per-process host state.
//! * `process`: one incarnation of a process and its calls.
//! * `inbox` and `router`: ordered mailboxes, and delivering outputs to them.
//! * `snapshot`: capturing and restoring a process at a call boundary.
//! * `record` and `replay`: recording what a run saw, and running it again offline.
//! * `sched` and `rt`: the rt-thread and be-task drivers, supervision and restarts.
//! * `device`: node-provided devices such as the simulated thermal plant.
//! * `metrics`: per-process counters and reports, read without locks.
//! * `throttle`: rate limits of the warnings a guest can trigger.
//! * `node`: putting it together to run an app from a manifest.
//! * `wasi`: WASI preview 1 for command modules.

pub mod device;
mod durations;
pub mod engine;
mod host;
pub mod inbox;
pub mod metrics;
pub mod module;
pub mod node;
pub mod process;
pub mod program;
pub mod record;
pub mod replay;
pub mod router;
pub mod rt;
mod sched;
pub mod snapshot;
mod throttle;
pub mod types;
mod wasi;

pub use engine::{RuntimeConfig, WeftEngine};
pub use inbox::Inbox;
pub use metrics::{ChainMark, ProcessReport};
pub use module::{LoadedModule, ModuleInfo};
pub use node::{AppReport, InletPort, Node, RemoteInlet, RunningApp, StartOptions, Stopped};
pub use process::{Process, ProcessEnv};
pub use program::Program;
pub use record::{Recorder, Recording};
pub use replay::{ReplayReport, replay};
pub use sched::{CheckpointSink, Checkpointing, Stop};
pub use snapshot::{
    ChainError, DirtyTracking, Link, MemoryImage, Snapshot, SnapshotError, dirty_tracking,
};
pub use types::{
    CallReport, Fault, FaultKind, HashChain, LogLine, LogSink, Message, MessageKey, Output,
    ProcessId, Roster,
};
pub use weft_types::{ModuleDigest, ProcessState, RtClass, Tag};
