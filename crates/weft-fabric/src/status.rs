//! Node statuses as deltas: what a node writes ([`StatusWriter`]) and how
//! a reader puts them back together ([`NodeStatus::apply`]).
//!
//! A node with thousands of processes cannot send all of them four times a
//! second: at 2,000 processes decoding those statuses was most of the
//! controller's CPU. So a status lists only the entries that changed since
//! the node's previous status, and a reader applies it to the view it
//! keeps. A change that matters to control (a new or gone process, a state,
//! a generation, a fault, a replica or handover) goes out in the next
//! status; progress alone (ticks, messages, hashes, checkpoint tags) of a
//! process with no replica is sent at most once per `refresh`, which bounds
//! the traffic by the number of processes, not by how fast they tick. A
//! delta carries at most `max_entries` entries, the changes that matter
//! first (process changes before checkpoints control has not heard of);
//! the rest wait for the next status. Every `full_every` the status
//! lists everything, so a reader that missed a delta (it is told so by
//! [`StatusGap`]) is whole again within that time.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_types::{AppName, ProcessName, ProcessRef};

use crate::proto::{HeldCheckpoint, NodeStatus, ProcessStatus};

/// Names one entry of a status's `processes`: a node may report a process
/// and, for a moment during a move, a replica of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReportKey {
    pub app: AppName,
    pub process: ProcessName,
    pub replica: bool,
}

impl ProcessStatus {
    pub fn key(&self) -> ReportKey {
        ReportKey {
            app: self.app.clone(),
            process: self.name.clone(),
            replica: self.replica,
        }
    }

    fn key_cmp(&self, app: &AppName, process: &ProcessName, replica: bool) -> std::cmp::Ordering {
        (&self.app, &self.name, self.replica).cmp(&(app, process, replica))
    }

    /// Whether `self` and `other` differ in progress only, which a reader
    /// can learn a little later without harm.
    fn same_but_progress(&self, other: &ProcessStatus) -> bool {
        self.app == other.app
            && self.name == other.name
            && self.replica == other.replica
            && self.generation == other.generation
            && self.state == other.state
            && self.reason == other.reason
            && self.faults == other.faults
            && self.restarts == other.restarts
            && self.restored_from_tag == other.restored_from_tag
            && self.first_tag_ns == other.first_tag_ns
            && self.resume_lateness_ns == other.resume_lateness_ns
    }
}

impl HeldCheckpoint {
    pub fn key(&self) -> ProcessRef {
        ProcessRef::new(self.app.clone(), self.process.clone())
    }
}

/// What a delta status says went away since the status it follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    #[serde(default)]
    pub processes: Vec<ReportKey>,
    #[serde(default)]
    pub checkpoints: Vec<ProcessRef>,
}

impl Gone {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.checkpoints.is_empty()
    }
}

/// A delta status that does not follow the status the reader holds: the
/// reader keeps its view and waits for the node's next full status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status {seq} of agent {pid} follows status {follows}, but the reader holds {held}")]
pub struct StatusGap {
    pub pid: u32,
    pub seq: u64,
    pub follows: u64,
    /// `pid:seq` of the status held, or `nothing`.
    pub held: String,
}

/// What applying a status changed, for a reader that keeps indexes.
#[derive(Debug, Default)]
pub struct Applied {
    /// Process entries new or changed.
    pub processes: Vec<ReportKey>,
    /// Checkpoint entries new or changed.
    pub checkpoints: Vec<HeldCheckpoint>,
    /// Checkpoints the node no longer holds.
    pub gone_checkpoints: Vec<ProcessRef>,
}

