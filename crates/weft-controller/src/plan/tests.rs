//! The plan, rule by rule: a world (spec, what the nodes report, what was
//! decided) goes in, the next decisions and their events come out.

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_fabric::proto::{HandedOver, HeldCheckpoint, NodeStatus, ProcessStatus};
use weft_manifest::AppManifest;
use weft_types::{AppName, NodeName, ProcessRef, ProcessState, RtClass, Tag};

use super::*;
use crate::model::{App, Current, Handover, MoveIntent, NodeSeen, Observed, Spec, Unit};
use crate::store::StoredApp;

const NOW: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

fn n(name: &str) -> NodeName {
    name.parse().unwrap()
}

fn who(text: &str) -> ProcessRef {
    text.parse().unwrap()
}

fn p(name: &str) -> Unit {
    Unit::primary(&name.parse().unwrap())
}

fn standby(name: &str) -> Unit {
    Unit::standby(&name.parse().unwrap())
}

fn moving(name: &str) -> Unit {
    Unit::moving(&name.parse().unwrap())
}

/// The test app: `pid` (rt, hot standby, on edge nodes), `log` (be), and a
/// connection between them with the given delay.
fn cell(delay: &str) -> App {
    let text = format!(
        "name = \"cell\"\n\
         [[process]]\nname = \"pid\"\nmodule = \"m.wasm\"\nclass = \"rt\"\nperiod = \"10ms\"\n\
         outputs = [\"out\"]\nstandby = \"hot\"\nplacement = {{ labels = {{ tier = \"edge\" }} }}\n\
         [[process]]\nname = \"log\"\nmodule = \"m.wasm\"\ninputs = [\"in\"]\n\
         [[connection]]\nfrom = \"pid.out\"\nto = \"log.in\"\ndelay = \"{delay}\"\n"
    );
    App {
        record: StoredApp {
            manifest: text.clone(),
            generation: 1,
            epoch_unix_ns: 0,
        },
        manifest: Arc::new(AppManifest::parse(&text, "cell.toml").unwrap()),
    }
}

fn world() -> (Spec, Observed) {
    let spec = Spec {
        apps: BTreeMap::from([("cell".parse().unwrap(), cell("10ms"))]),
        ..Spec::default()
    };
    let mut seen = Observed::default();
    for name in ["e1", "e2", "e3"] {
        seen.nodes.insert(n(name), alive(name, "edge"));
    }
    seen.nodes.insert(n("c1"), alive("c1", "cloud"));
    (spec, seen)
}

fn alive(name: &str, tier: &str) -> NodeSeen {
    NodeSeen {
        alive: true,
        status: Some(NodeStatus {
            name: n(name),
            pid: 1,
            labels: BTreeMap::from([("tier".into(), tier.into())]),
            devices: Vec::new(),
            device_reports: Vec::new(),
            rt_class: RtClass::Soft,
            dirty_tracking: None,
            cores: 2,
            memory_bytes: 1 << 30,
            free_slots: 10,
            slots: 10,
            delta_of: None,
            gone: Default::default(),
            processes: Vec::new(),
            handed_over: Vec::new(),
            checkpoint_bytes_sent: 0,
            checkpoints: Vec::new(),
            seq: 1,
            wants_sync: true,
        }),
        waits_for_full: false,
    }
}

/// Makes `node` list a checkpoint of `process` of the cell app at `tag`.
fn holds(seen: &mut Observed, node: &str, process: &str, tag: u64) {
    let mut status = seen.nodes[&n(node)].status.clone().unwrap();
    status.checkpoints.retain(|c| c.process != process);
    status.checkpoints.push(HeldCheckpoint {
        app: "cell".parse().unwrap(),
        process: process.parse().unwrap(),
        tag: Tag(tag),
        bytes: 0,
    });
    seen.set_status(n(node), status);
}

