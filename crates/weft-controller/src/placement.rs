//! Placement: which node runs which process of an app. A pure function of
//! the app's processes, the alive nodes, the drained nodes and the current
//! assignment, so it is easy to test and to reason about.
//!
//! Filters (all must hold): the pinned node (`placement.node`), every
//! `placement.labels` pair, every device the process is granted
//! (`device:<name>`), the real-time class (`placement.rt_class`), a free
//! slot (counting processes placed earlier in the same pass), and
//! anti-affinity (never on the node of a process it, or that, lists; it is
//! symmetric). Drained nodes take nothing.
//!
//! Stability first: a process whose current node is alive, not drained and
//! still eligible stays there. A node that is alive but has not reported a
//! status yet keeps what it has but takes nothing new.
//!
//! Then score, best first: `rt` processes prefer `hard` real-time nodes;
//! fewer processes of the same app on the node (spread); more free slots;
//! node name (deterministic tie-break).

use std::collections::{BTreeMap, BTreeSet};

use weft_manifest::{Class, ProcessSpec};

/// What placement needs to know about one alive node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub devices: Vec<String>,
    /// `hard`, `soft` or `none`.
    pub rt_class: String,
    /// Slots available to this app: the node's capacity minus what other
    /// apps already occupy there.
    pub free_slots: u32,
    /// False while the node is alive but its status has not arrived yet
    /// (or, after a controller restart, while it is only presumed alive).
    pub reported: bool,
}

/// The result of placing one app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Process -> node, for every placeable process.
    pub assignment: BTreeMap<String, String>,
    /// Process -> why no node can take it.
    pub pending: BTreeMap<String, String>,
}

/// Places the processes of one app. See the module documentation.
pub fn place(
    processes: &[ProcessSpec],
    nodes: &[NodeView],
    drained: &BTreeSet<String>,
    current: &BTreeMap<String, String>,
) -> Outcome {
    let mut pass = Pass {
        processes,
        placed: BTreeMap::new(),
        used: BTreeMap::new(),
    };

    // Keep healthy placements.
    for spec in processes {
        let Some(node) = current
            .get(&spec.name)
            .and_then(|n| nodes.iter().find(|v| &v.name == n))
        else {
            continue;
        };
        if drained.contains(&node.name) {
            continue;
        }
        let ok = if node.reported {
            pass.failures(spec, node, drained).is_empty()
        } else {
            pass.pinned_ok(spec, node) && pass.anti_affinity_ok(spec, node)
        };
        if ok {
            pass.assign(spec, node);
        }
    }

    // Place the rest.
    let mut pending = BTreeMap::new();
    for spec in processes {
        if pass.placed.contains_key(&spec.name) {
            continue;
        }
        let best = nodes
            .iter()
            .filter(|n| pass.failures(spec, n, drained).is_empty())
            .min_by_key(|n| {
                let prefers_hard = spec.class == Class::Rt && n.rt_class == "hard";
                let same_app = pass.used.get(&n.name).copied().unwrap_or(0);
                let free = n.free_slots.saturating_sub(same_app);
                (
                    !prefers_hard,
                    same_app,
                    std::cmp::Reverse(free),
                    n.name.clone(),
                )
            });
        match best {
            Some(node) => pass.assign(spec, node),
            None => {
                pending.insert(spec.name.clone(), pass.reason(spec, nodes, drained));
            }
        }
    }
    Outcome {
        assignment: pass.placed,
        pending,
    }
}

/// Whether `node` can take the process `name` given where the app's other
/// processes are; `Err` lists every reason it cannot.
pub fn check_node(
    processes: &[ProcessSpec],
    name: &str,
    node: &NodeView,
    drained: &BTreeSet<String>,
    current: &BTreeMap<String, String>,
) -> Result<(), String> {
    let spec = processes
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("no process {name:?}"))?;
    let mut pass = Pass {
        processes,
        placed: BTreeMap::new(),
        used: BTreeMap::new(),
    };
    for (process, on) in current.iter().filter(|(p, _)| *p != name) {
        pass.placed.insert(process.clone(), on.clone());
        *pass.used.entry(on.clone()).or_default() += 1;
    }
    let failures = pass.failures(spec, node, drained);
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
                spec.placement.node.as_deref().unwrap_or_default()
            ),
            Failure::Label(k, v) => format!("it lacks label {k}={v}"),
            Failure::Device(d) => format!("it has no device {d:?}"),
            Failure::RtClass(c) => format!("its real-time class is {:?}, not {c:?}", node.rt_class),
            Failure::Full => "it has no free process slot".to_string(),
            Failure::AntiAffinity(other) => format!("it runs {other:?} (anti-affinity)"),
        })
        .collect();
    Err(text.join("; "))
}

