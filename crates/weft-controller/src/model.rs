//! What the controller knows, in three parts kept apart:
//!
//! * [`Spec`]: what users asked for (apps, drained nodes), durable;
//! * [`Observed`]: what the nodes report (liveliness, statuses, which
//!   node holds which checkpoint), rebuilt after a restart;
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
use tracing::{debug, warn};
use weft_fabric::proto::{NodeStatus, ProcessStatus};
use weft_fabric::status::ReportKey;
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
    /// Whether a status of the node went missing and the view waits for
    /// its next full one (said once per gap).
    pub waits_for_full: bool,
}

/// What the nodes report.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: BTreeMap<NodeName, NodeSeen>,
    /// Which nodes hold a checkpoint of each process, at which tag (from
    /// their statuses; dead nodes' entries stay until the node reports
    /// again, and [`Observed::holders`] leaves them out).
    pub checkpoints: BTreeMap<ProcessRef, BTreeMap<NodeName, Tag>>,
    /// The newest checkpoint tag ever reported of each process, to tell
    /// when one resumed from an older one because the newer was lost.
    pub newest_checkpoint: BTreeMap<ProcessRef, Tag>,
    /// The latest incarnation seen of each process, and the newest
    /// checkpoint tag it lost: set when it resumed from an older checkpoint
    /// than the newest one known (or from none), because the nodes holding
    /// the newer one died.
    pub incarnations: BTreeMap<ProcessRef, (Incarnation, Option<Tag>)>,
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

    /// Records `node`'s status and the checkpoints it lists; true if it is
    /// the first status of an alive node.
    pub fn set_status(&mut self, node: NodeName, status: NodeStatus) -> bool {
        let seen = self.nodes.entry(node.clone()).or_default();
        let first = seen.status.is_none() && seen.alive;
        debug!(
            node = %node,
            seq = status.seq,
            delta = status.delta_of.is_some(),
            processes = status.processes.len(),
            checkpoints = status.checkpoints.len(),
            "node status"
        );
        let applied = match NodeStatus::apply(&mut seen.status, status) {
            Ok(applied) => applied,
            Err(gap) => {
                // Once per gap: a first status (held: nothing) is no news,
                // and the rest of the gap repeats every status interval.
                if !seen.waits_for_full && seen.status.is_some() {
                    let within = weft_fabric::status::StatusPolicy::default().full_every;
                    warn!(node = %node, "{gap}: a status went missing; this node's view stays as it was until its next full status (within {within:?})");
                }
                seen.waits_for_full = true;
                return false;
            }
        };
        seen.waits_for_full = false;
        for who in &applied.gone_checkpoints {
            self.forget_holder(who, &node);
        }
        self.note_losses(&node, &applied.processes);
        for c in applied.checkpoints {
            self.note_checkpoint(&node, ProcessRef::new(c.app, c.process), c.tag);
        }
        first
    }

    /// Notes that `node` holds `who`'s checkpoint at `tag`. Most calls
    /// update entries that exist, so those clone nothing: at 10,000
    /// processes every status carries thousands of them.
    fn note_checkpoint(&mut self, node: &NodeName, who: ProcessRef, tag: Tag) {
        match self.newest_checkpoint.get_mut(&who) {
            Some(newest) => *newest = (*newest).max(tag),
            None => {
                self.newest_checkpoint.insert(who.clone(), tag);
            }
        }
        match self.checkpoints.get_mut(&who) {
            Some(holders) => match holders.get_mut(node) {
                Some(held) => *held = tag,
                None => {
                    holders.insert(node.clone(), tag);
                }
            },
            None => {
                self.checkpoints
                    .insert(who, BTreeMap::from([(node.clone(), tag)]));
            }
        }
    }

    fn forget_holder(&mut self, who: &ProcessRef, node: &NodeName) {
        if let Some(holders) = self.checkpoints.get_mut(who) {
            holders.remove(node);
            if holders.is_empty() {
                self.checkpoints.remove(who);
            }
        }
    }

    /// Notes each new incarnation of a live process in `status`, and what
    /// it lost. One restored from a checkpoint lost state if a newer one
    /// was taken before it started (its own come after its first tag, and
    /// a promoted replica started before them); one started afresh lost
    /// all state if any checkpoint of it was known.
    fn note_losses(&mut self, node: &NodeName, changed: &[ReportKey]) {
        let Some(status) = self.nodes.get(node).and_then(|n| n.status.as_ref()) else {
            return;
        };
        let live = changed.iter().filter(|k| !k.replica);
        for p in live.filter_map(|k| status.reported(&k.app, &k.process, false)) {
            let Some(first) = p.first_tag_ns else {
                continue;
            };
            let who = ProcessRef::new(p.app.clone(), p.name.clone());
            let incarnation = Incarnation {
                node: node.clone(),
                first_tag_ns: first,
                restored_from_tag: p.restored_from_tag,
            };
            if self
                .incarnations
                .get(&who)
                .is_some_and(|(i, _)| *i == incarnation)
            {
                continue;
            }
            let newest = self.newest_checkpoint.get(&who).copied();
            let lost = newest.filter(|n| match p.restored_from_tag {
                Some(from) => n.0 > from && n.0 < first,
                None => true,
            });
            self.incarnations.insert(who, (incarnation, lost));
        }
    }

    /// The newest checkpoint tag lost by the incarnation of `who` that
    /// `node` reports as `status` (see [`Observed::incarnations`]).
    pub fn lost_checkpoint(
        &self,
        who: &ProcessRef,
        node: &NodeName,
        status: &ProcessStatus,
    ) -> Option<Tag> {
        let (incarnation, lost) = self.incarnations.get(who)?;
        let same = incarnation.node == *node
            && Some(incarnation.first_tag_ns) == status.first_tag_ns
            && incarnation.restored_from_tag == status.restored_from_tag;
        lost.filter(|_| same)
    }

    /// The alive nodes holding a checkpoint of `who`, newest first (ties
    /// by name).
    pub fn holders(&self, who: &ProcessRef) -> Vec<(&NodeName, Tag)> {
        let mut holders: Vec<(&NodeName, Tag)> = self.alive_holders(who).collect();
        holders.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        holders
    }

    /// The newest checkpoint tag an alive node holds of `who`.
    pub fn checkpoint_tag(&self, who: &ProcessRef) -> Option<Tag> {
        self.alive_holders(who).map(|(_, tag)| tag).max()
    }

    fn alive_holders(&self, who: &ProcessRef) -> impl Iterator<Item = (&NodeName, Tag)> {
        self.checkpoints
            .get(who)
            .into_iter()
            .flatten()
            .filter(|(node, _)| self.nodes.get(*node).is_some_and(|n| n.alive))
            .map(|(node, tag)| (node, *tag))
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
        self.status(node)?
            .reported(&app.manifest.name, process, replica)
            .filter(|p| p.generation == app.record.generation)
    }
}

/// One run of a process on a node, as its reports tell it apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incarnation {
    pub node: NodeName,
    pub first_tag_ns: u64,
    pub restored_from_tag: Option<u64>,
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