/// Makes `node` report `process` of the cell app at `last_tag`.
fn report(seen: &mut Observed, node: &str, process: &str, replica: bool, last_tag: u64) {
    let mut status = ProcessStatus::unreported(
        "cell".parse().unwrap(),
        process.parse().unwrap(),
        1,
        ProcessState::Running,
    );
    status.replica = replica;
    status.last_tag_ns = Some(last_tag);
    let mut view = seen.nodes[&n(node)].status.clone().unwrap();
    view.processes.push(status);
    seen.set_status(n(node), view);
}

fn placed(pairs: &[(Unit, &str)]) -> Current {
    let app: AppName = "cell".parse().unwrap();
    Current {
        placed: BTreeMap::from([(
            app,
            pairs.iter().map(|(u, node)| (u.clone(), n(node))).collect(),
        )]),
        ..Current::default()
    }
}

fn at(plan: &Plan, unit: &Unit) -> Option<String> {
    plan.current
        .node(&"cell".parse().unwrap(), unit)
        .map(|n| n.to_string())
}

fn running() -> Current {
    placed(&[(p("pid"), "e1"), (standby("pid"), "e2"), (p("log"), "c1")])
}

#[test]
fn a_new_app_is_placed_with_its_standby_apart() {
    let (spec, seen) = world();
    let plan = plan(&spec, &seen, &Current::default(), NOW);
    let (pid, sb) = (
        at(&plan, &p("pid")).unwrap(),
        at(&plan, &standby("pid")).unwrap(),
    );
    assert!(
        pid.starts_with('e') && sb.starts_with('e') && pid != sb,
        "{pid} {sb}"
    );
    assert!(at(&plan, &p("log")).is_some());
    assert_eq!(
        plan.events
            .iter()
            .filter(|e| matches!(e, Event::Placed { .. }))
            .count(),
        3
    );
}

#[test]
fn without_nodes_everything_is_pending_with_a_reason() {
    let (spec, _) = world();
    let plan = plan(&spec, &Observed::default(), &Current::default(), NOW);
    let pending = &plan.pending[&"cell".parse::<AppName>().unwrap()];
    assert_eq!(pending[&p("pid")], "no nodes are alive");
    assert!(plan.current.placed.values().all(|p| p.is_empty()));
}

#[test]
fn a_healthy_placement_stays() {
    let (spec, seen) = world();
    let plan = plan(&spec, &seen, &running(), NOW);
    assert_eq!(plan.current, running());
    assert!(plan.events.is_empty(), "{:?}", plan.events);
}

#[test]
fn a_dead_node_s_process_is_taken_over_by_its_standby() {
    let (spec, mut seen) = world();
    seen.nodes.get_mut(&n("e1")).unwrap().alive = false;
    let plan = plan(&spec, &seen, &running(), NOW);
    assert_eq!(at(&plan, &p("pid")).as_deref(), Some("e2"));
    assert_eq!(
        at(&plan, &standby("pid")).as_deref(),
        Some("e3"),
        "a new standby on the remaining edge node"
    );
    assert!(plan.events.contains(&Event::TookOver {
        who: who("cell/pid"),
        from: n("e1"),
        to: n("e2")
    }));
    assert!(
        plan.current.handovers.is_empty(),
        "nothing to hand over from a dead node"
    );
}

#[test]
fn a_dead_node_s_process_is_taken_over_by_its_move_target() {
    let (spec, mut seen) = world();
    let mut current = placed(&[(p("log"), "c1"), (moving("log"), "e3")]);
    current.moves.insert(
        who("cell/log"),
        MoveIntent {
            to: n("e3"),
            since_ms: NOW,
        },
    );
    seen.nodes.get_mut(&n("c1")).unwrap().alive = false;
    let plan = plan(&spec, &seen, &current, NOW);
    assert_eq!(at(&plan, &p("log")).as_deref(), Some("e3"));
    assert_eq!(at(&plan, &moving("log")), None);
    assert!(plan.current.moves.is_empty(), "the move is done");
}

