//! Replicas: hot standbys and live moves, in the controller's state.
//!
//! A replica runs a process on a second node in step with it (same inputs,
//! same state, so the same outputs), with its outputs held back. Two kinds
//! exist:
//!
//! * a *standby* (`standby = "hot"`), permanent: when the process's node
//!   dies, the standby takes over;
//! * a *move* (`weft migrate`), transient: once the replica on the target
//!   has caught up, it takes over and the process stops on its old node.
//!
//! The controller keeps a replica as one more entry of the app's
//! assignment, under `<process>~standby` or `<process>~moving` (`~` cannot
//! occur in a process name), so placement, slot counting, persistence and
//! syncing handle it like any process: placement sees it as a copy of the
//! process's spec that must not share a node with the process or its other
//! replica. Nodes are told about replicas separately
//! (`AppAssignment::standby`), and promote one in place when it becomes
//! the process.

use std::collections::{BTreeMap, BTreeSet};

use weft_manifest::ProcessSpec;

const STANDBY: &str = "~standby";
const MOVING: &str = "~moving";

/// The assignment key of the standby of `process`.
pub fn key(process: &str) -> String {
    format!("{process}{STANDBY}")
}

/// The assignment key of the replica `process` is moving to.
pub fn moving_key(process: &str) -> String {
    format!("{process}{MOVING}")
}

/// The process whose replica `key` is, if it is a replica key.
pub fn of(key: &str) -> Option<&str> {
    key.strip_suffix(STANDBY)
        .or_else(|| key.strip_suffix(MOVING))
}

pub fn wants_standby(spec: &ProcessSpec) -> bool {
    spec.standby.as_deref() == Some("hot")
}

/// The app's processes followed by one placement spec per replica:
/// standbys, and moves (`process -> target node`) pinned to their target.
pub fn with_replicas(
    processes: &[ProcessSpec],
    moves: &BTreeMap<String, String>,
) -> Vec<ProcessSpec> {
    let replica = |spec: &ProcessSpec, key: String, other: String| {
        let mut replica = spec.clone();
        replica.name = key;
        replica.placement.anti_affinity.push(spec.name.clone());
        replica.placement.anti_affinity.push(other);
        replica
    };
    let standbys = processes
        .iter()
        .filter(|s| wants_standby(s))
        .map(|s| replica(s, key(&s.name), moving_key(&s.name)));
    let moving = processes.iter().filter_map(|s| {
        let to = moves.get(&s.name)?;
        let mut r = replica(s, moving_key(&s.name), key(&s.name));
        r.placement.node = Some(to.clone());
        Some(r)
    });
    processes
        .iter()
        .cloned()
        .chain(standbys)
        .chain(moving.collect::<Vec<_>>())
        .collect()
}

/// Moves every process whose node is dead onto a replica's node (its
/// standby first, else the node it was moving to), if that one is alive;
/// returns (process, dead node, new node) per takeover.
pub fn take_over(
    assignment: &mut BTreeMap<String, String>,
    processes: &[ProcessSpec],
    alive: impl Fn(&str) -> bool,
) -> Vec<(String, String, String)> {
    let mut taken = Vec::new();
    for spec in processes {
        let Some(primary) = assignment.get(&spec.name).cloned() else {
            continue;
        };
        if alive(&primary) {
            continue;
        }
        for replica in [key(&spec.name), moving_key(&spec.name)] {
            if let Some(node) = assignment.get(&replica).cloned().filter(|n| alive(n)) {
                assignment.remove(&replica);
                assignment.insert(spec.name.clone(), node.clone());
                taken.push((spec.name.clone(), primary, node));
                break;
            }
        }
    }
    taken
}

/// Completes a move: the replica on the target becomes the process.
/// Returns (old node, new node), or `None` if `process` has no move replica.
pub fn finish_move(
    assignment: &mut BTreeMap<String, String>,
    process: &str,
) -> Option<(String, String)> {
    let to = assignment.remove(&moving_key(process))?;
    let from = assignment.insert(process.to_string(), to.clone())?;
    Some((from, to))
}

/// Splits an assignment into (process -> node, process -> replica nodes).
pub fn split(
    assignment: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
    let mut primaries = BTreeMap::new();
    let mut replicas: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (k, node) in assignment {
        match of(k) {
            Some(process) => {
                replicas
                    .entry(process.to_string())
                    .or_default()
                    .insert(node.clone());
            }
            None => {
                primaries.insert(k.clone(), node.clone());
            }
        }
    }
    (primaries, replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ProcessSpec> {
        let mut pid = ProcessSpec::new("pid", "pid.wasm");
        pid.standby = Some("hot".into());
        vec![pid, ProcessSpec::new("log", "log.wasm")]
    }

    fn assignment(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replicas_avoid_their_process_and_each_other() {
        let moves = BTreeMap::from([("log".to_string(), "n3".to_string())]);
        let all = with_replicas(&specs(), &moves);
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pid", "log", "pid~standby", "log~moving"]);
        assert_eq!(all[2].placement.anti_affinity, ["pid", "pid~moving"]);
        assert_eq!(all[3].placement.node.as_deref(), Some("n3"));
        assert_eq!(of("pid~standby"), Some("pid"));
        assert_eq!(of("log~moving"), Some("log"));
        assert_eq!(of("pid"), None);
    }

    #[test]
    fn takeover_only_from_a_dead_node_to_a_live_replica() {
        let mut a = assignment(&[("pid", "n1"), ("pid~standby", "n2"), ("log", "n1")]);
        assert!(take_over(&mut a, &specs(), |_| true).is_empty());
        assert!(take_over(&mut a, &specs(), |n| n == "n1").is_empty());
        let taken = take_over(&mut a, &specs(), |n| n != "n1");
        assert_eq!(taken, vec![("pid".into(), "n1".into(), "n2".into())]);
        let (primaries, replicas) = split(&a);
        assert_eq!(primaries["pid"], "n2");
        assert_eq!(primaries["log"], "n1", "no replica: placement moves it");
        assert!(replicas.is_empty());
    }

    #[test]
    fn a_finished_move_makes_the_replica_the_process() {
        let mut a = assignment(&[("log", "n1"), ("log~moving", "n2")]);
        assert_eq!(split(&a).1["log"], BTreeSet::from(["n2".to_string()]));
        assert_eq!(finish_move(&mut a, "log"), Some(("n1".into(), "n2".into())));
        assert_eq!(a, assignment(&[("log", "n2")]));
        assert_eq!(finish_move(&mut a, "log"), None);
    }
}
