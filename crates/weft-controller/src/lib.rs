//! The weft controller: keeps the cluster's desired state durably in redb,
//! places processes on nodes by constraints and score, and reconciles every
//! alive node towards its share of that state over the fabric.
//!
//! From the bottom up:
//!
//! * `model`: what is asked (spec), what is seen (observed), what was
//!   decided (current).
//! * `store`: the redb file and its tables.
//! * `placement`: the pure placement function.
//! * `plan`: the pure planning function: takeover, moves, drain,
//!   placement, handovers, warnings.
//! * `views`: what `ps` and `nodes` show and what each node is told.
//! * `shared`: the state the tasks share, and its locks.
//! * `reconcile`: plan, persist, tell the nodes.
//! * `api`: the requests the controller answers.
//! * `metrics`: what the controller's `/metrics` shows.
//! * `events`: the stored event stream (`weft events`).
//! * `dashboard`: the web dashboard, beside `/metrics`.
//! * `inbound`: checkpoints received and not stored yet, newest only.
//! * `service`: the running service ([`run`]).

mod api;
mod dashboard;
mod events;
mod inbound;
mod metrics;
pub mod model;
pub mod placement;
pub mod plan;
mod reconcile;
mod service;
mod shared;
pub mod store;
pub mod views;

pub use service::{ControllerConfig, run, run_until};