impl NodeStatus {
    /// Applies `next` to the view `held` of this node: a full status
    /// replaces it, a delta updates it if it follows the status held.
    pub fn apply(held: &mut Option<NodeStatus>, next: NodeStatus) -> Result<Applied, StatusGap> {
        match (next.delta_of, held.as_mut()) {
            (None, _) => Ok(replace(held, next)),
            (Some(follows), Some(view)) if view.pid == next.pid && view.seq == follows => {
                Ok(view.update(next))
            }
            (Some(follows), view) => Err(StatusGap {
                pid: next.pid,
                seq: next.seq,
                follows,
                held: view.map_or("nothing".into(), |v| format!("{}:{}", v.pid, v.seq)),
            }),
        }
    }

    /// The entry of `process` of `app` (or of its replica), found by
    /// binary search: the entries of a view built by [`NodeStatus::apply`]
    /// are in key order.
    pub fn reported(
        &self,
        app: &AppName,
        process: &ProcessName,
        replica: bool,
    ) -> Option<&ProcessStatus> {
        let at = self
            .processes
            .binary_search_by(|p| p.key_cmp(app, process, replica))
            .ok()?;
        Some(&self.processes[at])
    }

    /// Whether the view lists `process` of `app` as running here live.
    pub fn runs(&self, app: &AppName, process: &ProcessName) -> bool {
        self.reported(app, process, false).is_some()
    }

    /// Takes the node's fields from the delta `next`, and its entries into
    /// the entries held.
    fn update(&mut self, mut next: NodeStatus) -> Applied {
        let processes = std::mem::take(&mut next.processes);
        let checkpoints = std::mem::take(&mut next.checkpoints);
        let gone = std::mem::take(&mut next.gone);
        next.processes = std::mem::take(&mut self.processes);
        next.checkpoints = std::mem::take(&mut self.checkpoints);
        next.delta_of = None;
        *self = next;

        // Most deltas remove nothing; the ones that do are matched by
        // reference, since building each entry's key cloned two strings per
        // entry per status (a tenth of a busy controller's CPU at 10,000
        // processes).
        if !gone.processes.is_empty() {
            let gone: HashSet<(&AppName, &ProcessName, bool)> = gone
                .processes
                .iter()
                .map(|k| (&k.app, &k.process, k.replica))
                .collect();
            self.processes
                .retain(|p| !gone.contains(&(&p.app, &p.name, p.replica)));
        }
        if !gone.checkpoints.is_empty() {
            let gone: HashSet<(&AppName, &ProcessName)> = gone
                .checkpoints
                .iter()
                .map(|who| (&who.app, &who.process))
                .collect();
            self.checkpoints
                .retain(|c| !gone.contains(&(&c.app, &c.process)));
        }
        let mut applied = Applied {
            gone_checkpoints: gone.checkpoints,
            ..Applied::default()
        };
        for p in processes {
            applied.processes.push(p.key());
            upsert(&mut self.processes, p, process_order);
        }
        for c in checkpoints {
            applied.checkpoints.push(c.clone());
            upsert(&mut self.checkpoints, c, checkpoint_order);
        }
        applied
    }
}

/// A full status replaces the view; its entries are sorted so later
/// deltas and lookups can binary-search them.
fn replace(held: &mut Option<NodeStatus>, mut next: NodeStatus) -> Applied {
    next.processes.sort_by(process_order);
    next.checkpoints.sort_by(checkpoint_order);
    let now: HashSet<ProcessRef> = next.checkpoints.iter().map(HeldCheckpoint::key).collect();
    let gone_checkpoints = held
        .take()
        .map(|old| old.checkpoints)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.key())
        .filter(|k| !now.contains(k))
        .collect();
    let applied = Applied {
        processes: next.processes.iter().map(ProcessStatus::key).collect(),
        checkpoints: next.checkpoints.clone(),
        gone_checkpoints,
    };
    *held = Some(next);
    applied
}

fn process_order(a: &ProcessStatus, b: &ProcessStatus) -> Ordering {
    a.key_cmp(&b.app, &b.name, b.replica)
}

