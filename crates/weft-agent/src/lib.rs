//! The node agent (`weft node`): a weft-runtime node that joins the fabric,
//! announces itself, and runs exactly what the controller assigns to it.
//!
//! * `agent`: the main loop: liveliness, status, the sync RPC.
//! * `share`: what a change to this node's share of an app takes (pure).
//! * `apps`: starting, reconfiguring and stopping this node's share of an app.
//! * `checkpoints`: this node's checkpoints, applied and sent.
//! * `metrics`: what the node's `/metrics` shows.
//! * `fetch`: modules from the controller, checkpoints from the nodes that hold them.
//! * `wiring`: cross-node ports, checkpoints and logs over Zenoh.

mod agent;
mod apps;
mod checkpoints;
mod fetch;
mod metrics;
mod monitor;
mod share;
mod wiring;

pub use agent::{AgentConfig, run};