#[test]
fn a_move_completes_once_its_replica_has_caught_up() {
    let (spec, mut seen) = world();
    let mut current = running();
    current
        .placed
        .values_mut()
        .next()
        .unwrap()
        .insert(moving("log"), n("e3"));
    current.moves.insert(
        who("cell/log"),
        MoveIntent {
            to: n("e3"),
            since_ms: NOW - 700,
        },
    );
    report(&mut seen, "c1", "log", false, 10 * S);
    report(&mut seen, "e3", "log", true, 8 * S);
    let behind = plan(&spec, &seen, &current, NOW);
    assert_eq!(
        at(&behind, &p("log")).as_deref(),
        Some("c1"),
        "2 s behind: it waits"
    );
    assert_eq!(at(&behind, &moving("log")).as_deref(), Some("e3"));
    assert!(behind.current.moves.contains_key(&who("cell/log")));

    seen.nodes
        .get_mut(&n("e3"))
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .processes[0]
        .last_tag_ns = Some(10 * S - CAUGHT_UP.as_nanos() as u64 / 2);
    let done = plan(&spec, &seen, &current, NOW);
    assert_eq!(at(&done, &p("log")).as_deref(), Some("e3"));
    assert_eq!(at(&done, &moving("log")), None);
    assert!(done.current.moves.is_empty());
    assert!(
        done.current.handovers.is_empty(),
        "a live move hands nothing over"
    );
    assert!(done.events.contains(&Event::MoveFinished {
        who: who("cell/log"),
        from: n("c1"),
        to: n("e3"),
        took_ms: 700,
    }));
}

#[test]
fn a_move_onto_the_standby_swaps_them() {
    let (spec, seen) = world();
    let mut current = running();
    current.moves.insert(
        who("cell/pid"),
        MoveIntent {
            to: n("e2"),
            since_ms: NOW,
        },
    );
    let plan = plan(&spec, &seen, &current, NOW);
    assert_eq!(at(&plan, &p("pid")).as_deref(), Some("e2"));
    assert_eq!(at(&plan, &standby("pid")).as_deref(), Some("e1"));
    assert!(plan.current.moves.is_empty());
}

#[test]
fn a_move_is_abandoned_when_its_target_dies_or_it_takes_too_long() {
    let (spec, mut seen) = world();
    let mut current = running();
    current
        .placed
        .values_mut()
        .next()
        .unwrap()
        .insert(moving("log"), n("e3"));
    current.moves.insert(
        who("cell/log"),
        MoveIntent {
            to: n("e3"),
            since_ms: NOW,
        },
    );
    let late = NOW + MOVE_TIMEOUT.as_millis() as u64 + 1;
    let timed_out = plan(&spec, &seen, &current, late);
    assert!(timed_out.current.moves.is_empty());
    assert_eq!(at(&timed_out, &p("log")).as_deref(), Some("c1"), "it stays");
    assert_eq!(at(&timed_out, &moving("log")), None);

    seen.nodes.get_mut(&n("e3")).unwrap().alive = false;
    let gone = plan(&spec, &seen, &current, NOW);
    assert!(
        gone.events
            .iter()
            .any(|e| matches!(e, Event::MoveAbandoned { why, .. } if why.contains("gone")))
    );
    assert_eq!(at(&gone, &p("log")).as_deref(), Some("c1"));
}

#[test]
fn draining_swaps_with_a_standby_or_starts_a_move() {
    let (mut spec, seen) = world();
    spec.drained.insert(n("e1"));
    spec.drained.insert(n("c1"));
    let plan = plan(&spec, &seen, &running(), NOW);
    assert_eq!(
        at(&plan, &p("pid")).as_deref(),
        Some("e2"),
        "its standby took over"
    );
    assert_eq!(at(&plan, &standby("pid")).as_deref(), Some("e3"));
    let mv = &plan.current.moves[&who("cell/log")];
    assert_ne!(mv.to, "c1");
    assert_eq!(
        at(&plan, &p("log")).as_deref(),
        Some("c1"),
        "it runs on the drained node until its replica has caught up"
    );
    assert_eq!(at(&plan, &moving("log")), Some(mv.to.to_string()));
}

