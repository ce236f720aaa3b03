//! The node agent (`weft node`): a weft-runtime node that joins the fabric,
//! announces itself, and runs exactly what the controller assigns to it.
//!
//! * `agent`: the main loop: liveliness, status, the sync RPC.
//! * `apps`: starting, reconfiguring and stopping this node's share of an app.
//! * `wiring`: cross-node ports, checkpoints and logs over Zenoh.

mod agent;
mod apps;
mod wiring;

pub use agent::{AgentConfig, run};
