//! The vocabulary every weft crate shares.
//!
//! Names, logical time, module identity, lifecycle states and the limits
//! that payloads and manifests must agree on live here, once, so that an
//! app cannot be mixed up with a process, a state is never compared as
//! text, and every hop enforces the same bounds. Text forms go only
//! through `Display`, `FromStr` and serde, which all agree.
//!
//! * `name`: [`AppName`], [`ProcessName`], [`NodeName`], [`PortName`] (one
//!   naming rule) and [`ProcessRef`] (`app/process`).
//! * `tag`: [`Tag`], logical time.
//! * `digest`: [`ModuleDigest`], the identity of a module.
//! * `state`: execution classes, lifecycle states, replica roles.
//! * `device`: [`DeviceReport`], what a node says about one device.
//! * `limits`: the payload and manifest bounds.
//!
//! This crate depends on serde only, so everything can depend on it.

mod device;
mod digest;
pub mod limits;
mod name;
mod state;
mod tag;

pub use device::DeviceReport;
pub use digest::{DigestError, ModuleDigest};
pub use name::{
    AppName, DeviceName, MAX_NAME_LEN, NameError, NodeName, PortName, ProcessName, ProcessRef,
    ProcessRefError,
};
pub use state::{
    Class, DeviceKind, DirtyTracking, EventKind, FaultKind, LinkState, NodeState, ParseError,
    PortHandle, ProcessState, ReplicaState, Role, RtClass, StandbyMode,
};
pub use tag::Tag;