#[test]
fn draining_the_only_eligible_node_leaves_the_process_pending() {
    let (mut spec, mut seen) = world();
    for name in ["e2", "e3", "c1"] {
        seen.nodes.remove(&n(name));
    }
    spec.drained.insert(n("e1"));
    let current = placed(&[(p("pid"), "e1")]);
    let plan = plan(&spec, &seen, &current, NOW);
    assert!(plan.current.moves.is_empty(), "no node to move to");
    assert_eq!(at(&plan, &p("pid")), None);
    let pending = &plan.pending[&"cell".parse::<AppName>().unwrap()][&p("pid")];
    assert!(pending.contains("draining: e1"), "{pending}");
}

#[test]
fn a_drained_node_takes_nothing_until_undrained() {
    let (mut spec, mut seen) = world();
    for name in ["e2", "e3"] {
        seen.nodes.remove(&n(name));
    }
    spec.drained.insert(n("e1"));
    let drained = plan(&spec, &seen, &Current::default(), NOW);
    assert_eq!(at(&drained, &p("pid")), None);
    spec.drained.clear();
    let undrained = plan(&spec, &seen, &Current::default(), NOW);
    assert_eq!(at(&undrained, &p("pid")).as_deref(), Some("e1"));
}

#[test]
fn a_process_placement_moves_off_a_live_node_is_handed_over() {
    let (spec, mut seen) = world();
    // e1 is no longer an edge node: pid must leave it, and has no standby
    // on a node it can move to... so placement moves it, with a handover.
    let mut current = placed(&[(p("pid"), "e1"), (p("log"), "c1")]);
    seen.nodes
        .get_mut(&n("e1"))
        .unwrap()
        .status
        .as_mut()
        .unwrap()
        .labels = BTreeMap::from([("tier".into(), "cloud".into())]);
    report(&mut seen, "e1", "pid", false, 5 * S);
    let started = plan(&spec, &seen, &current, NOW);
    let to = at(&started, &p("pid")).unwrap();
    assert_ne!(to, "e1");
    assert_eq!(started.current.handovers[&who("cell/pid")].from, "e1");
    current = started.current.clone();

    // e1 still runs it: the handover waits.
    let waiting = plan(&spec, &seen, &current, NOW + 1);
    assert!(waiting.current.handovers.contains_key(&who("cell/pid")));

    // e1 stopped it and keeps its final checkpoint at 5 s; until e1 lists
    // that checkpoint among those it holds, the handover waits.
    let e1 = seen
        .nodes
        .get_mut(&n("e1"))
        .unwrap()
        .status
        .as_mut()
        .unwrap();
    e1.processes.clear();
    e1.handed_over.push(HandedOver {
        app: "cell".parse().unwrap(),
        process: "pid".parse().unwrap(),
        generation: 1,
        tag: Tag(5 * S),
    });
    holds(&mut seen, "e1", "pid", 4 * S);
    let older = plan(&spec, &seen, &current, NOW + 2);
    assert!(older.current.handovers.contains_key(&who("cell/pid")));
    // A node slow to stop (5 s, longer than any RPC timeout) loses nothing:
    // the final state travels as a checkpoint, not in a reply that can
    // time out, and the handover waits for it.
    let slow = plan(&spec, &seen, &current, NOW + 5_000);
    assert!(slow.current.handovers.contains_key(&who("cell/pid")));
    holds(&mut seen, "e1", "pid", 5 * S);
    let done = plan(&spec, &seen, &current, NOW + 3);
    assert!(done.current.handovers.is_empty());
    assert!(done.events.contains(&Event::HandedOver {
        who: who("cell/pid"),
        from: n("e1")
    }));
}

