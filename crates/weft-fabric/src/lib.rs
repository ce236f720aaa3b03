//! The weft fabric: how nodes, the controller, the CLI and processes on
//! different machines find and talk to each other, over Zenoh.
//!
//! * `session`: opening a Zenoh session in peer, client or router mode with
//!   explicit endpoints (no multicast scouting).
//! * `keys`: the key space, `weft/<cluster>/...`.
//! * `codec`: versioned, size-bounded payloads (JSON control messages and
//!   binary frames); a bad one is an error, never a panic.
//! * `proto`: the control messages themselves.
//! * `rpc`: request/response over queryables, with timeouts.
//! * `status`: node statuses as deltas, written and read back.
//!
//! This crate is protocol only; what a client of the cluster does with it
//! (deploying, moving a process, the local-cluster harness) is `weft-client`.
//!
//! `docs/fabric.md` documents all of it for people writing their own clients.

pub mod codec;
pub mod keys;
pub mod proto;
pub mod rpc;
pub mod session;
pub mod status;

pub use codec::CodecError;
pub use keys::Keys;
pub use session::{FabricConfig, Mode};
