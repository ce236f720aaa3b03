//! The control messages of the fabric, as JSON (see `codec`). Blobs
//! (modules, checkpoints, deploy bundles) never travel inside these: they
//! have binary frames of their own (`codec`) on keys of their own (`keys`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use weft_types::{
    AppName, Class, DeviceReport, DirtyTracking, EventKind, FaultKind, NodeName, NodeState,
    ProcessName, ProcessRef, ProcessState, ReplicaState, RtClass, Tag,
};

/// What a node announces about itself, periodically, on `node/<name>/status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub name: NodeName,
    pub pid: u32,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    /// What each device is doing (in `devices` order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_reports: Vec<DeviceReport>,
    /// `hard` when SCHED_FIFO is permitted, else `soft`.
    pub rt_class: RtClass,
    /// How this node finds the pages its processes wrote between
    /// checkpoints (`None` from a node that predates incremental ones).
    #[serde(default)]
    pub dirty_tracking: Option<DirtyTracking>,
    pub cores: u32,
    pub memory_bytes: u64,
    /// How many more processes this node accepts.
    pub free_slots: u32,
    /// How many processes the node runs at most (its `--max-processes`).
    /// Placement counts capacity from this, not from `free_slots` plus the
    /// processes listed: a delta status lists a node's newly started
    /// processes over several statuses, and the sum fell short meanwhile
    /// (the planner then unplaced running processes, and they flapped).
    /// 0 from a node that does not say.
    #[serde(default)]
    pub slots: u32,
    /// `None`: `processes` and `checkpoints` list everything the node runs
    /// and holds. `Some(seq)`: a delta, listing only what changed since the
    /// node's status `seq`, and in `gone` what went (see `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_of: Option<u64>,
    #[serde(default, skip_serializing_if = "crate::status::Gone::is_empty")]
    pub gone: crate::status::Gone,
    pub processes: Vec<ProcessStatus>,
    /// Processes this node stopped because they now run elsewhere, whose
    /// final checkpoints it holds (see `docs/fabric.md`, handovers).
    #[serde(default)]
    pub handed_over: Vec<HandedOver>,
    /// Every checkpoint this node holds: of its own processes and of the
    /// processes it keeps for their nodes. The controller's whole record
    /// of checkpoints is these lists; the bytes stay on the nodes.
    #[serde(default)]
    pub checkpoints: Vec<HeldCheckpoint>,
    /// Checkpoint bytes this node has sent to other nodes since it
    /// started (links pushed to peers and checkpoints served to fetches).
    #[serde(default)]
    pub checkpoint_bytes_sent: u64,
    /// Counts this agent's status publications; with `pid`, it marks which
    /// status a `Sync` was written after (see [`StatusMark`]).
    #[serde(default)]
    pub seq: u64,
    /// The node has work a `Sync` drives even if its desired state did not
    /// change: processes held after a stall that want confirming, replicas
    /// to retry, a change applied only in part. A node that says `false`
    /// is sent a `Sync` only when its desired state changes (and now and
    /// then regardless); one that does not say is sent one every time.
    #[serde(default = "always")]
    pub wants_sync: bool,
}

fn always() -> bool {
    true
}

impl NodeStatus {
    pub fn mark(&self) -> StatusMark {
        StatusMark {
            pid: self.pid,
            seq: self.seq,
        }
    }
}

/// A node's status publication, by the agent's pid and its count.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusMark {
    pub pid: u32,
    pub seq: u64,
}

impl StatusMark {
    /// True if this mark is the node's status `seq` or a later one, from
    /// the agent with `pid`.
    pub fn covers(&self, pid: u32, seq: u64) -> bool {
        self.pid == pid && self.seq >= seq
    }
}

/// One checkpoint a node holds, whole (its chain applied), served on
/// `checkpoint/<node>/<app>/<process>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldCheckpoint {
    pub app: AppName,
    pub process: ProcessName,
    pub tag: Tag,
    /// Its encoded size.
    pub bytes: u64,
}

/// A peer's answer to a [`crate::codec::ReplicaBatch`]: the links it
/// refused, and why (a gap, a corrupt link, no base to apply an increment
/// to); it kept every other one. The sender sends a refused process its
/// whole checkpoint next time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaRefusals {
    pub refused: Vec<(ProcessRef, String)>,
}