#[test]
fn a_handover_is_given_up_when_its_node_dies_or_it_times_out() {
    let (spec, mut seen) = world();
    let mut current = placed(&[(p("pid"), "e2"), (p("log"), "c1")]);
    current.handovers.insert(
        who("cell/pid"),
        Handover {
            from: n("e1"),
            since_ms: NOW,
        },
    );
    report(&mut seen, "e1", "pid", false, S);
    let late = NOW + HANDOVER_TIMEOUT.as_millis() as u64 + 1;
    assert!(
        plan(&spec, &seen, &current, late)
            .current
            .handovers
            .is_empty()
    );
    assert!(
        !plan(&spec, &seen, &current, NOW)
            .current
            .handovers
            .is_empty()
    );
    seen.nodes.get_mut(&n("e1")).unwrap().alive = false;
    assert!(
        plan(&spec, &seen, &current, NOW)
            .current
            .handovers
            .is_empty()
    );
}

#[test]
fn a_zero_delay_between_nodes_is_warned_about() {
    let (mut spec, seen) = world();
    spec.apps.insert("cell".parse().unwrap(), cell("0ms"));
    let app: AppName = "cell".parse().unwrap();
    let apart = plan(&spec, &seen, &running(), NOW);
    let warnings = &apart.warnings[&app];
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("pid.out -> log.in") && warnings[0].contains("e1 to c1"),
        "{warnings:?}"
    );
    let together = placed(&[(p("pid"), "e1"), (standby("pid"), "e2"), (p("log"), "e1")]);
    assert!(
        plan(&spec, &seen, &together, NOW).warnings[&app].is_empty(),
        "same node: no network"
    );
}

#[test]
fn during_the_startup_grace_unseen_nodes_keep_their_processes() {
    let (spec, _) = world();
    let mut seen = Observed {
        presume_unseen: true,
        ..Observed::default()
    };
    let kept = plan(&spec, &seen, &running(), NOW);
    assert_eq!(kept.current, running());
    seen.presume_unseen = false;
    let lost = plan(&spec, &seen, &running(), NOW);
    assert_eq!(at(&lost, &p("pid")), None, "after the grace, they are gone");
}

#[test]
fn a_removed_app_leaves_nothing_behind() {
    let (mut spec, seen) = world();
    let mut current = running();
    current.moves.insert(
        who("cell/log"),
        MoveIntent {
            to: n("e3"),
            since_ms: NOW,
        },
    );
    spec.apps.clear();
    let plan = plan(&spec, &seen, &current, NOW);
    assert_eq!(plan.current, Current::default());
}

/// A 2,000-process app spreads evenly over three nodes, and planning
/// again keeps every placement. (Planning it took 21 s in a debug build
/// when placement searched its candidates list pair by pair, and the
/// drain rule copied the app's placements for every process.)
#[test]
fn a_two_thousand_process_app_spreads_evenly_and_stays_put() {
    let mut text = String::from("name = \"many\"\n");
    for i in 0..2000 {
        text.push_str(&format!(
            "[[process]]\nname = \"p{i}\"\nmodule = \"m.wasm\"\nperiod = \"100ms\"\n"
        ));
    }
    let app = App {
        record: StoredApp {
            manifest: text.clone(),
            generation: 1,
            epoch_unix_ns: 0,
        },
        manifest: Arc::new(AppManifest::parse(&text, "many.toml").unwrap()),
    };
    let name: AppName = "many".parse().unwrap();
    let spec = Spec {
        apps: BTreeMap::from([(name.clone(), app)]),
        ..Spec::default()
    };
    let mut seen = Observed::default();
    for node in ["e1", "e2", "e3"] {
        let mut a = alive(node, "edge");
        let status = a.status.as_mut().unwrap();
        (status.free_slots, status.slots) = (8000, 8000);
        seen.nodes.insert(n(node), a);
    }
    let first = plan(&spec, &seen, &Current::default(), NOW);
    let placed = &first.current.placed[&name];
    assert_eq!(placed.len(), 2000);
    let mut per_node = BTreeMap::<&NodeName, usize>::new();
    for node in placed.values() {
        *per_node.entry(node).or_default() += 1;
    }
    assert!(
        per_node.values().all(|&k| (666..=667).contains(&k)),
        "{per_node:?}"
    );
    let again = plan(&spec, &seen, &first.current, NOW + 1);
    assert_eq!(again.current.placed, first.current.placed);
}