fn checkpoint_order(a: &HeldCheckpoint, b: &HeldCheckpoint) -> Ordering {
    (&a.app, &a.process).cmp(&(&b.app, &b.process))
}

/// Puts `entry` in the sorted `entries`, in place of the one it equals.
fn upsert<T>(entries: &mut Vec<T>, entry: T, order: fn(&T, &T) -> Ordering) {
    match entries.binary_search_by(|e| order(e, &entry)) {
        Ok(at) => entries[at] = entry,
        Err(at) => entries.insert(at, entry),
    }
}

/// How a node writes its statuses (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct StatusPolicy {
    /// How stale the progress of a process with no replica may get.
    pub refresh: Duration,
    /// How often a status lists everything.
    pub full_every: Duration,
    /// The most entries (processes and checkpoints) one delta carries.
    pub max_entries: usize,
}

impl Default for StatusPolicy {
    fn default() -> StatusPolicy {
        StatusPolicy {
            refresh: Duration::from_secs(1),
            full_every: Duration::from_secs(10),
            max_entries: 1024,
        }
    }
}

/// An entry as last sent.
#[derive(Debug)]
struct Sent<T> {
    entry: T,
    at: Instant,
}

/// Turns a node's complete statuses into the deltas it publishes,
/// remembering what it sent.
#[derive(Debug, Default)]
pub struct StatusWriter {
    policy: StatusPolicy,
    processes: HashMap<ReportKey, Sent<ProcessStatus>>,
    checkpoints: HashMap<ProcessRef, Sent<HeldCheckpoint>>,
    /// The previous status written, and when the last full one was.
    last: Option<(u64, Instant)>,
}

/// Why an entry goes out in this status.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Why {
    /// A change that matters to control.
    Change,
    /// A checkpoint a reader has not heard of, of a process with no
    /// replica: it waits behind process changes, which control acts on
    /// (after a node dies, the survivors start hundreds of processes and
    /// take their first checkpoints at once).
    NewCheckpoint,
    /// Progress not sent since this instant.
    Refresh(Instant),
}

impl StatusWriter {
    pub fn new(policy: StatusPolicy) -> StatusWriter {
        StatusWriter {
            policy,
            ..StatusWriter::default()
        }
    }

    /// Rewrites `status`, which lists everything, as what to publish.
    /// `hot` names the processes whose progress a reader needs at once
    /// (they have a replica somewhere, whose progress is compared with
    /// theirs); processes handed over are hot too.
    pub fn write(
        &mut self,
        mut status: NodeStatus,
        hot: &HashSet<ProcessRef>,
        now: Instant,
    ) -> NodeStatus {
        let full = match self.last {
            None => true,
            Some((_, full_at)) => now.duration_since(full_at) >= self.policy.full_every,
        };
        if full {
            self.write_full(&status, now);
            return status;
        }
        let handed: HashSet<ProcessRef> = status
            .handed_over
            .iter()
            .map(|h| ProcessRef::new(h.app.clone(), h.process.clone()))
            .collect();
        let is_hot = |app: &AppName, process: &ProcessName| {
            let who = ProcessRef::new(app.clone(), process.clone());
            hot.contains(&who) || handed.contains(&who)
        };
        let mut processes = Vec::new();
        let mut gone = Gone::default();
        let present: HashSet<ReportKey> = status.processes.iter().map(ProcessStatus::key).collect();
        for p in std::mem::take(&mut status.processes) {
            let why = match self.processes.get(&p.key()) {
                None => Some(Why::Change),
                Some(sent) if sent.entry == p => None,
                Some(sent) if !sent.entry.same_but_progress(&p) || is_hot(&p.app, &p.name) => {
                    Some(Why::Change)
                }
                Some(sent) => self.stale(sent.at, now),
            };
            processes.extend(why.map(|why| (why, p)));
        }
        let mut checkpoints = Vec::new();
        let held: HashSet<ProcessRef> =
            status.checkpoints.iter().map(HeldCheckpoint::key).collect();
        for c in std::mem::take(&mut status.checkpoints) {
            let hot = is_hot(&c.app, &c.process);
            let why = match self.checkpoints.get(&c.key()) {
                None if hot => Some(Why::Change),
                None => Some(Why::NewCheckpoint),
                Some(sent) if sent.entry == c => None,
                Some(_) if hot => Some(Why::Change),
                Some(sent) => self.stale(sent.at, now),
            };
            checkpoints.extend(why.map(|why| (why, c)));
        }
        self.processes.retain(|k, _| {
            let keep = present.contains(k);
            if !keep {
                gone.processes.push(k.clone());
            }
            keep
        });
        self.checkpoints.retain(|k, _| {
            let keep = held.contains(k);
            if !keep {
                gone.checkpoints.push(k.clone());
            }
            keep
        });
        self.pick(&mut status, processes, checkpoints, now);
        status.gone = gone;
        status.delta_of = self.last.map(|(seq, _)| seq);
        self.last = self.last.map(|(_, full_at)| (status.seq, full_at));
        status
    }

