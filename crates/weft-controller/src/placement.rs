//! Placement: which node runs which unit (a process or one of its
//! replicas) of an app. A pure function of the app's candidates, the alive
//! nodes, the drained nodes and the current placement, so it is easy to
//! test and to reason about.
//!
//! Filters (all must hold): the pinned node (`placement.node`, or a move's
//! target), every `placement.labels` pair, every device the process is
//! granted (`device:<name>`), the real-time class (`placement.rt_class`),
//! a free slot (counting units placed earlier in the same pass), and
//! anti-affinity (never on the node of a unit it must stay apart from; it
//! is symmetric). Drained nodes take nothing.
//!
//! Stability first: a unit whose current node is alive, not drained and
//! still eligible stays there, and a unit marked `keep` stays on its alive
//! node whatever (a process being moved waits where it runs). A node that
//! is alive but has not reported a status yet keeps what it has but takes
//! nothing new.
//!
//! Then score, best first: `rt` processes prefer `hard` real-time nodes;
//! a process prefers the node that holds its newest checkpoint (it starts
//! from it without a transfer); fewer units of the same app on the node
//! (spread); more free slots; node name (deterministic tie-break).
//!
//! Apart from placement proper, [`checkpoint_peer`] picks the node that
//! keeps a copy of each process's checkpoints.

use std::collections::{BTreeMap, BTreeSet};

use weft_manifest::{Class, ProcessSpec};
use weft_types::{NodeName, ProcessRef, Role, RtClass};

use crate::model::{Placed, Unit};

/// What placement needs to know about one alive node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: NodeName,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    /// `None` until the node reports it.
    pub rt_class: Option<RtClass>,
    /// Slots available to this app: the node's capacity minus what other
    /// apps already occupy there.
    pub free_slots: u32,
    /// False while the node is alive but its status has not arrived yet
    /// (or, after a controller restart, while it is only presumed alive).
    pub reported: bool,
}

/// One unit to place.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub unit: Unit,
    /// The process's spec (a replica has its process's).
    pub spec: &'a ProcessSpec,
    /// Units this one must not share a node with, besides what the specs'
    /// `anti_affinity` say about primaries.
    pub apart_from: Vec<Unit>,
    /// Must run on this node (a move's target), instead of the spec's pin.
    pub node: Option<NodeName>,
    /// Stays on its current node while that node is alive, even drained.
    pub keep: bool,
    /// A node this unit would rather run on when it must be placed (the
    /// holder of its newest checkpoint).
    pub prefer: Option<NodeName>,
}

impl Candidate<'_> {
    fn pinned(&self) -> Option<&NodeName> {
        self.node.as_ref().or(self.spec.placement.node.as_ref())
    }
}

/// The result of placing one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Unit -> node, for every placeable unit.
    pub assignment: Placed,
    /// Unit -> why no node can take it.
    pub pending: BTreeMap<Unit, String>,
}

/// Places the units of one app. See the module documentation.
pub fn place(
    candidates: &[Candidate],
    nodes: &[NodeView],
    drained: &BTreeSet<NodeName>,
    current: &Placed,
) -> Outcome {
    let mut pass = Pass::new(candidates);

    // Keep healthy placements.
    for c in candidates {
        let Some(node) = current
            .get(&c.unit)
            .and_then(|n| nodes.iter().find(|v| &v.name == n))
        else {
            continue;
        };
        let ok = if c.keep {
            true
        } else if drained.contains(&node.name) {
            false
        } else if node.reported {
            pass.failures(c, node, drained).is_empty()
        } else {
            pass.pinned_ok(c, node) && pass.anti_affinity_conflict(c, node).is_none()
        };
        if ok {
            pass.assign(c, node);
        }
    }

    // Place the rest.
    let mut pending = BTreeMap::new();
    for c in candidates {
        if pass.placed.contains_key(&c.unit) {
            continue;
        }
        let best = nodes
            .iter()
            .filter(|n| pass.failures(c, n, drained).is_empty())
            .min_by_key(|n| {
                let prefers_hard = c.spec.class == Class::Rt && n.rt_class == Some(RtClass::Hard);
                let same_app = pass.used.get(&n.name).copied().unwrap_or(0);
                let free = n.free_slots.saturating_sub(same_app);
                let preferred = c.prefer.as_ref() == Some(&n.name);
                (
                    !prefers_hard,
                    !preferred,
                    same_app,
                    std::cmp::Reverse(free),
                    n.name.clone(),
                )
            });
        match best {
            Some(node) => pass.assign(c, node),
            None => {
                pending.insert(c.unit.clone(), pass.reason(c, nodes, drained));
            }
        }
    }
    Outcome {
        assignment: pass.placed,
        pending,
    }
}