/// What `weft ps` says a process lost: nothing when it resumed from the
/// newest checkpoint or is a promoted replica (started before the newest
/// checkpoints, from an older one); the newest tag when it resumed from an
/// older copy or afresh after checkpoints had been taken.
#[test]
fn a_new_incarnation_that_resumed_from_less_than_the_newest_checkpoint_says_what_it_lost() {
    let (_, mut seen) = world();
    let pid = who("cell/pid");
    // Runs on e1, which holds its checkpoint at 9 s.
    let run = |seen: &mut Observed, node: &str, first: u64, from: Option<u64>| {
        let mut status = seen.nodes[&n(node)].status.clone().unwrap();
        let mut p = ProcessStatus::unreported(
            "cell".parse().unwrap(),
            "pid".parse().unwrap(),
            1,
            ProcessState::Running,
        );
        p.first_tag_ns = Some(first);
        p.restored_from_tag = from;
        status.processes = vec![p.clone()];
        seen.set_status(n(node), status);
        seen.lost_checkpoint(&pid, &n(node), &p)
    };
    assert_eq!(
        run(&mut seen, "e1", 0, None),
        None,
        "a first start loses nothing"
    );
    holds(&mut seen, "e1", "pid", 9 * S);
    // Resumed on e2 from the newest: nothing lost.
    assert_eq!(run(&mut seen, "e2", 9 * S + 1, Some(9 * S)), None);
    // A replica started at 2 s from a checkpoint at 1 s, promoted now.
    assert_eq!(run(&mut seen, "e3", 2 * S, Some(S)), None);
    // Resumed from an older copy (8 s) after the 9 s one was lost.
    assert_eq!(run(&mut seen, "c1", 10 * S, Some(8 * S)), Some(Tag(9 * S)));
    // Started afresh after checkpoints were taken.
    assert_eq!(run(&mut seen, "e1", 0, None), Some(Tag(9 * S)));
}

/// A node's capacity is the slots it says it has: a delta status that has
/// not listed all its newly started processes yet (so free slots plus
/// processes listed falls short) must not make the planner think the node
/// full and unplace what runs there.
#[test]
fn capacity_is_the_slots_a_node_reports_not_free_plus_listed() {
    let mut status = alive("e1", "edge").status.unwrap();
    status.free_slots = 2;
    let view = place::reported_view(&n("e1"), &status, 3);
    assert_eq!(view.free_slots, 7, "10 slots, 3 taken by other apps");
    status.slots = 0;
    let view = place::reported_view(&n("e1"), &status, 0);
    assert_eq!(
        view.free_slots, 2,
        "a node that does not say: free + listed"
    );
}

#[test]
fn a_missing_status_leaves_the_view_until_a_full_one_and_is_noted_once() {
    let mut seen = Observed::default();
    let node = n("edge-1");
    let full = alive("edge-1", "edge").status.unwrap();
    seen.nodes.insert(node.clone(), alive("edge-1", "edge"));
    let mut gapped = full.clone();
    gapped.seq = 5;
    gapped.delta_of = Some(4);
    gapped.free_slots = 3;
    seen.set_status(node.clone(), gapped.clone());
    let view = &seen.nodes[&node];
    assert!(view.waits_for_full, "status 2 to 4 went missing");
    assert_eq!(
        view.status.as_ref().unwrap().free_slots,
        10,
        "the view stays"
    );
    let mut next = full;
    next.seq = 6;
    next.free_slots = 4;
    seen.set_status(node.clone(), next);
    let view = &seen.nodes[&node];
    assert!(!view.waits_for_full);
    assert_eq!(
        view.status.as_ref().unwrap().free_slots,
        4,
        "a full status replaces the view"
    );
}