/// A process a node stopped and handed over: its final checkpoint, at
/// `tag`, is among the checkpoints the node holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandedOver {
    pub app: AppName,
    pub process: ProcessName,
    pub generation: u64,
    pub tag: Tag,
}

/// One process as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessStatus {
    pub app: AppName,
    pub name: ProcessName,
    pub generation: u64,
    pub state: ProcessState,
    pub reason: Option<String>,
    pub ticks: u64,
    /// Messages handled (what a message-driven process does instead of ticks).
    #[serde(default)]
    pub messages_in: u64,
    #[serde(default)]
    pub messages_out: u64,
    pub faults: u64,
    pub restarts: u64,
    /// Timing faults, which change outputs by design (see `docs/design.md`).
    #[serde(default)]
    pub deadline_misses: u64,
    /// Messages that arrived after their tag was read.
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
    /// A replica (hot standby or move target, outputs held back) rather
    /// than the live process.
    #[serde(default)]
    pub replica: bool,
    /// The output chain at the last whole-second tag.
    #[serde(default)]
    pub chain_mark: Option<ChainMark>,
    /// The payload of its last output (hex).
    #[serde(default)]
    pub last_output_hex: Option<String>,
    /// Its latest fault, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fault: Option<FaultNote>,
}

/// A process's fault as its node reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultNote {
    pub kind: FaultKind,
    /// The tag of the call that faulted (`None` when it failed to start).
    #[serde(default)]
    pub tag: Option<Tag>,
    pub message: String,
}

