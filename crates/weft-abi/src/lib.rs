//! The contract between the weft host and a guest module.
//!
//! This crate owns every name and number that both sides must agree on: the
//! import module name, each host function and the capability that grants it,
//! the exports the host looks for, and the status codes host functions
//! return. It has no dependencies so the guest SDK can mirror it verbatim.
//! `docs/abi.md` is the prose version of this file; keep them in step.

use std::fmt;

pub mod sample;

/// Wasm import module that every weft host function lives in.
pub const IMPORT_MODULE: &str = "weft";

/// Import module of WASI preview 1, granted by the `wasi` capability.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Exports the host calls. Everything else a module exports is ignored.
pub mod exports {
    /// `weft_init()`: called once after instantiation, before the first tick or message.
    pub const INIT: &str = "weft_init";
    /// `weft_tick(tag: i64)`: called at every release of a periodic process.
    pub const TICK: &str = "weft_tick";
    /// `weft_message(port: i32, ptr: i32, len: i32, tag: i64)`: one delivered message.
    pub const MESSAGE: &str = "weft_message";
    /// `weft_alloc(len: i32) -> i32`: a buffer of `len` bytes the host may fill
    /// with a message before calling `weft_message`. Required with `weft_message`.
    pub const ALLOC: &str = "weft_alloc";
    /// WASI command entry point.
    pub const START: &str = "_start";
    /// Prefix of the exports the loader adds so snapshots can reach every
    /// mutable global (`weft:global:<index>`) and memory (`weft:memory:<index>`).
    pub const SNAPSHOT_GLOBAL_PREFIX: &str = "weft:global:";
    pub const SNAPSHOT_MEMORY_PREFIX: &str = "weft:memory:";
    /// The export of a module's first memory: where host functions read
    /// and write the caller's buffers.
    pub const FIRST_MEMORY: &str = "weft:memory:0";
}

/// Host function names in the `weft` import module.
pub mod imports {
    pub const LOG: &str = "log";
    pub const NOW: &str = "now";
    pub const RANDOM: &str = "random";
    pub const PORT: &str = "port";
    pub const SEND: &str = "send";
    pub const RECV: &str = "recv";
    pub const KV_GET: &str = "kv_get";
    pub const KV_SET: &str = "kv_set";
    pub const KV_DELETE: &str = "kv_delete";
    pub const DEVICE_OPEN: &str = "device_open";
    pub const DEVICE_READ: &str = "device_read";
    pub const DEVICE_WRITE: &str = "device_write";
}

/// A capability a manifest can grant to a process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Log,
    Time,
    Random,
    Ports,
    Kv,
    Wasi,
    /// `device:<name>`: one node-provided sensor or actuator.
    Device(String),
}

/// Every capability name a manifest may use, for error messages and docs.
pub const CAPABILITY_NAMES: &[&str] = &[
    "log",
    "time",
    "random",
    "ports",
    "kv",
    "wasi",
    "device:<name>",
];

impl Capability {
    /// Parses a manifest capability string such as `"log"` or `"device:plant"`.
    pub fn parse(text: &str) -> Option<Capability> {
        Some(match text {
            "log" => Capability::Log,
            "time" => Capability::Time,
            "random" => Capability::Random,
            "ports" => Capability::Ports,
            "kv" => Capability::Kv,
            "wasi" => Capability::Wasi,
            _ => {
                let name = text.strip_prefix("device:")?;
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    return None;
                }
                Capability::Device(name.to_string())
            }
        })
    }

    /// What a `weft` host function needs granted, or `None` if the name is
    /// not a weft host function at all.
    pub fn for_import(function: &str) -> Option<Needs> {
        use imports::*;
        Some(Needs::Capability(match function {
            LOG => Capability::Log,
            NOW => Capability::Time,
            RANDOM => Capability::Random,
            PORT | SEND | RECV => Capability::Ports,
            KV_GET | KV_SET | KV_DELETE => Capability::Kv,
            DEVICE_OPEN | DEVICE_READ | DEVICE_WRITE => return Some(Needs::AnyDevice),
            _ => return None,
        }))
    }
}

/// What importing a host function needs granted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Needs {
    Capability(Capability),
    /// Any `device:<name>` grant: the device functions are shared by all
    /// devices, and `device_open` checks the particular device by name.
    AnyDevice,
}

impl fmt::Display for Needs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Needs::Capability(c) => c.fmt(f),
            Needs::AnyDevice => f.write_str("device:*"),
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Log => f.write_str("log"),
            Capability::Time => f.write_str("time"),
            Capability::Random => f.write_str("random"),
            Capability::Ports => f.write_str("ports"),
            Capability::Kv => f.write_str("kv"),
            Capability::Wasi => f.write_str("wasi"),
            Capability::Device(name) => write!(f, "device:{name}"),
        }
    }
}

/// Status codes returned by host functions. Non-negative results are
/// lengths or handles; these are the negative ones.
pub mod status {
    pub const OK: i32 = 0;
    /// Nothing there: empty mailbox, missing key.
    pub const NOT_FOUND: i32 = -1;
    /// The guest buffer is too small; the item stays where it was.
    pub const BUFFER_TOO_SMALL: i32 = -2;
    /// The message exceeds the process's `max_message` limit and was refused.
    pub const TOO_LARGE: i32 = -3;
    /// Unknown port or device handle or name, or a port used in the wrong direction.
    pub const UNKNOWN: i32 = -4;
    /// The device exists but this process was not granted it.
    pub const DENIED: i32 = -5;
    /// The outbox for this call is full (more than the mailbox depth).
    pub const FULL: i32 = -6;
}

/// Log levels accepted by `log(level, ptr, len)`.
pub mod log_level {
    pub const ERROR: i32 = 0;
    pub const WARN: i32 = 1;
    pub const INFO: i32 = 2;
    pub const DEBUG: i32 = 3;
    pub const TRACE: i32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_round_trip() {
        for text in [
            "log",
            "time",
            "random",
            "ports",
            "kv",
            "wasi",
            "device:plant",
        ] {
            assert_eq!(Capability::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Capability::parse("logs"), None);
        assert_eq!(Capability::parse("device:"), None);
        assert_eq!(Capability::parse("device:a b"), None);
    }

    #[test]
    fn every_import_needs_a_capability() {
        use imports::*;
        for f in [
            LOG,
            NOW,
            RANDOM,
            PORT,
            SEND,
            RECV,
            KV_GET,
            KV_SET,
            KV_DELETE,
            DEVICE_OPEN,
            DEVICE_READ,
            DEVICE_WRITE,
        ] {
            assert!(Capability::for_import(f).is_some(), "{f}");
        }
        assert!(Capability::for_import("nope").is_none());
    }
}
