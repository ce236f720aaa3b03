//! The weft controller: keeps the cluster's desired state (apps, modules,
//! assignments, checkpoints, drained nodes) durably in redb, places
//! processes on nodes by constraints and score, and reconciles every alive
//! node towards its share of that state over the fabric.
//!
//! * `store`: the redb file and its tables.
//! * `placement`: the pure placement function.
//! * `replica`: hot standbys and live moves as assignment entries; takeover.
//! * `controller`: the running service ([`run`]).

pub mod controller;
pub mod placement;
pub mod replica;
pub mod store;

pub use controller::{ControllerConfig, run, run_until};