/// Whether `node` can take `unit` given where the app's other units are;
/// `Err` lists every reason it cannot.
pub fn check_node(
    candidates: &[Candidate],
    unit: &Unit,
    node: &NodeView,
    drained: &BTreeSet<NodeName>,
    current: &Placed,
) -> Result<(), String> {
    let c = candidates
        .iter()
        .find(|c| &c.unit == unit)
        .ok_or_else(|| format!("no process {unit}"))?;
    let mut pass = Pass::new(candidates);
    for (other, on) in current.iter().filter(|(u, _)| u.process != unit.process) {
        pass.placed.insert(other.clone(), on.clone());
        *pass.used.entry(on.clone()).or_default() += 1;
    }
    let failures = pass.failures(c, node, drained);
    if failures.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = failures
        .into_iter()
        .map(|f| match f {
            Failure::Drained => "it is drained".to_string(),
            Failure::NoStatus => "it has not reported its status yet".to_string(),
            Failure::Pinned => format!(
                "the process is pinned to {:?}",
                c.pinned().map(NodeName::as_str).unwrap_or_default()
            ),
            Failure::Label(k, v) => format!("it lacks label {k}={v}"),
            Failure::Device(d) => format!("it has no device {d:?}"),
            Failure::RtClass(class) => format!(
                "its real-time class is {}, not {class}",
                node.rt_class
                    .map_or("unknown".to_string(), |c| c.to_string())
            ),
            Failure::Full => "it has no free process slot".to_string(),
            Failure::AntiAffinity(other) => format!("it runs {other} (anti-affinity)"),
        })
        .collect();
    Err(text.join("; "))
}

/// One reason a node cannot take a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Drained,
    NoStatus,
    Pinned,
    Label(String, String),
    Device(String),
    RtClass(RtClass),
    Full,
    AntiAffinity(Unit),
}

struct Pass<'a> {
    /// The candidates by unit (a placement checks pairs of them often: a
    /// search of the list made placing a 2,000-process app cubic).
    candidates: BTreeMap<&'a Unit, &'a Candidate<'a>>,
    /// Whether any candidate must stay apart from another: if none does,
    /// there is nothing to check pair by pair.
    any_apart: bool,
    placed: Placed,
    /// Units of this app per node, placed in this pass.
    used: BTreeMap<NodeName, u32>,
}