    fn stale(&self, sent_at: Instant, now: Instant) -> Option<Why> {
        (now.duration_since(sent_at) >= self.policy.refresh).then_some(Why::Refresh(sent_at))
    }

    fn write_full(&mut self, status: &NodeStatus, now: Instant) {
        self.processes = status
            .processes
            .iter()
            .map(|p| {
                (
                    p.key(),
                    Sent {
                        entry: p.clone(),
                        at: now,
                    },
                )
            })
            .collect();
        self.checkpoints = status
            .checkpoints
            .iter()
            .map(|c| {
                (
                    c.key(),
                    Sent {
                        entry: c.clone(),
                        at: now,
                    },
                )
            })
            .collect();
        self.last = Some((status.seq, now));
    }

    /// Puts in `status` the entries that go out now, changes first and
    /// then the stalest progress, at most `max_entries`; the rest stay
    /// unsent, so the next status finds them changed again.
    fn pick(
        &mut self,
        status: &mut NodeStatus,
        mut processes: Vec<(Why, ProcessStatus)>,
        mut checkpoints: Vec<(Why, HeldCheckpoint)>,
        now: Instant,
    ) {
        processes.sort_by(|a, b| a.0.cmp(&b.0));
        checkpoints.sort_by(|a, b| a.0.cmp(&b.0));
        let mut budget = self.policy.max_entries;
        let mut processes = processes.into_iter().peekable();
        let mut checkpoints = checkpoints.into_iter().peekable();
        while budget > 0 {
            // The more urgent of the two heads goes first.
            let take_process = match (processes.peek(), checkpoints.peek()) {
                (Some(p), Some(c)) => p.0 <= c.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_process {
                let (_, p) = processes.next().expect("peeked");
                self.processes.insert(
                    p.key(),
                    Sent {
                        entry: p.clone(),
                        at: now,
                    },
                );
                status.processes.push(p);
            } else {
                let (_, c) = checkpoints.next().expect("peeked");
                self.checkpoints.insert(
                    c.key(),
                    Sent {
                        entry: c.clone(),
                        at: now,
                    },
                );
                status.checkpoints.push(c);
            }
            budget -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_types::{ProcessState, RtClass, Tag};

    use super::*;

    fn process(name: &str, ticks: u64) -> ProcessStatus {
        let mut p = ProcessStatus::unreported(
            "cell".parse().unwrap(),
            name.parse().unwrap(),
            1,
            ProcessState::Running,
        );
        p.ticks = ticks;
        p
    }

    fn checkpoint(name: &str, tag: u64) -> HeldCheckpoint {
        HeldCheckpoint {
            app: "cell".parse().unwrap(),
            process: name.parse().unwrap(),
            tag: Tag(tag),
            bytes: 64,
        }
    }

    fn who(name: &str) -> ProcessRef {
        ProcessRef::new("cell".parse().unwrap(), name.parse().unwrap())
    }

    fn node(
        seq: u64,
        processes: Vec<ProcessStatus>,
        checkpoints: Vec<HeldCheckpoint>,
    ) -> NodeStatus {
        NodeStatus {
            name: "e1".parse().unwrap(),
            pid: 7,
            labels: Default::default(),
            devices: Vec::new(),
            device_reports: Vec::new(),
            rt_class: RtClass::Soft,
            dirty_tracking: None,
            cores: 2,
            memory_bytes: 1 << 30,
            free_slots: 10,
            slots: 10,
            delta_of: None,
            gone: Gone::default(),
            processes,
            handed_over: Vec::new(),
            checkpoint_bytes_sent: 0,
            checkpoints,
            seq,
            wants_sync: false,
        }
    }

    /// Statuses of `n` processes `p0..` at `ticks`, each with a checkpoint.
    fn all(seq: u64, n: usize, ticks: u64) -> NodeStatus {
        node(
            seq,
            (0..n).map(|i| process(&format!("p{i}"), ticks)).collect(),
            (0..n)
                .map(|i| checkpoint(&format!("p{i}"), ticks))
                .collect(),
        )
    }

    struct Link {
        writer: StatusWriter,
        view: Option<NodeStatus>,
        start: Instant,
    }

    impl Link {
        fn new(policy: StatusPolicy) -> Link {
            Link {
                writer: StatusWriter::new(policy),
                view: None,
                start: Instant::now(),
            }
        }

        /// Writes `status` at `ms` and applies it; returns what was sent.
        fn send(&mut self, status: NodeStatus, ms: u64, hot: &[&str]) -> NodeStatus {
            let hot = hot.iter().map(|p| who(p)).collect();
            let at = self.start + Duration::from_millis(ms);
            let sent = self.writer.write(status, &hot, at);
            NodeStatus::apply(&mut self.view, sent.clone()).expect("follows");
            sent
        }

        fn ticks(&self, name: &str) -> u64 {
            let view = self.view.as_ref().unwrap();
            view.reported(&"cell".parse().unwrap(), &name.parse().unwrap(), false)
                .unwrap()
                .ticks
        }
    }

    fn policy() -> StatusPolicy {
        StatusPolicy {
            refresh: Duration::from_secs(1),
            full_every: Duration::from_secs(10),
            max_entries: 100,
        }
    }

    #[test]
    fn changes_go_at_once_and_progress_once_per_refresh() {
        let mut link = Link::new(policy());
        let first = link.send(all(1, 3, 0), 0, &[]);
        assert_eq!((first.delta_of, first.processes.len()), (None, 3));

        // Progress only, 250 ms later: nothing but the hot process goes.
        let mut next = all(2, 3, 5);
        next.processes[1].state = ProcessState::Failed;
        let sent = link.send(next, 250, &["p2"]);
        assert_eq!(sent.delta_of, Some(1));
        let names: Vec<_> = sent.processes.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, ["p1", "p2"], "the failure and the hot process");
        assert_eq!(
            sent.checkpoints.len(),
            1,
            "only the hot process's checkpoint"
        );
        assert_eq!((link.ticks("p0"), link.ticks("p1")), (0, 5));

        // A second after p0 was last sent, its progress goes too.
        link.send(all(3, 3, 9), 1000, &["p2"]);
        assert_eq!(link.ticks("p0"), 9);
        assert_eq!(link.view.as_ref().unwrap().seq, 3);
    }

    #[test]
    fn a_delta_is_bounded_and_what_waits_goes_next() {
        let mut link = Link::new(policy());
        link.send(all(1, 10, 0), 0, &[]);
        // 300 new processes with checkpoints: 600 entries, 100 a status.
        let mut seq = 2;
        let mut sizes = Vec::new();
        loop {
            let sent = link.send(all(seq, 310, 0), seq * 250, &[]);
            sizes.push(sent.processes.len() + sent.checkpoints.len());
            let view = link.view.as_ref().unwrap();
            if view.processes.len() == 310 && view.checkpoints.len() == 310 {
                break;
            }
            seq += 1;
        }
        assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 600);
        // A change jumps the queue of refreshes.
        let mut next = all(seq + 1, 310, 1);
        next.processes[300].restarts = 1;
        let sent = link.send(next, (seq + 1) * 250, &[]);
        assert!(sent.delta_of.is_some());
        assert_eq!(sent.processes[0].restarts, 1, "{:?}", sent.processes[0]);
    }

    #[test]
    fn process_changes_go_before_new_checkpoints() {
        let mut link = Link::new(policy());
        link.send(all(1, 0, 0), 0, &[]);
        // 80 new processes with checkpoints, p0 hot: 160 entries, 100 go.
        let sent = link.send(all(2, 80, 0), 250, &["p0"]);
        assert_eq!(sent.processes.len(), 80, "every process change goes first");
        let names: Vec<_> = sent
            .checkpoints
            .iter()
            .map(|c| c.process.to_string())
            .collect();
        assert_eq!(names.len(), 20);
        assert!(names.contains(&"p0".to_string()), "the hot one is a change");
        let sent = link.send(all(3, 80, 0), 500, &["p0"]);
        assert_eq!((sent.processes.len(), sent.checkpoints.len()), (0, 60));
    }

    #[test]
    fn gone_entries_leave_the_view() {
        let mut link = Link::new(policy());
        link.send(all(1, 3, 0), 0, &[]);
        let mut next = all(2, 3, 0);
        next.processes.remove(0);
        next.checkpoints.remove(2);
        let sent = link.send(next, 250, &[]);
        assert_eq!(sent.gone.processes.len(), 1);
        assert_eq!(sent.gone.checkpoints, [who("p2")]);
        let view = link.view.as_ref().unwrap();
        let names: Vec<_> = view.processes.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, ["p1", "p2"]);
        assert_eq!(view.checkpoints.len(), 2);
    }

