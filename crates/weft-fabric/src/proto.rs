//! The messages of the fabric. All are JSON control messages (see `codec`);
//! binary blobs (modules, snapshots) are base64 inside them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a node announces about itself, periodically, on `node/<name>/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    pub pid: u32,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    /// `hard` when SCHED_FIFO is permitted, else `soft`.
    pub rt_class: String,
    pub cores: u32,
    pub memory_bytes: u64,
    /// How many more processes this node accepts.
    pub free_slots: u32,
    pub processes: Vec<ProcessStatus>,
}

/// One process as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessStatus {
    pub app: String,
    pub name: String,
    pub generation: u64,
    pub state: String,
    pub reason: Option<String>,
    pub ticks: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub faults: u64,
    pub restarts: u64,
    pub deadline_misses: u64,
    /// Messages that arrived after their tag was processed.
    #[serde(default)]
    pub tardy: u64,
    pub output_hash: String,
    pub last_tag_ns: Option<u64>,
    /// Tag of the checkpoint this incarnation was restored from, if any.
    pub restored_from_tag: Option<u64>,
    /// First tag this incarnation ran.
    #[serde(default)]
    pub first_tag_ns: Option<u64>,
    /// How late its first tick ran (how long its outputs paused on a move).
    #[serde(default)]
    pub resume_lateness_ns: Option<u64>,
    /// A hot standby (outputs held back) rather than the live process.
    #[serde(default)]
    pub standby: bool,
    /// The output chain at the last whole-second tag.
    #[serde(default)]
    pub chain_mark: Option<ChainMark>,
    /// The payload of its last output (hex).
    #[serde(default)]
    pub last_output_hex: Option<String>,
}

/// A process's output hash chain at one tag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainMark {
    pub tag_ns: u64,
    pub output_hash: String,
}

/// What one node should run of one app.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppAssignment {
    pub app: String,
    /// Bumped on every change of the app's manifest (rolling updates).
    pub generation: u64,
    /// The manifest, with module paths replaced by `<digest>.wasm`.
    pub manifest: String,
    /// Where every process of the app runs (process -> node).
    pub placement: BTreeMap<String, String>,
    /// Where replicas of a process run, outputs held back (process ->
    /// nodes): its hot standby, and the node it is moving to.
    #[serde(default)]
    pub standby: BTreeMap<String, BTreeSet<String>>,
    /// Wall-clock time of the app's tag 0, in ns since the Unix epoch, so
    /// every node releases the app's processes on the same logical grid.
    pub epoch_unix_ns: u64,
}

/// Controller -> node, on `node/<name>/rpc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeRequest {
    /// The complete desired state of this node: it starts, stops and
    /// reconfigures until it runs exactly this.
    Sync { apps: Vec<AppAssignment> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum NodeResponse {
    /// Applied. `handover` holds the final snapshot of every process this
    /// node stopped because it now runs elsewhere, so its new node resumes
    /// from exactly where it stopped rather than from an older checkpoint.
    Ok {
        #[serde(default)]
        handover: Vec<Handover>,
    },
    Error {
        message: String,
    },
}

/// The final state of a process leaving a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Handover {
    pub app: String,
    pub process: String,
    /// The last tag the process completed.
    pub tag: u64,
    pub snapshot: Blob,
}

/// CLI or node -> controller, on `controller/rpc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Creates or updates (rolling) an app.
    Deploy {
        manifest: String,
        modules: BTreeMap<String, Blob>,
    },
    Remove {
        app: String,
    },
    Ps,
    Nodes,
    /// Moves every process off a node and keeps it from getting new ones.
    Drain {
        node: String,
    },
    /// Moves one process to `to`, handing its final state over.
    Migrate {
        app: String,
        process: String,
        to: String,
    },
    GetModule {
        digest: String,
    },
    GetCheckpoint {
        app: String,
        process: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    Deployed {
        app: String,
        generation: u64,
        pending: Vec<PsEntry>,
        /// Problems with the placement that do not stop it, such as a
        /// connection between nodes with a delay too small for a network.
        #[serde(default)]
        warnings: Vec<String>,
    },
    Removed {
        app: String,
    },
    Ps {
        processes: Vec<PsEntry>,
    },
    Nodes {
        nodes: Vec<NodeEntry>,
    },
    Drained {
        node: String,
        moved: Vec<String>,
    },
    Migrating {
        app: String,
        process: String,
        from: String,
        to: String,
    },
    Module {
        bytes: Blob,
    },
    Checkpoint {
        tag: Option<u64>,
        bytes: Blob,
    },
    NotFound {
        what: String,
    },
    Error {
        message: String,
    },
}

/// Node -> controller, on `checkpoint/<app>/<process>`: the latest
/// snapshot of a stateful process. The controller keeps the newest per
/// process (by `tag`) and hands it out for restores (`GetCheckpoint`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointMessage {
    /// Logical tag (ns since the app's epoch) the snapshot was taken at.
    pub tag: u64,
    pub snapshot: Blob,
}

/// One process in `weft ps`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PsEntry {
    pub app: String,
    pub name: String,
    pub node: Option<String>,
    /// `running`, `pending`, `starting`, or what the node reports (`failed`, `parked`, ...).
    pub state: String,
    pub reason: Option<String>,
    pub generation: u64,
    pub ticks: u64,
    pub faults: u64,
    pub restarts: u64,
    /// Timing faults, which change outputs by design (see `docs/design.md`).
    #[serde(default)]
    pub deadline_misses: u64,
    #[serde(default)]
    pub tardy: u64,
    pub output_hash: String,
    pub restored_from_tag: Option<u64>,
    /// First tag this incarnation ran.
    #[serde(default)]
    pub first_tag_ns: Option<u64>,
    /// The process's period, if periodic.
    #[serde(default)]
    pub period_ns: Option<u64>,
    #[serde(default)]
    pub resume_lateness_ns: Option<u64>,
    #[serde(default)]
    pub chain_mark: Option<ChainMark>,
    #[serde(default)]
    pub last_output_hex: Option<String>,
    /// The hot standby, if the process has `standby = "hot"`.
    #[serde(default)]
    pub standby: Option<StandbyEntry>,
}

/// The hot standby of a process in `weft ps`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StandbyEntry {
    /// `None` while no node can take it (see `reason`).
    pub node: Option<String>,
    /// `standby` (in step, outputs held back), `starting` or `pending`.
    pub state: String,
    pub reason: Option<String>,
    pub last_tag_ns: Option<u64>,
    pub chain_mark: Option<ChainMark>,
}

/// One node in `weft nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    pub name: String,
    pub pid: u32,
    /// `alive`, `dead` or `draining`.
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    pub rt_class: String,
    pub free_slots: u32,
    pub processes: usize,
}

/// Bytes carried as base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        use base64::Engine;
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Blob)
            .map_err(serde::de::Error::custom)
    }
}