impl<'a> Pass<'a> {
    fn new(candidates: &'a [Candidate<'a>]) -> Pass<'a> {
        let any_apart = candidates
            .iter()
            .any(|c| !c.apart_from.is_empty() || !c.spec.placement.anti_affinity.is_empty());
        Pass {
            candidates: candidates.iter().map(|c| (&c.unit, c)).collect(),
            any_apart,
            placed: BTreeMap::new(),
            used: BTreeMap::new(),
        }
    }

    fn assign(&mut self, c: &Candidate, node: &NodeView) {
        self.placed.insert(c.unit.clone(), node.name.clone());
        *self.used.entry(node.name.clone()).or_default() += 1;
    }

    fn pinned_ok(&self, c: &Candidate, node: &NodeView) -> bool {
        c.pinned().is_none_or(|n| n == &node.name)
    }

    /// Whether `a` must not share a node with the placed unit `b`.
    fn apart(&self, a: &Candidate, b: &Unit) -> bool {
        let other = self.candidates.get(b);
        a.apart_from.contains(b)
            || other.is_some_and(|o| o.apart_from.contains(&a.unit))
            || (b.role == Role::Primary && a.spec.placement.anti_affinity.contains(&b.process))
            || (a.unit.role == Role::Primary
                && other.is_some_and(|o| o.spec.placement.anti_affinity.contains(&a.unit.process)))
    }

    /// The unit on `node` this one must not share it with, if any.
    fn anti_affinity_conflict(&self, c: &Candidate, node: &NodeView) -> Option<Unit> {
        if !self.any_apart {
            return None;
        }
        self.placed
            .iter()
            .filter(|(other, on)| *on == &node.name && *other != &c.unit)
            .map(|(other, _)| other)
            .find(|other| self.apart(c, other))
            .cloned()
    }

    fn failures(
        &self,
        c: &Candidate,
        node: &NodeView,
        drained: &BTreeSet<NodeName>,
    ) -> Vec<Failure> {
        let mut out = Vec::new();
        if drained.contains(&node.name) {
            out.push(Failure::Drained);
        }
        if !node.reported {
            out.push(Failure::NoStatus);
        }
        if !self.pinned_ok(c, node) {
            out.push(Failure::Pinned);
        }
        for (k, v) in &c.spec.placement.labels {
            if node.labels.get(k) != Some(v) {
                out.push(Failure::Label(k.clone(), v.clone()));
            }
        }
        for device in c.spec.devices() {
            if !node.devices.contains(&device) {
                out.push(Failure::Device(device));
            }
        }
        if let Some(class) = c.spec.placement.rt_class
            && node.rt_class != Some(class)
        {
            out.push(Failure::RtClass(class));
        }
        if node.reported && node.free_slots <= self.used.get(&node.name).copied().unwrap_or(0) {
            out.push(Failure::Full);
        }
        if let Some(other) = self.anti_affinity_conflict(c, node) {
            out.push(Failure::AntiAffinity(other));
        }
        out
    }

    /// Why no node takes `c`: every constraint that excludes some node,
    /// with the nodes it excludes.
    fn reason(&self, c: &Candidate, nodes: &[NodeView], drained: &BTreeSet<NodeName>) -> String {
        if nodes.is_empty() {
            return "no nodes are alive".into();
        }
        let failures: Vec<(&NodeView, Vec<Failure>)> = nodes
            .iter()
            .map(|n| (n, self.failures(c, n, drained)))
            .collect();
        let failing = |pred: &dyn Fn(&Failure) -> bool| -> Vec<&NodeView> {
            failures
                .iter()
                .filter(|(_, f)| f.iter().any(pred))
                .map(|(n, _)| *n)
                .collect()
        };
        let mut parts = Vec::new();
        pinned_reason(c, nodes, &failing, &mut parts);
        filter_reasons(c, nodes, &failing, &mut parts);
        let full = failing(&|f| *f == Failure::Full);
        if !full.is_empty() {
            parts.push(format!("a free slot (full: {})", names(&full)));
        }
        let anti: Vec<String> = failures
            .iter()
            .flat_map(|(n, fs)| {
                fs.iter().filter_map(move |f| match f {
                    Failure::AntiAffinity(other) => Some(format!("{} hosts {other}", n.name)),
                    _ => None,
                })
            })
            .collect();
        if !anti.is_empty() {
            parts.push(format!("anti-affinity ({})", anti.join(", ")));
        }
        let drained_nodes = failing(&|f| *f == Failure::Drained);
        if !drained_nodes.is_empty() {
            parts.push(format!(
                "not draining (draining: {})",
                names(&drained_nodes)
            ));
        }
        let silent = failing(&|f| *f == Failure::NoStatus);
        if !silent.is_empty() {
            parts.push(format!(
                "a reported status (no status yet: {})",
                names(&silent)
            ));
        }
        format!("no node satisfies: {}", parts.join(", "))
    }
}