/// One reason a node cannot take a process.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Drained,
    NoStatus,
    Pinned,
    Label(String, String),
    Device(String),
    RtClass(String),
    Full,
    AntiAffinity(String),
}

struct Pass<'a> {
    processes: &'a [ProcessSpec],
    placed: BTreeMap<String, String>,
    /// Processes of this app per node, placed in this pass.
    used: BTreeMap<String, u32>,
}

impl Pass<'_> {
    fn assign(&mut self, spec: &ProcessSpec, node: &NodeView) {
        self.placed.insert(spec.name.clone(), node.name.clone());
        *self.used.entry(node.name.clone()).or_default() += 1;
    }

    fn pinned_ok(&self, spec: &ProcessSpec, node: &NodeView) -> bool {
        spec.placement.node.as_ref().is_none_or(|n| n == &node.name)
    }

    /// The process on `node` this one must not share it with, if any.
    fn anti_affinity_conflict(&self, spec: &ProcessSpec, node: &NodeView) -> Option<String> {
        self.placed
            .iter()
            .filter(|(other, on)| *on == &node.name && *other != &spec.name)
            .map(|(other, _)| other)
            .find(|other| {
                spec.placement.anti_affinity.contains(other)
                    || self
                        .processes
                        .iter()
                        .find(|p| &p.name == *other)
                        .is_some_and(|p| p.placement.anti_affinity.contains(&spec.name))
            })
            .cloned()
    }

    fn anti_affinity_ok(&self, spec: &ProcessSpec, node: &NodeView) -> bool {
        self.anti_affinity_conflict(spec, node).is_none()
    }

    fn failures(
        &self,
        spec: &ProcessSpec,
        node: &NodeView,
        drained: &BTreeSet<String>,
    ) -> Vec<Failure> {
        let mut out = Vec::new();
        if drained.contains(&node.name) {
            out.push(Failure::Drained);
        }
        if !node.reported {
            out.push(Failure::NoStatus);
        }
        if !self.pinned_ok(spec, node) {
            out.push(Failure::Pinned);
        }
        for (k, v) in &spec.placement.labels {
            if node.labels.get(k) != Some(v) {
                out.push(Failure::Label(k.clone(), v.clone()));
            }
        }
        for device in spec.devices() {
            if !node.devices.contains(&device) {
                out.push(Failure::Device(device));
            }
        }
        if let Some(class) = &spec.placement.rt_class
            && &node.rt_class != class
        {
            out.push(Failure::RtClass(class.clone()));
        }
        if node.reported && node.free_slots <= self.used.get(&node.name).copied().unwrap_or(0) {
            out.push(Failure::Full);
        }
        if let Some(other) = self.anti_affinity_conflict(spec, node) {
            out.push(Failure::AntiAffinity(other));
        }
        out
    }

    /// Why no node takes `spec`: every constraint that excludes some node,
    /// with the nodes it excludes.
    fn reason(&self, spec: &ProcessSpec, nodes: &[NodeView], drained: &BTreeSet<String>) -> String {
        if nodes.is_empty() {
            return "no nodes are alive".into();
        }
        let failures: Vec<(&NodeView, Vec<Failure>)> = nodes
            .iter()
            .map(|n| (n, self.failures(spec, n, drained)))
            .collect();
        let failing = |pred: &dyn Fn(&Failure) -> bool| -> Vec<&NodeView> {
            failures
                .iter()
                .filter(|(_, f)| f.iter().any(pred))
                .map(|(n, _)| *n)
                .collect()
        };
        let names = |ns: &[&NodeView]| {
            ns.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();

        if let Some(pinned) = &spec.placement.node {
            if nodes.iter().any(|n| &n.name == pinned) {
                if failing(&|f| *f == Failure::Pinned).len() < nodes.len() {
                    parts.push(format!("node \"{pinned}\""));
                }
            } else {
                let alive = nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                parts.push(format!("node \"{pinned}\" (not alive; alive: {alive})"));
            }
        }
        for (k, v) in &spec.placement.labels {
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
        for device in spec.devices() {
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
        if let Some(class) = &spec.placement.rt_class {
            let bad = failing(&|f| matches!(f, Failure::RtClass(_)));
            if !bad.is_empty() {
                let detail = bad
                    .iter()
                    .map(|n| format!("{}: {}", n.name, n.rt_class))
                    .collect::<Vec<_>>()
                    .join(", ");
                parts.push(format!("rt_class {class} ({detail})"));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_abi::Capability;

    fn spec(name: &str) -> ProcessSpec {
        ProcessSpec::new(name, format!("{name}.wasm"))
    }

    fn node(name: &str, slots: u32) -> NodeView {
        NodeView {
            name: name.into(),
            labels: BTreeMap::new(),
            devices: Vec::new(),
            rt_class: "soft".into(),
            free_slots: slots,
            reported: true,
        }
    }

    fn labelled(name: &str, k: &str, v: &str) -> NodeView {
        let mut n = node(name, 10);
        n.labels.insert(k.into(), v.into());
        n
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn no_nodes_means_pending() {
        let out = place(&[spec("a")], &[], &none(), &BTreeMap::new());
        assert!(out.assignment.is_empty());
        assert_eq!(out.pending["a"], "no nodes are alive");
    }

    #[test]
    fn pinned_node() {
        let mut s = spec("a");
        s.placement.node = Some("n2".into());
        let out = place(
            &[s.clone()],
            &[node("n1", 5), node("n2", 1)],
            &none(),
            &BTreeMap::new(),
        );
        assert_eq!(out.assignment, map(&[("a", "n2")]));

        s.placement.node = Some("n9".into());
        let out = place(&[s], &[node("n1", 5)], &none(), &BTreeMap::new());
        assert_eq!(
            out.pending["a"],
            "no node satisfies: node \"n9\" (not alive; alive: n1)"
        );
    }

    #[test]
    fn labels_filter_and_reason() {
        let mut s = spec("a");
        s.placement.labels.insert("zone".into(), "line-1".into());
        let nodes = [
            labelled("e1", "zone", "line-2"),
            labelled("e2", "zone", "line-1"),
            node("e3", 10),
        ];
        let out = place(&[s.clone()], &nodes, &none(), &BTreeMap::new());
        assert_eq!(out.assignment, map(&[("a", "e2")]));

        s.placement.labels.insert("zone".into(), "line-9".into());
        let out = place(&[s], &nodes, &none(), &BTreeMap::new());
        assert_eq!(
            out.pending["a"],
            "no node satisfies: label zone=line-9 (e1: zone=line-2, e2: zone=line-1, e3: no zone)"
        );
    }

    #[test]
    fn devices_filter_and_reason() {
        let mut s = spec("a");
        s.capabilities.insert(Capability::Device("plant".into()));
        let mut with = node("e2", 1);
        with.devices.push("plant".into());
        let out = place(
            &[s.clone()],
            &[node("e1", 10), with.clone()],
            &none(),
            &BTreeMap::new(),
        );
        assert_eq!(out.assignment, map(&[("a", "e2")]));

        let out = place(&[s.clone()], &[node("e1", 10)], &none(), &BTreeMap::new());
        assert_eq!(
            out.pending["a"],
            "no node satisfies: device \"plant\" (has it: none)"
        );

        // The device exists but its node is in the wrong zone.
        s.placement.labels.insert("zone".into(), "line-9".into());
        let out = place(&[s], &[node("e1", 10), with], &none(), &BTreeMap::new());
        let reason = &out.pending["a"];
        assert!(
            reason.contains("label zone=line-9 (e1: no zone, e2: no zone)"),
            "{reason}"
        );
        assert!(reason.contains("device \"plant\" (has it: e2)"), "{reason}");
    }

    #[test]
    fn rt_class_filter_and_preference() {
        let mut hard = node("z-hard", 1);
        hard.rt_class = "hard".into();
        let soft = node("a-soft", 10);

        // Required.
        let mut s = spec("a");
        s.placement.rt_class = Some("hard".into());
        let out = place(
            &[s.clone()],
            &[soft.clone(), hard.clone()],
            &none(),
            &BTreeMap::new(),
        );
        assert_eq!(out.assignment, map(&[("a", "z-hard")]));
        let out = place(&[s], std::slice::from_ref(&soft), &none(), &BTreeMap::new());
        assert_eq!(
            out.pending["a"],
            "no node satisfies: rt_class hard (a-soft: soft)"
        );

        // Preferred by rt processes despite fewer slots and a later name.
        let mut rt = spec("rt");
        rt.class = Class::Rt;
        let out = place(&[rt, spec("be")], &[soft, hard], &none(), &BTreeMap::new());
        assert_eq!(out.assignment, map(&[("rt", "z-hard"), ("be", "a-soft")]));
    }

    #[test]
    fn capacity_counts_the_same_pass() {
        let procs = [spec("a"), spec("b"), spec("c")];
        let out = place(
            &procs,
            &[node("n1", 1), node("n2", 1)],
            &none(),
            &BTreeMap::new(),
        );
        assert_eq!(out.assignment, map(&[("a", "n1"), ("b", "n2")]));
        assert_eq!(
            out.pending["c"],
            "no node satisfies: a free slot (full: n1, n2)"
        );
        let out = place(&procs, &[node("n1", 0)], &none(), &BTreeMap::new());
        assert_eq!(out.pending.len(), 3);
    }

    #[test]
    fn anti_affinity_is_symmetric() {
        let mut primary = spec("primary");
        primary.placement.anti_affinity.push("standby".into());
        let standby = spec("standby");
        let out = place(
            &[primary.clone(), standby.clone()],
            &[node("n1", 10), node("n2", 10)],
            &none(),
            &BTreeMap::new(),
        );
        assert_ne!(out.assignment["primary"], out.assignment["standby"]);

        // Only one node: the second waits, whichever names the other.
        let out = place(
            &[standby, primary],
            &[node("n1", 10)],
            &none(),
            &BTreeMap::new(),
        );
        assert_eq!(out.assignment, map(&[("standby", "n1")]));
        assert_eq!(
            out.pending["primary"],
            "no node satisfies: anti-affinity (n1 hosts standby)"
        );
    }

    #[test]
    fn spreads_then_prefers_free_slots_then_name() {
        let procs = [spec("a"), spec("b"), spec("c"), spec("d")];
        let out = place(
            &procs,
            &[node("n2", 10), node("n1", 10), node("n3", 20)],
            &none(),
            &BTreeMap::new(),
        );
        // n3 has the most free slots; then spread: n1 (name) then n2; then n3 again.
        assert_eq!(
            out.assignment,
            map(&[("a", "n3"), ("b", "n1"), ("c", "n2"), ("d", "n3")])
        );
    }

    #[test]
    fn stability_keeps_healthy_placements() {
        let procs = [spec("a"), spec("b")];
        // n9 would win on slots, but nothing moves.
        let current = map(&[("a", "n1"), ("b", "n1")]);
        let out = place(&procs, &[node("n1", 2), node("n9", 100)], &none(), &current);
        assert_eq!(out.assignment, current);
        assert!(out.pending.is_empty());
    }

    #[test]
    fn dead_and_drained_nodes_lose_their_processes() {
        let procs = [spec("a"), spec("b"), spec("c")];
        let current = map(&[("a", "dead"), ("b", "n1"), ("c", "n2")]);
        let drained: BTreeSet<String> = ["n2".to_string()].into();
        let out = place(
            &procs,
            &[node("n1", 10), node("n2", 10), node("n3", 10)],
            &drained,
            &current,
        );
        assert_eq!(out.assignment["b"], "n1", "healthy placement kept");
        assert_eq!(out.assignment["a"], "n3", "spread away from n1");
        assert_eq!(
            out.assignment["c"], "n1",
            "tie on spread and slots: by name"
        );

        let out = place(&[spec("x")], &[node("n2", 10)], &drained, &BTreeMap::new());
        assert_eq!(
            out.pending["x"],
            "no node satisfies: not draining (draining: n2)"
        );
    }

    #[test]
    fn kept_placement_that_became_ineligible_moves() {
        let mut s = spec("a");
        s.placement.labels.insert("zone".into(), "z2".into());
        let current = map(&[("a", "n1")]);
        let out = place(
            &[s],
            &[labelled("n1", "zone", "z1"), labelled("n2", "zone", "z2")],
            &none(),
            &current,
        );
        assert_eq!(out.assignment, map(&[("a", "n2")]));
    }

    #[test]
    fn unreported_nodes_keep_but_take_nothing_new() {
        let mut silent = node("n1", 0);
        silent.reported = false;
        let current = map(&[("a", "n1")]);
        let out = place(
            &[spec("a"), spec("b")],
            std::slice::from_ref(&silent),
            &none(),
            &current,
        );
        assert_eq!(out.assignment, current);
        assert_eq!(
            out.pending["b"],
            "no node satisfies: a reported status (no status yet: n1)"
        );
    }

    #[test]
    fn deterministic() {
        let procs: Vec<_> = (0..20).map(|i| spec(&format!("p{i}"))).collect();
        let nodes = [node("c", 7), node("a", 7), node("b", 3)];
        let one = place(&procs, &nodes, &none(), &BTreeMap::new());
        let two = place(&procs, &nodes, &none(), &BTreeMap::new());
        assert_eq!(one, two);
        assert_eq!(one.assignment.len(), 17);
        assert_eq!(one.pending.len(), 3);
    }
}