impl ProcessStatus {
    /// A process nothing has been reported of yet.
    pub fn unreported(
        app: AppName,
        name: ProcessName,
        generation: u64,
        state: ProcessState,
    ) -> Self {
        ProcessStatus {
            app,
            name,
            generation,
            state,
            reason: None,
            ticks: 0,
            messages_in: 0,
            messages_out: 0,
            faults: 0,
            restarts: 0,
            deadline_misses: 0,
            tardy: 0,
            output_hash: String::new(),
            last_tag_ns: None,
            restored_from_tag: None,
            first_tag_ns: None,
            resume_lateness_ns: None,
            replica: false,
            chain_mark: None,
            last_output_hex: None,
            last_fault: None,
        }
    }
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
    pub app: AppName,
    /// Bumped on every change of the app's manifest (rolling updates).
    pub generation: u64,
    /// The manifest, its modules named by digest (`sha256:<hex>`).
    pub manifest: String,
    /// Where every process of the app runs (process -> node).
    pub placement: BTreeMap<ProcessName, NodeName>,
    /// Where replicas of a process run, outputs held back (process ->
    /// nodes): its hot standby, and the node it is moving to.
    #[serde(default)]
    pub standby: BTreeMap<ProcessName, BTreeSet<NodeName>>,
    /// Which node keeps a copy of each process's checkpoints besides the
    /// node that runs it (process -> node; see `docs/fabric.md`). A node
    /// named here only as a peer is sent the app too, and runs none of it.
    #[serde(default)]
    pub checkpoint_peers: BTreeMap<ProcessName, NodeName>,
    /// The processes some alive node holds a checkpoint of, with the
    /// newest tag held. A node starts any other afresh without asking every
    /// node for one (a fresh deploy of thousands would ask thousands of
    /// times for nothing), and resumes one from its own copy when that is
    /// the newest, without asking (placement prefers the holder, so after
    /// a node dies most of its processes resume where their copy is); a
    /// replica always asks, for one fresh enough.
    #[serde(default)]
    pub checkpointed: BTreeMap<ProcessName, Tag>,
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
    Sync {
        apps: Vec<AppAssignment>,
        /// The node's newest status the controller had when it wrote this:
        /// a process held after a stall is confirmed only by a `Sync`
        /// written after a status from after the stall.
        #[serde(default)]
        seen: Option<StatusMark>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum NodeResponse {
    /// Applied.
    Ok {},
    Error {
        message: String,
    },
}

/// CLI or node -> controller, on `controller/rpc`. (A deploy carries
/// modules, so it has a binary request of its own on `controller/deploy`.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Remove {
        app: AppName,
    },
    Ps,
    Nodes,
    /// Moves every process off a node and keeps it from getting new ones.
    Drain {
        node: NodeName,
    },
    /// Lets a drained node take processes again (it gets none back by itself).
    Undrain {
        node: NodeName,
    },
    /// Moves one process to `to`, live.
    Migrate {
        app: AppName,
        process: ProcessName,
        to: NodeName,
    },
    /// The tag and size of the latest checkpoint of a process.
    CheckpointInfo {
        app: AppName,
        process: ProcessName,
    },
    /// The controller's events after `after` (all it keeps, if `None`),
    /// oldest first, of one app or process if named. With `wait_ms`, an
    /// answer that would be empty waits that long for a new event first.
    Events {
        #[serde(default)]
        after: Option<u64>,
        #[serde(default)]
        app: Option<AppName>,
        #[serde(default)]
        process: Option<ProcessName>,
        #[serde(default)]
        limit: Option<u32>,
        #[serde(default)]
        wait_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    Deployed {
        app: AppName,
        generation: u64,
        pending: Vec<PsEntry>,
        /// Problems with the placement that do not stop it, such as a
        /// connection between nodes with a delay too small for a network.
        #[serde(default)]
        warnings: Vec<String>,
    },
    Removed {
        app: AppName,
    },
    Ps {
        processes: Vec<PsEntry>,
    },
    Nodes {
        nodes: Vec<NodeEntry>,
    },
    Drained {
        node: NodeName,
        moved: Vec<ProcessRef>,
    },
    Undrained {
        node: NodeName,
    },
    Migrating {
        app: AppName,
        process: ProcessName,
        from: NodeName,
        to: NodeName,
    },
    /// The newest checkpoint the nodes hold of a process.
    CheckpointInfo {
        tag: Option<Tag>,
        bytes: u64,
        /// Every alive node that holds a checkpoint of the process, with
        /// the tag of the one it holds.
        #[serde(default)]
        holders: BTreeMap<NodeName, Tag>,
    },
    Events {
        events: Vec<EventEntry>,
        /// The newest sequence number the controller has given an event
        /// (ask for events after it to follow).
        last: u64,
        /// The oldest it still keeps: asked for events after an older one,
        /// the ones in between are gone.
        oldest: u64,
    },
    NotFound {
        what: String,
    },
    Error {
        message: String,
    },
}

impl ControlResponse {
    /// The variant's name, for messages about an answer that does not fit
    /// the request.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlResponse::Deployed { .. } => "deployed",
            ControlResponse::Removed { .. } => "removed",
            ControlResponse::Ps { .. } => "ps",
            ControlResponse::Nodes { .. } => "nodes",
            ControlResponse::Drained { .. } => "drained",
            ControlResponse::Undrained { .. } => "undrained",
            ControlResponse::Migrating { .. } => "migrating",
            ControlResponse::CheckpointInfo { .. } => "checkpoint_info",
            ControlResponse::Events { .. } => "events",
            ControlResponse::NotFound { .. } => "not_found",
            ControlResponse::Error { .. } => "error",
        }
    }
}

/// One process in `weft ps`: what its node reports, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PsEntry {
    #[serde(flatten)]
    pub status: ProcessStatus,
    pub node: Option<NodeName>,
    /// The process's period, if periodic.
    #[serde(default)]
    pub period_ns: Option<u64>,
    /// The hot standby, if the process has `standby = "hot"`.
    #[serde(default)]
    pub standby: Option<StandbyEntry>,
    /// Set when the process resumed from an older checkpoint than the
    /// newest the nodes held of it (or from none), because the nodes that
    /// held the newer one died: the newest tag known, whose state was lost.
    #[serde(default)]
    pub lost_checkpoint: Option<Tag>,
}

/// The hot standby of a process in `weft ps`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StandbyEntry {
    /// `None` while no node can take it (see `reason`).
    pub node: Option<NodeName>,
    pub state: ReplicaState,
    pub reason: Option<String>,
    pub last_tag_ns: Option<u64>,
    pub chain_mark: Option<ChainMark>,
}

/// One node in `weft nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    pub name: NodeName,
    pub pid: u32,
    pub state: NodeState,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_reports: Vec<DeviceReport>,
    /// `None` until the node has reported its status.
    pub rt_class: Option<RtClass>,
    #[serde(default)]
    pub dirty_tracking: Option<DirtyTracking>,
    pub free_slots: u32,
    pub processes: usize,
}