type Failing<'a> = dyn Fn(&dyn Fn(&Failure) -> bool) -> Vec<&'a NodeView> + 'a;

fn names(ns: &[&NodeView]) -> String {
    ns.iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pinned_reason<'a>(
    c: &Candidate,
    nodes: &'a [NodeView],
    failing: &Failing<'a>,
    parts: &mut Vec<String>,
) {
    let Some(pinned) = c.pinned() else {
        return;
    };
    if nodes.iter().any(|n| &n.name == pinned) {
        if failing(&|f| *f == Failure::Pinned).len() < nodes.len() {
            parts.push(format!("node \"{pinned}\""));
        }
    } else {
        let alive: Vec<&NodeView> = nodes.iter().collect();
        parts.push(format!(
            "node \"{pinned}\" (not alive; alive: {})",
            names(&alive)
        ));
    }
}

/// The label, device and real-time-class constraints that exclude nodes.
fn filter_reasons<'a>(
    c: &Candidate,
    nodes: &'a [NodeView],
    failing: &Failing<'a>,
    parts: &mut Vec<String>,
) {
    for (k, v) in &c.spec.placement.labels {
        let bad = failing(&|f| matches!(f, Failure::Label(a, b) if a == k && b == v));
        if !bad.is_empty() {
            let detail = bad
                .iter()
                .map(|n| match n.labels.get(k) {
                    Some(have) => format!("{}: {k}={have}", n.name),
                    None => format!("{}: no {k}", n.name),
                })
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!("label {k}={v} ({detail})"));
        }
    }
    for device in c.spec.devices() {
        if !failing(&|f| matches!(f, Failure::Device(d) if *d == device)).is_empty() {
            let have: Vec<&NodeView> = nodes
                .iter()
                .filter(|n| n.devices.contains(&device))
                .collect();
            let have = if have.is_empty() {
                "none".to_string()
            } else {
                names(&have)
            };
            parts.push(format!("device \"{device}\" (has it: {have})"));
        }
    }
    if let Some(class) = c.spec.placement.rt_class {
        let bad = failing(&|f| matches!(f, Failure::RtClass(_)));
        if !bad.is_empty() {
            let detail = bad
                .iter()
                .map(|n| {
                    let have = n.rt_class.map_or("unknown".to_string(), |c| c.to_string());
                    format!("{}: {have}", n.name)
                })
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!("rt_class {class} ({detail})"));
        }
    }
}

/// The node that keeps a copy of `who`'s checkpoints besides the node
/// running it (`primary`): its hot standby's node when it has one, else
/// one of `alive` other than `primary` by rendezvous hashing, so each
/// process's peer is spread evenly, stays the same while its nodes do, and
/// does not change when its primary dies (the copy a takeover needs stays
/// where it is). `None` when no other node is alive.
pub fn checkpoint_peer<'a>(
    who: &ProcessRef,
    primary: Option<&NodeName>,
    standby: Option<&'a NodeName>,
    alive: impl IntoIterator<Item = &'a NodeName>,
) -> Option<&'a NodeName> {
    if let Some(standby) = standby.filter(|s| Some(*s) != primary) {
        return Some(standby);
    }
    alive
        .into_iter()
        .filter(|n| Some(*n) != primary)
        .max_by_key(|n| (rendezvous(who, n), n.as_str()))
}

/// A stable 64-bit hash of a process and a node (the same in every build
/// and run, so a restarted controller picks the same peers): FNV-1a, then
/// MurmurHash3's finalizer, without which names that differ only in their
/// last character (n1, n2, …) rank alike for many processes.
fn rendezvous(who: &ProcessRef, node: &NodeName) -> u64 {
    let text = format!("{who}@{node}");
    let mut h = text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests;
