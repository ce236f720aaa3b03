//! The small types every part of the runtime shares: who sent a message,
//! its key and payload, what a call produced, how it faulted, the hash
//! chain of a process's outputs. This module imports nothing else of the
//! runtime, so everything can import it without a cycle.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_types::{PortHandle, ProcessName, Tag};
use xxhash_rust::xxh3;

/// A process of the app by its index in the manifest. Messages name their
/// source by id on the hot path (no string per message); names appear
/// only at the edges: the fabric, snapshots, recordings and logs. Every
/// node of a cluster runs the same manifest, so ids agree everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessId(pub u32);

/// The processes of an app, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    names: Arc<[ProcessName]>,
}

impl Roster {
    pub fn new(names: impl IntoIterator<Item = ProcessName>) -> Roster {
        Roster {
            names: names.into_iter().collect(),
        }
    }

    pub fn id(&self, name: &str) -> Option<ProcessId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| ProcessId(i as u32))
    }

    /// The name of `id`; ids come from this roster, so it exists.
    pub fn name(&self, id: ProcessId) -> &ProcessName {
        &self.names[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Order of delivery: visible tag, then source process, then its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageKey {
    pub tag: Tag,
    pub source: ProcessId,
    pub seq: u64,
}

/// A message in an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: MessageKey,
    /// The receiver's port handle.
    pub port: PortHandle,
    pub payload: Bytes,
}

/// One output of a call, before routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The sender's port handle.
    pub port: PortHandle,
    pub payload: Bytes,
}

/// One line a guest logged, kept with its call's outputs: whether it is
/// published depends on what happens to them (a held standby publishes
/// neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: i32,
    pub text: String,
}

/// Receives a process's guest log lines: (process, level, tag, text).
pub type LogSink = Arc<dyn Fn(&ProcessName, i32, Tag, &str) + Send + Sync>;

pub use weft_types::FaultKind;

fn fault_index(kind: FaultKind) -> usize {
    kind as usize
}

/// How many faults of each kind a process had.
#[derive(Debug, Default)]
pub(crate) struct FaultCounts([std::sync::atomic::AtomicU64; FaultKind::ALL.len()]);

impl FaultCounts {
    pub fn add(&self, kind: FaultKind) {
        self.0[fault_index(kind)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (kind, count) of every kind, zeros included.
    pub fn get(&self) -> [(FaultKind, u64); FaultKind::ALL.len()] {
        FaultKind::ALL.map(|k| {
            (
                k,
                self.0[fault_index(k)].load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }
}

#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
    /// The tag of the call that faulted (`None` when starting failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
}

impl Fault {
    pub(crate) fn new(kind: FaultKind, message: impl Into<String>) -> Fault {
        Fault {
            kind,
            message: message.into(),
            tag: None,
        }
    }

    /// The same fault, noted as raised by the call at `tag`.
    pub(crate) fn at(self, tag: Tag) -> Fault {
        Fault {
            tag: Some(tag),
            ..self
        }
    }

    pub(crate) fn instantiate(error: anyhow::Error) -> Fault {
        Fault::new(FaultKind::Instantiate, format!("{error:#}"))
    }
}

/// The error an epoch callback raises when a be call runs past its
/// deadline; classification finds it by type, not by its text.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded: call ran longer than {0:?}")]
pub(crate) struct DeadlineExceeded(pub std::time::Duration);

/// What a successful call did.
#[derive(Debug, Default, Clone)]
pub struct CallReport {
    pub fuel_used: u64,
    pub messages_in: u64,
    pub outputs: Vec<Output>,
    /// What the call logged, for the process's log sink.
    pub logs: Vec<LogLine>,
    /// Writes to fenced devices, applied only if the call's outputs are
    /// published (see `Device::fenced`).
    pub writes: Vec<DeviceWrite>,
}

/// A write a call made to a fenced device.
#[derive(Clone)]
pub struct DeviceWrite {
    pub device: std::sync::Arc<dyn crate::device::Device>,
    pub data: Bytes,
}

impl std::fmt::Debug for DeviceWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceWrite({} bytes)", self.data.len())
    }
}

/// The port handle a write to device `handle` takes in the hash chain:
/// negative, so a write never hashes like a message.
pub(crate) fn write_port(handle: i32) -> PortHandle {
    PortHandle(-1 - handle)
}

/// The running hash of everything a process published:
/// `h = XXH3-128(h_prev ‖ tag ‖ port ‖ len ‖ payload)`.
///
/// The chain tells whether two runs of the same deterministic code
/// published the same thing (a replica and its primary, a replay and the
/// live run). An accidental match is a 2^-128 chance; resisting a forger
/// would take a cryptographic hash, which costs a fifth of a local message
/// and buys nothing here: a recording is not signed either.
#[derive(Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashChain(pub [u8; 16]);

impl HashChain {
    pub fn extend(&mut self, tag: Tag, output: &Output) {
        const HEAD: usize = 16 + 8 + 4 + 8;
        let payload = &output.payload[..];
        let mut buf = [0u8; HEAD + SMALL];
        buf[..16].copy_from_slice(&self.0);
        buf[16..24].copy_from_slice(&tag.0.to_le_bytes());
        buf[24..28].copy_from_slice(&output.port.0.to_le_bytes());
        buf[28..HEAD].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        // Small messages (most of them) hash in one pass from the stack;
        // both ways give the same hash of the same bytes.
        let hash = if payload.len() <= SMALL {
            let end = HEAD + payload.len();
            buf[HEAD..end].copy_from_slice(payload);
            xxh3::xxh3_128(&buf[..end])
        } else {
            let mut h = xxh3::Xxh3::new();
            h.update(&buf[..HEAD]);
            h.update(payload);
            h.digest128()
        };
        self.0 = hash.to_le_bytes();
    }

    pub fn hex(&self) -> String {
        let mut text = [0u8; 32];
        hex::encode_to_slice(self.0, &mut text).expect("32 hex digits for 16 bytes");
        String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
    }
}

/// Payloads up to this many bytes are hashed from a stack buffer.
const SMALL: usize = 92;

impl fmt::Debug for HashChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashChain({})", &self.hex()[..12])
    }
}
