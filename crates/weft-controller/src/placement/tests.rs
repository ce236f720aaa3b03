//! Placement, table by table.

use super::*;
use weft_abi::Capability;

fn spec(name: &str) -> ProcessSpec {
    ProcessSpec::new(name, format!("{name}.wasm"))
}

fn n(name: &str) -> NodeName {
    name.parse().unwrap()
}

fn u(name: &str) -> Unit {
    Unit::primary(&name.parse().unwrap())
}

/// Every spec as a primary, nothing else.
fn cands(specs: &[ProcessSpec]) -> Vec<Candidate<'_>> {
    specs
        .iter()
        .map(|spec| Candidate {
            unit: Unit::primary(&spec.name),
            spec,
            apart_from: Vec::new(),
            node: None,
            keep: false,
            prefer: None,
        })
        .collect()
}

fn node(name: &str, slots: u32) -> NodeView {
    NodeView {
        name: n(name),
        labels: BTreeMap::new(),
        devices: Vec::new(),
        rt_class: Some(RtClass::Soft),
        free_slots: slots,
        reported: true,
    }
}

fn labelled(name: &str, k: &str, v: &str) -> NodeView {
    let mut n = node(name, 10);
    n.labels.insert(k.into(), v.into());
    n
}

fn none() -> BTreeSet<NodeName> {
    BTreeSet::new()
}

fn map(pairs: &[(&str, &str)]) -> Placed {
    pairs.iter().map(|(a, b)| (u(a), n(b))).collect()
}

#[test]
fn no_nodes_means_pending() {
    let out = place(&cands(&[spec("a")]), &[], &none(), &BTreeMap::new());
    assert!(out.assignment.is_empty());
    assert_eq!(out.pending[&u("a")], "no nodes are alive");
}

#[test]
fn pinned_node() {
    let mut s = spec("a");
    s.placement.node = Some(n("n2"));
    let out = place(
        &cands(&[s.clone()]),
        &[node("n1", 5), node("n2", 1)],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("a", "n2")]));

    s.placement.node = Some(n("n9"));
    let out = place(&cands(&[s]), &[node("n1", 5)], &none(), &BTreeMap::new());
    assert_eq!(
        out.pending[&u("a")],
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
    let out = place(&cands(&[s.clone()]), &nodes, &none(), &BTreeMap::new());
    assert_eq!(out.assignment, map(&[("a", "e2")]));

    s.placement.labels.insert("zone".into(), "line-9".into());
    let out = place(&cands(&[s]), &nodes, &none(), &BTreeMap::new());
    assert_eq!(
        out.pending[&u("a")],
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
        &cands(&[s.clone()]),
        &[node("e1", 10), with.clone()],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("a", "e2")]));

    let out = place(
        &cands(&[s.clone()]),
        &[node("e1", 10)],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(
        out.pending[&u("a")],
        "no node satisfies: device \"plant\" (has it: none)"
    );

    // The device exists but its node is in the wrong zone.
    s.placement.labels.insert("zone".into(), "line-9".into());
    let out = place(
        &cands(&[s]),
        &[node("e1", 10), with],
        &none(),
        &BTreeMap::new(),
    );
    let reason = &out.pending[&u("a")];
    assert!(
        reason.contains("label zone=line-9 (e1: no zone, e2: no zone)"),
        "{reason}"
    );
    assert!(reason.contains("device \"plant\" (has it: e2)"), "{reason}");
}

#[test]
fn rt_class_filter_and_preference() {
    let mut hard = node("z-hard", 1);
    hard.rt_class = Some(RtClass::Hard);
    let soft = node("a-soft", 10);

    // Required.
    let mut s = spec("a");
    s.placement.rt_class = Some(RtClass::Hard);
    let out = place(
        &cands(&[s.clone()]),
        &[soft.clone(), hard.clone()],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("a", "z-hard")]));
    let out = place(
        &cands(&[s]),
        std::slice::from_ref(&soft),
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(
        out.pending[&u("a")],
        "no node satisfies: rt_class hard (a-soft: soft)"
    );

    // Preferred by rt processes despite fewer slots and a later name.
    let mut rt = spec("rt");
    rt.class = Class::Rt;
    let out = place(
        &cands(&[rt, spec("be")]),
        &[soft, hard],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("rt", "z-hard"), ("be", "a-soft")]));
}

#[test]
fn capacity_counts_the_same_pass() {
    let procs = [spec("a"), spec("b"), spec("c")];
    let out = place(
        &cands(&procs),
        &[node("n1", 1), node("n2", 1)],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("a", "n1"), ("b", "n2")]));
    assert_eq!(
        out.pending[&u("c")],
        "no node satisfies: a free slot (full: n1, n2)"
    );
    let out = place(&cands(&procs), &[node("n1", 0)], &none(), &BTreeMap::new());
    assert_eq!(out.pending.len(), 3);
}

#[test]
fn anti_affinity_is_symmetric() {
    let mut primary = spec("primary");
    primary
        .placement
        .anti_affinity
        .push("standby".parse().unwrap());
    let standby = spec("standby");
    let out = place(
        &cands(&[primary.clone(), standby.clone()]),
        &[node("n1", 10), node("n2", 10)],
        &none(),
        &BTreeMap::new(),
    );
    assert_ne!(out.assignment[&u("primary")], out.assignment[&u("standby")]);

    // Only one node: the second waits, whichever names the other.
    let out = place(
        &cands(&[standby, primary]),
        &[node("n1", 10)],
        &none(),
        &BTreeMap::new(),
    );
    assert_eq!(out.assignment, map(&[("standby", "n1")]));
    assert_eq!(
        out.pending[&u("primary")],
        "no node satisfies: anti-affinity (n1 hosts standby)"
    );
}

