//! Hot standbys in the controller's state.
//!
//! A process with `standby = "hot"` has a replica on another node. The
//! controller treats that replica as one more entry of the app's
//! assignment, under the key `<process>~standby` (`~` cannot occur in a
//! process name), so placement, slot counting, persistence and syncing
//! handle it like any process: placement sees it as a copy of the process's
//! spec that must never share a node with the process (anti-affinity).
//! Nodes are told about standbys separately (`AppAssignment::standby`).
//!
//! Takeover happens before placement: a process whose node died and whose
//! standby's node is alive moves onto the standby's node, where the agent
//! promotes the running replica instead of starting anything; placement
//! then finds the process a new standby elsewhere.

use std::collections::BTreeMap;

use weft_manifest::ProcessSpec;

const SUFFIX: &str = "~standby";

/// The assignment key of the standby of `process`.
pub fn key(process: &str) -> String {
    format!("{process}{SUFFIX}")
}

/// The process whose standby `key` is, if it is a standby key.
pub fn of(key: &str) -> Option<&str> {
    key.strip_suffix(SUFFIX)
}

pub fn wants_standby(spec: &ProcessSpec) -> bool {
    spec.standby.as_deref() == Some("hot")
}

/// The app's processes followed by one placement spec per standby.
pub fn with_standbys(processes: &[ProcessSpec]) -> Vec<ProcessSpec> {
    let replicas = processes.iter().filter(|s| wants_standby(s)).map(|spec| {
        let mut replica = spec.clone();
        replica.name = key(&spec.name);
        replica.placement.anti_affinity.push(spec.name.clone());
        replica
    });
    processes.iter().cloned().chain(replicas).collect()
}

/// Moves every process whose node is dead onto its standby's node, if that
/// one is alive; returns (process, dead node, standby node) per takeover.
pub fn take_over(
    assignment: &mut BTreeMap<String, String>,
    processes: &[ProcessSpec],
    alive: impl Fn(&str) -> bool,
) -> Vec<(String, String, String)> {
    let mut taken = Vec::new();
    for spec in processes.iter().filter(|s| wants_standby(s)) {
        let (Some(primary), Some(standby)) = (
            assignment.get(&spec.name).cloned(),
            assignment.get(&key(&spec.name)).cloned(),
        ) else {
            continue;
        };
        if !alive(&primary) && alive(&standby) {
            assignment.remove(&key(&spec.name));
            assignment.insert(spec.name.clone(), standby.clone());
            taken.push((spec.name.clone(), primary, standby));
        }
    }
    taken
}

/// Splits an assignment into (process -> node, process -> standby node).
pub fn split(
    assignment: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut primaries = BTreeMap::new();
    let mut standbys = BTreeMap::new();
    for (k, node) in assignment {
        match of(k) {
            Some(process) => standbys.insert(process.to_string(), node.clone()),
            None => primaries.insert(k.clone(), node.clone()),
        };
    }
    (primaries, standbys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<ProcessSpec> {
        let mut pid = ProcessSpec::new("pid", "pid.wasm");
        pid.standby = Some("hot".into());
        vec![pid, ProcessSpec::new("log", "log.wasm")]
    }

    #[test]
    fn replicas_avoid_their_process() {
        let all = with_standbys(&specs());
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].name, "pid~standby");
        assert_eq!(all[2].placement.anti_affinity, vec!["pid".to_string()]);
        assert_eq!(of("pid~standby"), Some("pid"));
        assert_eq!(of("pid"), None);
    }

    #[test]
    fn takeover_only_from_a_dead_node_to_a_live_standby() {
        let mut a = BTreeMap::from([
            ("pid".to_string(), "n1".to_string()),
            ("pid~standby".to_string(), "n2".to_string()),
            ("log".to_string(), "n1".to_string()),
        ]);
        assert!(take_over(&mut a, &specs(), |_| true).is_empty());
        assert!(take_over(&mut a, &specs(), |n| n == "n1").is_empty());
        let taken = take_over(&mut a, &specs(), |n| n != "n1");
        assert_eq!(taken, vec![("pid".into(), "n1".into(), "n2".into())]);
        let (primaries, standbys) = split(&a);
        assert_eq!(primaries["pid"], "n2");
        assert!(standbys.is_empty());
    }
}
