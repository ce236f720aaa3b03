//! What the controller knows, in three parts kept apart:
//!
//! * [`Spec`]: what users asked for (apps, drained nodes), durable;
//! * [`Observed`]: what the nodes report (liveliness, statuses, the
//!   checkpoints that arrived), rebuilt after a restart;
//! * [`Current`]: what the controller decided (where each copy of each
//!   process runs, and the moves and handovers in flight), durable, so a
//!   restarted controller finishes what it started.
//!
//! `plan` turns the three into the next [`Current`]; nothing else changes
//! a placement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weft_fabric::proto::{NodeStatus, ProcessStatus};
use weft_manifest::{AppManifest, ProcessSpec};
use weft_types::{AppName, NodeName, ProcessName, ProcessRef, Role, Tag};

use crate::store::StoredApp;

/// One placed copy of a process: the process itself or one of its replicas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    pub process: ProcessName,
    pub role: Role,
}

impl Unit {
    pub fn primary(process: &ProcessName) -> Unit {
        Unit {
            process: process.clone(),
            role: Role::Primary,
        }
    }
    pub fn standby(process: &ProcessName) -> Unit {
        Unit {
            process: process.clone(),
            role: Role::Standby,
        }
    }
    pub fn moving(process: &ProcessName) -> Unit {
        Unit {
            process: process.clone(),
            role: Role::Moving,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Primary => write!(f, "{}", self.process),
            Role::Standby => write!(f, "{}'s standby", self.process),
            Role::Moving => write!(f, "{}'s move target", self.process),
        }
    }
}

/// Where every unit of one app runs.
pub type Placed = BTreeMap<Unit, NodeName>;

/// An app as the controller keeps it: the stored record and its parsed
/// manifest.
#[derive(Debug, Clone)]
pub struct App {
    pub record: StoredApp,
    pub manifest: Arc<AppManifest>,
}

impl App {
    pub fn spec(&self, process: &str) -> Option<&ProcessSpec> {
        self.manifest.process(process)
    }
}

/// What users asked for.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub apps: BTreeMap<AppName, App>,
    pub drained: BTreeSet<NodeName>,
}

/// One node as seen.
#[derive(Debug, Clone, Default)]
pub struct NodeSeen {
    pub alive: bool,
    pub status: Option<NodeStatus>,
}

/// What the nodes report.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: BTreeMap<NodeName, NodeSeen>,
    /// The tag of the newest stored checkpoint of each process.
    pub checkpoints: BTreeMap<ProcessRef, Tag>,
    /// Startup grace: a node never seen since the controller started is
    /// presumed alive (without a status), so its processes stay put while
    /// nodes reconnect.
    pub presume_unseen: bool,
}

impl Observed {
    pub fn alive(&self, node: &NodeName) -> bool {
        match self.nodes.get(node) {
            Some(seen) => seen.alive,
            None => self.presume_unseen,
        }
    }

    /// The status of an alive node.
    pub fn status(&self, node: &NodeName) -> Option<&NodeStatus> {
        self.nodes
            .get(node)
            .filter(|n| n.alive)
            .and_then(|n| n.status.as_ref())
    }

    /// What alive `node` reports of `process` of `app` at `generation`:
    /// the process itself (`replica` false) or a replica.
    pub fn reported(
        &self,
        node: &NodeName,
        app: &App,
        process: &ProcessName,
        replica: bool,
    ) -> Option<&ProcessStatus> {
        self.status(node)?.processes.iter().find(|p| {
            p.app == app.manifest.name
                && p.name == *process
                && p.replica == replica
                && p.generation == app.record.generation
        })
    }
}

/// A live move in flight: a replica on `to` catches up, then takes over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveIntent {
    pub to: NodeName,
    /// When it was asked for (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A process leaving a node that is still alive, without a replica to take
/// over: until `from` has stopped it and its final checkpoint has arrived,
/// the other nodes are still told it runs on `from`, so its new node does
/// not start it from an older checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub from: NodeName,
    /// When it began (ms since the Unix epoch).
    pub since_ms: u64,
}

/// What the controller decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub placed: BTreeMap<AppName, Placed>,
    pub moves: BTreeMap<ProcessRef, MoveIntent>,
    pub handovers: BTreeMap<ProcessRef, Handover>,
}

impl Current {
    /// The node `unit` of `app` runs on.
    pub fn node(&self, app: &AppName, unit: &Unit) -> Option<&NodeName> {
        self.placed.get(app)?.get(unit)
    }
}

/// Everything, behind the controller's one state lock.
#[derive(Debug, Default)]
pub struct State {
    pub spec: Spec,
    pub observed: Observed,
    pub current: Current,
    /// Why each unplaced unit waits, per app.
    pub pending: BTreeMap<AppName, BTreeMap<Unit, String>>,
    /// Placement warnings per app (see `plan::delay_warnings`).
    pub warnings: BTreeMap<AppName, Vec<String>>,
}