    #[test]
    fn a_missed_delta_leaves_the_view_until_the_next_full_status() {
        let mut link = Link::new(policy());
        link.send(all(1, 2, 0), 0, &[]);
        let mut failed = all(2, 2, 0);
        failed.processes[0].state = ProcessState::Failed;
        let lost = link
            .writer
            .write(failed.clone(), &HashSet::new(), link.start);
        assert_eq!(lost.delta_of, Some(1));
        // The next delta follows the lost one: refused, the view kept.
        let mut next = all(3, 2, 0);
        next.processes[1].state = ProcessState::Failed;
        let later = link.start + Duration::from_millis(500);
        let delta = link.writer.write(next, &HashSet::new(), later);
        let gap = NodeStatus::apply(&mut link.view, delta).unwrap_err();
        assert_eq!((gap.follows, gap.held.as_str()), (2, "7:1"));
        assert_eq!(link.view.as_ref().unwrap().seq, 1);
        // Ten seconds on, a full status makes the view whole.
        let mut whole = all(4, 2, 0);
        whole.processes[0].state = ProcessState::Failed;
        let sent = link.send(whole, 10_000, &[]);
        assert_eq!(sent.delta_of, None);
        let view = link.view.as_ref().unwrap();
        assert_eq!(view.processes[0].state, ProcessState::Failed);
    }

    #[test]
    fn a_view_from_another_agent_takes_only_a_full_status() {
        let mut view = Some(all(5, 1, 0));
        let mut delta = all(6, 1, 0);
        delta.pid = 8;
        delta.delta_of = Some(5);
        assert!(NodeStatus::apply(&mut view, delta).is_err());
        assert!(NodeStatus::apply(&mut None, all(1, 1, 0)).is_ok());
    }
}
