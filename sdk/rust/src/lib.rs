//! # weft guest SDK
//!
//! Safe, small wrappers over the host functions a weft module imports from
//! the `weft` wasm import module, plus the [`reactor!`] macro that turns a
//! type implementing [`Reactor`] into the exports the host drives
//! (`weft_init`, `weft_tick`, `weft_message`, `weft_alloc`).
//!
//! The ABI is described in `docs/abi.md`; its names and numbers come from the
//! host crate `weft-abi`, which this crate mirrors in [`sys`] and [`Error`].
//!
//! ```ignore
//! use weft::{Port, Reactor, Tag};
//!
//! struct Counter { out: Port, n: u64 }
//!
//! impl Reactor for Counter {
//!     fn init() -> Self { Counter { out: Port::named("count"), n: 0 } }
//!     fn tick(&mut self, _tag: Tag) {
//!         self.n += 1;
//!         let _ = self.out.send(&self.n.to_le_bytes());
//!     }
//! }
//!
//! weft::reactor!(Counter);
//! ```
//!
//! ## Capabilities
//!
//! Every host function needs a capability granted in the app manifest, and a
//! module that *imports* a function whose capability is missing does not
//! start. Only the functions a module actually calls end up as imports (the
//! linker drops the rest), so the capabilities a module needs follow from the
//! SDK functions it uses:
//!
//! | SDK API | imports | capability |
//! |---|---|---|
//! | [`log`](mod@crate::log), [`info!`] & co., [`log::install_panic_hook`] | `log` | `log` |
//! | [`time::now`] | `now` | `time` |
//! | [`random`] | `random` | `random` |
//! | [`Port`] | `port`, `send`, `recv` | `ports` |
//! | [`kv`] | `kv_get`, `kv_set`, `kv_delete` | `kv` |
//! | [`Device`] | `device_open`, `device_read`, `device_write` | `device:<name>` |
//!
//! Panics never call the host on their own (the `log` import would then be
//! needed by every module): with `panic = "abort"` a panic traps the process,
//! which the host reports as a fault. Call [`log::install_panic_hook`] in
//! `init` to have panic messages logged at error level first.
//!
//! ## Targets
//!
//! Reactors build for `wasm32-unknown-unknown` as a `cdylib`. The SDK also
//! compiles for other targets (the imports are then unresolved symbols), so
//! `cargo check` and docs work natively.

pub mod device;
pub mod error;
pub mod kv;
pub mod log;
pub mod port;
pub mod random;
pub mod reactor;
pub mod sys;
pub mod tag;
pub mod time;

pub use device::Device;
pub use error::Error;
pub use port::Port;
pub use reactor::Reactor;
pub use tag::Tag;

/// Implementation details used by the macros. Not part of the public API.
#[doc(hidden)]
pub mod __rt {
    pub use crate::reactor::{alloc, message_slice, ReactorCell};
}