#[test]
fn spreads_then_prefers_free_slots_then_name() {
    let procs = [spec("a"), spec("b"), spec("c"), spec("d")];
    let out = place(
        &cands(&procs),
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
    let out = place(
        &cands(&procs),
        &[node("n1", 2), node("n9", 100)],
        &none(),
        &current,
    );
    assert_eq!(out.assignment, current);
    assert!(out.pending.is_empty());
}

#[test]
fn dead_and_drained_nodes_lose_their_processes() {
    let procs = [spec("a"), spec("b"), spec("c")];
    let current = map(&[("a", "dead"), ("b", "n1"), ("c", "n2")]);
    let drained: BTreeSet<NodeName> = [n("n2")].into();
    let out = place(
        &cands(&procs),
        &[node("n1", 10), node("n2", 10), node("n3", 10)],
        &drained,
        &current,
    );
    assert_eq!(out.assignment[&u("b")], "n1", "healthy placement kept");
    assert_eq!(out.assignment[&u("a")], "n3", "spread away from n1");
    assert_eq!(
        out.assignment[&u("c")],
        "n1",
        "tie on spread and slots: by name"
    );

    let out = place(
        &cands(&[spec("x")]),
        &[node("n2", 10)],
        &drained,
        &BTreeMap::new(),
    );
    assert_eq!(
        out.pending[&u("x")],
        "no node satisfies: not draining (draining: n2)"
    );
}

#[test]
fn kept_placement_that_became_ineligible_moves() {
    let mut s = spec("a");
    s.placement.labels.insert("zone".into(), "z2".into());
    let current = map(&[("a", "n1")]);
    let out = place(
        &cands(&[s]),
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
        &cands(&[spec("a"), spec("b")]),
        std::slice::from_ref(&silent),
        &none(),
        &current,
    );
    assert_eq!(out.assignment, current);
    assert_eq!(
        out.pending[&u("b")],
        "no node satisfies: a reported status (no status yet: n1)"
    );
}

#[test]
fn deterministic() {
    let procs: Vec<_> = (0..20).map(|i| spec(&format!("p{i}"))).collect();
    let nodes = [node("c", 7), node("a", 7), node("b", 3)];
    let one = place(&cands(&procs), &nodes, &none(), &BTreeMap::new());
    let two = place(&cands(&procs), &nodes, &none(), &BTreeMap::new());
    assert_eq!(one, two);
    assert_eq!(one.assignment.len(), 17);
    assert_eq!(one.pending.len(), 3);
}

#[test]
fn a_process_to_place_prefers_the_holder_of_its_checkpoint_but_not_over_its_filters() {
    let specs = [spec("a"), spec("b")];
    let mut c = cands(&specs);
    c[0].prefer = Some(n("n3"));
    let nodes = [node("n1", 9), node("n2", 9), node("n3", 1)];
    let out = place(&c, &nodes, &none(), &BTreeMap::new());
    assert_eq!(
        out.assignment[&u("a")],
        n("n3"),
        "the holder, though fuller"
    );
    // A holder that cannot take it (drained) is no preference at all.
    let drained = BTreeSet::from([n("n3")]);
    let out = place(&c, &nodes, &drained, &BTreeMap::new());
    assert_ne!(out.assignment[&u("a")], n("n3"));
    // A unit placed already stays where it is.
    let current = map(&[("a", "n1")]);
    let out = place(&c, &nodes, &none(), &current);
    assert_eq!(out.assignment[&u("a")], n("n1"));
}

#[test]
fn a_checkpoint_peer_is_the_standby_s_node_else_a_stable_other_node() {
    let who: ProcessRef = "cell/pid".parse().unwrap();
    let nodes: Vec<NodeName> = ["n1", "n2", "n3", "n4"].iter().map(|s| n(s)).collect();
    let (n1, n2) = (&nodes[0], &nodes[1]);
    assert_eq!(checkpoint_peer(&who, Some(n1), Some(n2), &nodes), Some(n2));
    let peer = checkpoint_peer(&who, Some(n1), None, &nodes).unwrap();
    assert_ne!(peer, n1, "never the process's own node");
    // When the process's node dies (it leaves the alive set) or the process
    // is not placed, the peer stays where the copy is.
    let without: Vec<NodeName> = nodes.iter().filter(|x| *x != n1).cloned().collect();
    assert_eq!(checkpoint_peer(&who, None, None, &without), Some(peer));
    // Placed on its peer, the process gets another one.
    let next = checkpoint_peer(&who, Some(peer), None, &without).unwrap();
    assert_ne!(next, peer);
    assert_eq!(checkpoint_peer(&who, Some(n1), None, [n1]), None, "alone");
    // Spread: over 400 processes on n1, each other node keeps about a third.
    let mut count: BTreeMap<&NodeName, u32> = BTreeMap::new();
    for i in 0..400 {
        let who: ProcessRef = format!("app/p{i}").parse().unwrap();
        *count
            .entry(checkpoint_peer(&who, Some(n1), None, &nodes).unwrap())
            .or_default() += 1;
    }
    assert_eq!(count.len(), 3, "{count:?}");
    assert!(count.values().all(|c| (90..=180).contains(c)), "{count:?}");
}
