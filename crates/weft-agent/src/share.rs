//! A node's share of an app, and how a change to it is applied: pure
//! functions of the assignments the controller sends, tested here.
//!
//! A change that leaves this node's share as it is (a peer moved between
//! other nodes, a hot standby here promoted) is applied in place: port keys
//! name the sending process, not its node, so no wiring changes. Every
//! other change restarts the share (see `apps`).

use std::collections::BTreeSet;

use weft_fabric::proto::AppAssignment;
use weft_types::{NodeName, ProcessName};

/// The processes `assignment` runs live on `node`.
pub(crate) fn live(assignment: &AppAssignment, node: &NodeName) -> BTreeSet<ProcessName> {
    assignment
        .placement
        .iter()
        .filter(|(_, n)| *n == node)
        .map(|(p, _)| p.clone())
        .collect()
}

/// The processes `assignment` runs a replica of on `node` (a hot standby,
/// or the target of a move): in step, outputs held back.
pub(crate) fn replicas(assignment: &AppAssignment, node: &NodeName) -> BTreeSet<ProcessName> {
    assignment
        .standby
        .iter()
        .filter(|(_, nodes)| nodes.contains(node))
        .map(|(p, _)| p.clone())
        .collect()
}

/// Everything `assignment` runs on `node`, live or as a replica.
pub(crate) fn all(assignment: &AppAssignment, node: &NodeName) -> BTreeSet<ProcessName> {
    live(assignment, node)
        .union(&replicas(assignment, node))
        .cloned()
        .collect()
}

/// How to go from the running `old` share to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing changes here.
    None,
    /// Applied in place: these replicas become the process.
    Promote(BTreeSet<ProcessName>),
    /// These replicas become the process, in place, before anything else
    /// changes: a replica that takes over re-sends the outputs it held back
    /// at its next call, which a restart would lose. The rest of the change
    /// (a restart) waits for the next sync.
    PromoteFirst(BTreeSet<ProcessName>),
    /// The share stops and starts again.
    Restart,
    /// Nothing of the app runs here any more.
    Stop,
}

/// What applying `new` to the running `old` share takes. `complete` is
/// false while a replica of the old share could not start yet (it waits
/// for a checkpoint): then the share restarts to try again.
pub(crate) fn change(
    old: &AppAssignment,
    new: Option<&AppAssignment>,
    node: &NodeName,
    complete: bool,
) -> Change {
    let Some(new) = new.filter(|n| !all(n, node).is_empty()) else {
        return Change::Stop;
    };
    if !complete {
        return Change::Restart;
    }
    if old == new {
        return Change::None;
    }
    let same_version = old.generation == new.generation
        && old.manifest == new.manifest
        && old.epoch_unix_ns == new.epoch_unix_ns;
    let (old_live, new_live) = (live(old, node), live(new, node));
    let promoted: BTreeSet<ProcessName> = replicas(old, node)
        .intersection(&new_live)
        .cloned()
        .collect();
    if same_version && all(old, node) == all(new, node) && old_live.is_subset(&new_live) {
        Change::Promote(new_live.difference(&old_live).cloned().collect())
    } else if !promoted.is_empty() {
        Change::PromoteFirst(promoted)
    } else {
        Change::Restart
    }
}

/// `old` with `promoted` running live on `node` instead of as replicas:
/// what a share runs after [`Change::PromoteFirst`].
pub(crate) fn promoted(
    old: &AppAssignment,
    promoted: &BTreeSet<ProcessName>,
    node: &NodeName,
) -> AppAssignment {
    let mut next = old.clone();
    for process in promoted {
        next.placement.insert(process.clone(), node.clone());
        if let Some(nodes) = next.standby.get_mut(process) {
            nodes.remove(node);
        }
    }
    next.standby.retain(|_, nodes| !nodes.is_empty());
    next
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn n(name: &str) -> NodeName {
        name.parse().unwrap()
    }

    fn p(name: &str) -> ProcessName {
        name.parse().unwrap()
    }

    /// pid on `pid_on` with its standby on `standby_on`; log on n3.
    fn assignment(pid_on: &str, standby_on: &str, generation: u64) -> AppAssignment {
        AppAssignment {
            app: "cell".parse().unwrap(),
            generation,
            manifest: format!("name = \"cell\" # {generation}"),
            placement: BTreeMap::from([(p("pid"), n(pid_on)), (p("log"), n("n3"))]),
            standby: BTreeMap::from([(p("pid"), [n(standby_on)].into())]),
            checkpoint_peers: BTreeMap::new(),
            checkpointed: Default::default(),
            epoch_unix_ns: 7,
        }
    }

    #[test]
    fn a_node_sees_its_live_processes_and_replicas() {
        let a = assignment("n1", "n2", 1);
        assert_eq!(live(&a, &n("n1")), [p("pid")].into());
        assert_eq!(replicas(&a, &n("n2")), [p("pid")].into());
        assert!(live(&a, &n("n2")).is_empty());
        assert_eq!(all(&a, &n("n3")), [p("log")].into());
    }

    #[test]
    fn changes_elsewhere_leave_a_share_alone() {
        let old = assignment("n1", "n2", 1);
        let mut moved = old.clone();
        moved.placement.insert(p("log"), n("n4"));
        assert_eq!(change(&old, Some(&old), &n("n1"), true), Change::None);
        assert_eq!(
            change(&old, Some(&moved), &n("n1"), true),
            Change::Promote(BTreeSet::new()),
            "log moved between other nodes: applied in place, nothing promoted"
        );
    }

    #[test]
    fn a_standby_that_becomes_the_process_is_promoted_in_place() {
        let old = assignment("n1", "n2", 1);
        let mut taken_over = assignment("n2", "n4", 1);
        taken_over.standby.clear();
        assert_eq!(
            change(&old, Some(&taken_over), &n("n2"), true),
            Change::Promote([p("pid")].into())
        );
        assert_eq!(
            change(&old, Some(&taken_over), &n("n1"), true),
            Change::Stop,
            "the old node runs nothing of the app any more"
        );
    }

    #[test]
    fn a_takeover_with_other_changes_promotes_first_and_restarts_later() {
        let old = assignment("n1", "n2", 1);
        // n1 died: pid's standby on n2 takes over, and log moves to n2 too.
        let mut new = assignment("n2", "n4", 1);
        new.placement.insert(p("log"), n("n2"));
        let change = change(&old, Some(&new), &n("n2"), true);
        assert_eq!(change, Change::PromoteFirst([p("pid")].into()));
        let halfway = promoted(&old, &[p("pid")].into(), &n("n2"));
        assert_eq!(live(&halfway, &n("n2")), [p("pid")].into());
        assert!(replicas(&halfway, &n("n2")).is_empty());
        assert_eq!(
            super::change(&halfway, Some(&new), &n("n2"), true),
            Change::Restart,
            "the next sync brings log"
        );
    }

    #[test]
    fn a_new_generation_a_demotion_or_a_waiting_replica_restarts() {
        let old = assignment("n1", "n2", 1);
        assert_eq!(
            change(&old, Some(&assignment("n1", "n2", 2)), &n("n1"), true),
            Change::Restart,
            "rolling update"
        );
        assert_eq!(
            change(&old, Some(&assignment("n2", "n1", 1)), &n("n1"), true),
            Change::Restart,
            "a process here becomes a replica: its state must be the primary's"
        );
        assert_eq!(change(&old, Some(&old), &n("n2"), false), Change::Restart);
        assert_eq!(change(&old, None, &n("n1"), true), Change::Stop);
    }
}