impl NodeEntry {
    /// Each device as `weft nodes` shows it: with its kind and link state
    /// where the node reports them, else its name.
    pub fn device_list(&self) -> Vec<String> {
        match self.device_reports.is_empty() {
            true => self.devices.clone(),
            false => self.device_reports.iter().map(|d| d.to_string()).collect(),
        }
    }
}

/// How many events the controller keeps (the newest).
pub const EVENTS_KEPT: usize = 10_000;

/// One event the controller recorded (`weft events`). Every event has a
/// kind, a time and a sentence; the other fields are set where they apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventEntry {
    /// Its place in the controller's stream: increasing, never reused.
    pub seq: u64,
    /// Wall-clock time, ms since the Unix epoch.
    pub at_unix_ms: u64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessName>,
    /// Where it happened: the process's node, or the node itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    /// The node a process left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeName>,
    /// Whether it concerns a replica (hot standby or move target).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replica: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultKind>,
    /// The logical time it concerns (a fault's call, a checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// How many: processes placed at once, deadline misses in a burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// How long: a migration, the pause of a process's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<f64>,
    pub message: String,
}

impl EventEntry {
    /// An event of `kind`, not numbered yet (the controller's stream gives
    /// it its `seq` and time when it records it).
    pub fn new(kind: EventKind, message: impl Into<String>) -> EventEntry {
        EventEntry {
            seq: 0,
            at_unix_ms: 0,
            kind,
            app: None,
            process: None,
            node: None,
            from: None,
            replica: false,
            fault: None,
            tag: None,
            count: None,
            millis: None,
            message: message.into(),
        }
    }
    pub fn app(mut self, app: &AppName) -> Self {
        self.app = Some(app.clone());
        self
    }
    /// Of one process: its app and name.
    pub fn process(mut self, who: &ProcessRef) -> Self {
        self.app = Some(who.app.clone());
        self.process = Some(who.process.clone());
        self
    }
    pub fn node(mut self, node: &NodeName) -> Self {
        self.node = Some(node.clone());
        self
    }
    pub fn from(mut self, node: &NodeName) -> Self {
        self.from = Some(node.clone());
        self
    }
    pub fn replica(mut self, replica: bool) -> Self {
        self.replica = replica;
        self
    }
    pub fn fault(mut self, kind: FaultKind) -> Self {
        self.fault = Some(kind);
        self
    }
    pub fn tag(mut self, tag: Option<Tag>) -> Self {
        self.tag = tag;
        self
    }
    pub fn count(mut self, count: u64) -> Self {
        self.count = Some(count);
        self
    }
    pub fn millis(mut self, millis: f64) -> Self {
        self.millis = Some(millis);
        self
    }

    /// When the controller recorded it.
    pub fn at(&self) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.at_unix_ms)
    }

    /// Whether it concerns `app` (and `process` of it, if given).
    pub fn concerns(&self, app: &AppName, process: Option<&ProcessName>) -> bool {
        self.app.as_ref() == Some(app) && process.is_none_or(|p| self.process.as_ref() == Some(p))
    }
}

/// A node's task monitor: how each of its processes keeps time, on
/// `node/<name>/monitor` (read by `weft top`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeMonitor {
    pub node: NodeName,
    pub rt_class: RtClass,
    pub processes: Vec<TaskEntry>,
}

/// One process in a task monitor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskEntry {
    pub app: AppName,
    pub process: ProcessName,
    pub class: Class,
    pub state: ProcessState,
    /// A replica (hot standby or move target), outputs held back.
    pub replica: bool,
    pub period_ns: Option<u64>,
    pub ticks: u64,
    pub messages_in: u64,
    pub deadline_misses: u64,
    pub faults: u64,
    pub restarts: u64,
    /// Fuel per call (tick or message), on average.
    pub fuel_per_call: Option<f64>,
    pub memory_bytes: u64,
    /// How long its calls take.
    pub cycle: TimeStats,
    /// How late its releases start.
    pub jitter: TimeStats,
}

/// Durations since a process started, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct TimeStats {
    pub last_us: f64,
    pub p50_us: f64,
    pub mean_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub p99_us: f64,
    pub samples: u64,
}
