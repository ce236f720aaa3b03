//! The controller's event stream (`weft events`): what happened to apps,
//! processes and nodes, in the order the controller learnt it, each event
//! numbered. The newest [`KEEP`] are kept in memory, for readers, and in
//! redb, so a follower that reconnects (even to a restarted controller)
//! resumes after the last event it saw.
//!
//! Events come from three places:
//! * the plan's decisions ([`from_plan`]): placements, takeovers, moves,
//!   handovers;
//! * node statuses ([`status_events`]): what changed between two reports of
//!   a process says it started, faulted, restarted, parked or missed
//!   deadlines;
//! * the requests and the node liveliness the controller handles.
//!
//! Recording never waits for the disk: the service writes what is new in
//! batches ([`EventLog::unsaved`]), outside every lock readers take.
//! Readers see an event only once it is stored, so what a follower has
//! seen survives a `kill -9` of the controller, and a restarted one never
//! gives a number it has shown to another event.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use weft_fabric::proto::{EventEntry, NodeStatus, ProcessStatus};
use weft_types::{
    AppName, EventKind, LinkState, NodeName, ProcessName, ProcessRef, ProcessState, Role,
};

use crate::model::Unit;
use crate::plan::Event;
use crate::shared::now_ms;

/// How many events the controller keeps.
pub const KEEP: usize = weft_fabric::proto::EVENTS_KEPT;
/// Deadline misses and tardy messages of one process make at most one
/// event per this window; the next event counts all since the last.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);
/// More events than this of one kind, app and node at once (a deploy of
/// thousands, a node that died with them) are recorded as one, counted.
const GROUP_ABOVE: usize = 5;

/// The stream: numbered events, the newest [`KEEP`].
pub(crate) struct EventLog {
    ring: Mutex<Ring>,
    /// Bursts of deadline misses and tardy messages, per process.
    pub bursts: Mutex<Bursts>,
    /// The newest sequence number stored, for readers that wait.
    stored: watch::Sender<u64>,
    /// Wakes the writer when there is something to store.
    recorded: tokio::sync::Notify,
}

struct Ring {
    kept: VecDeque<EventEntry>,
    next_seq: u64,
    unsaved: Vec<EventEntry>,
    /// Readers see events up to this one.
    stored: u64,
}

/// What a reader asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub after: Option<u64>,
    pub app: Option<AppName>,
    pub process: Option<ProcessName>,
    pub limit: Option<u32>,
}

/// What a reader gets: the events, the newest sequence number, and the
/// oldest one still kept.
pub(crate) struct Answer {
    pub events: Vec<EventEntry>,
    pub last: u64,
    pub oldest: u64,
}

impl EventLog {
    /// A stream that carries on from `stored` (oldest first), numbering
    /// after the newest of them.
    pub fn recover(stored: Vec<EventEntry>) -> EventLog {
        let next_seq = stored.last().map_or(1, |e| e.seq + 1);
        let mut kept = VecDeque::from(stored);
        while kept.len() > KEEP {
            kept.pop_front();
        }
        EventLog {
            ring: Mutex::new(Ring {
                kept,
                next_seq,
                unsaved: Vec::new(),
                stored: next_seq - 1,
            }),
            bursts: Mutex::new(Bursts::default()),
            stored: watch::Sender::new(next_seq - 1),
            recorded: tokio::sync::Notify::new(),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers, stamps and keeps `events`, in order.
    pub fn record(&self, events: impl IntoIterator<Item = EventEntry>) {
        let at = now_ms();
        let mut ring = self.ring();
        for mut event in events {
            event.seq = ring.next_seq;
            event.at_unix_ms = at;
            ring.next_seq += 1;
            ring.kept.push_back(event.clone());
            ring.unsaved.push(event);
            if ring.kept.len() > KEEP {
                ring.kept.pop_front();
            }
        }
        let any = !ring.unsaved.is_empty();
        drop(ring);
        if any {
            self.recorded.notify_one();
        }
    }

    /// Waits until there are events to store.
    pub async fn wait_unsaved(&self) {
        self.recorded.notified().await
    }

    /// Takes what has not been written to the store yet.
    pub fn unsaved(&self) -> Vec<EventEntry> {
        std::mem::take(&mut self.ring().unsaved)
    }

    /// Shows readers the events up to `seq`, now stored.
    pub fn stored(&self, seq: u64) {
        let mut ring = self.ring();
        ring.stored = ring.stored.max(seq);
        let stored = ring.stored;
        drop(ring);
        self.stored.send_replace(stored);
    }

    /// Puts back a batch whose write failed, to be tried again.
    pub fn unsaved_again(&self, mut batch: Vec<EventEntry>) {
        let mut ring = self.ring();
        batch.append(&mut ring.unsaved);
        ring.unsaved = batch;
        drop(ring);
        self.recorded.notify_one();
    }

    /// The events that match `query`, oldest first.
    pub fn read(&self, query: &Query) -> Answer {
        let ring = self.ring();
        let after = query.after.unwrap_or(0);
        let limit = query.limit.map_or(usize::MAX, |l| l as usize);
        let start = ring.kept.partition_point(|e| e.seq <= after);
        let end = ring.kept.partition_point(|e| e.seq <= ring.stored);
        let events = ring
            .kept
            .range(start..end.max(start))
            .filter(|e| match &query.app {
                Some(app) => e.concerns(app, query.process.as_ref()),
                None => true,
            })
            .take(limit)
            .cloned()
            .collect();
        Answer {
            events,
            last: ring.stored,
            oldest: ring.kept.front().map_or(ring.next_seq, |e| e.seq),
        }
    }

    /// Waits until an event after `seq` is stored, or `timeout` passed.
    pub async fn wait_after(&self, seq: u64, timeout: Duration) {
        let mut last = self.stored.subscribe();
        let _ = tokio::time::timeout(timeout, last.wait_for(|last| *last > seq)).await;
    }
}

/// The events of the plan's decisions, those of many processes of one app
/// on one node grouped into one.
pub(crate) fn from_plan(events: &[Event]) -> Vec<EventEntry> {
    group(events.iter().map(entry_of).collect())
}

fn entry_of(event: &Event) -> EventEntry {
    use EventKind as K;
    match event {
        Event::Placed { app, unit, node } => {
            of_unit(K::Placed, app, unit, format!("{unit} placed on {node}")).node(node)
        }
        Event::Moved {
            app,
            unit,
            from,
            to,
        } => of_unit(K::Moved, app, unit, format!("{unit} moves from {from} to {to}"))
            .node(to)
            .from(from),
        Event::Lost {
            app,
            unit,
            from,
            reason,
        } => of_unit(
            K::Lost,
            app,
            unit,
            format!("{unit} lost its node {from}: {reason}"),
        )
        .from(from),
        Event::Pending { app, unit, reason } => {
            of_unit(K::Pending, app, unit, format!("{unit} is pending: {reason}"))
        }
        Event::TookOver { who, from, to } => EventEntry::new(
            K::Takeover,
            format!("{who}: node {from} is gone; its replica on {to} takes over"),
        )
        .process(who)
        .node(to)
        .from(from),
        Event::SwappedWithStandby { who, from, to } => EventEntry::new(
            K::StandbySwap,
            format!("{who} switches to its hot standby on {to}; {from} keeps the standby"),
        )
        .process(who)
        .node(to)
        .from(from),
        Event::MoveStarted { who, from, to } => EventEntry::new(
            K::MigrationBegun,
            format!("{who} moves live from drained {from} to {to}"),
        )
        .process(who)
        .node(to)
        .from(from),
        Event::MoveFinished {
            who,
            from,
            to,
            took_ms,
        } => EventEntry::new(
            K::MigrationDone,
            format!("{who} moved live from {from} to {to} in {took_ms} ms"),
        )
        .process(who)
        .node(to)
        .from(from)
        .millis(*took_ms as f64),
        Event::MoveAbandoned { who, to, why } => EventEntry::new(
            K::MigrationAbandoned,
            format!("{who}'s move to {to} abandoned: {why}"),
        )
        .process(who)
        .node(to),
        Event::HandoverStarted { who, from } => {
            EventEntry::new(K::HandoverBegun, format!("{who} hands over from {from}"))
                .process(who)
                .from(from)
        }
        Event::HandedOver { who, from } => {
            EventEntry::new(K::HandoverDone, format!("{who} handed over from {from}"))
                .process(who)
                .from(from)
        }
        Event::HandoverGivenUp { who, from, why } => EventEntry::new(
            K::HandoverGivenUp,
            format!("{who}'s handover from {from} given up ({why}); it resumes from its latest checkpoint"),
        )
        .process(who)
        .from(from),
        Event::DelayWarning { app, warning } => {
            EventEntry::new(K::Warning, warning.clone()).app(app)
        }
    }
}

fn of_unit(kind: EventKind, app: &AppName, unit: &Unit, message: String) -> EventEntry {
    EventEntry::new(kind, message)
        .process(&ProcessRef::new(app.clone(), unit.process.clone()))
        .replica(unit.role != Role::Primary)
}

/// Replaces every run of more than [`GROUP_ABOVE`] placed, lost, pending or
/// started events of one app, node and role by one event that counts them,
/// at the place of the first.
fn group(events: Vec<EventEntry>) -> Vec<EventEntry> {
    type Key = (EventKind, Option<AppName>, Option<NodeName>, bool);
    let key = |e: &EventEntry| -> Option<Key> {
        matches!(
            e.kind,
            EventKind::Placed | EventKind::Lost | EventKind::Pending | EventKind::Started
        )
        .then(|| {
            let node = e.node.clone().or_else(|| e.from.clone());
            (e.kind, e.app.clone(), node, e.replica)
        })
    };
    let mut sizes: HashMap<Key, usize> = HashMap::new();
    for k in events.iter().filter_map(key) {
        *sizes.entry(k).or_default() += 1;
    }
    let mut out = Vec::with_capacity(events.len());
    let mut written: HashMap<Key, ()> = HashMap::new();
    for event in events {
        let Some(k) = key(&event).filter(|k| sizes[k] > GROUP_ABOVE) else {
            out.push(event);
            continue;
        };
        if written.insert(k.clone(), ()).is_some() {
            continue;
        }
        let n = sizes[&k];
        let mut grouped = EventEntry::new(event.kind, grouped_message(&event, n))
            .replica(event.replica)
            .count(n as u64);
        grouped.app = event.app;
        grouped.node = event.node;
        grouped.from = event.from;
        out.push(grouped);
    }
    out
}

fn grouped_message(first: &EventEntry, n: usize) -> String {
    let app = first.app.as_ref().map_or("", |a| a.as_str());
    let what = match first.replica {
        true => format!("{n} replicas of {app}'s processes"),
        false => format!("{n} processes of {app}"),
    };
    let node = |n: &Option<NodeName>| n.as_ref().map_or("?".to_string(), |n| n.to_string());
    match first.kind {
        EventKind::Placed => format!("{what} placed on {}", node(&first.node)),
        EventKind::Lost => format!("{what} lost their node {}", node(&first.from)),
        EventKind::Pending => format!("{what} are pending"),
        _ => format!("{what} run on {}", node(&first.node)),
    }
}

/// When each process's last burst event was, and its count then.
#[derive(Debug, Default)]
pub(crate) struct Bursts(HashMap<(ProcessRef, bool, EventKind), (u64, u64)>);

impl Bursts {
    /// A burst event if `total` (which was `before` in the last report)
    /// grew and the window since the last event of this kind has passed.
    fn note(
        &mut self,
        key: (ProcessRef, bool, EventKind),
        before: u64,
        total: u64,
        now_ms: u64,
    ) -> Option<u64> {
        if total <= before {
            return None;
        }
        let window = BURST_WINDOW.as_millis() as u64;
        if self.0.len() > 4 * KEEP {
            // Processes that stopped missing long ago.
            self.0
                .retain(|_, (at, _)| now_ms.saturating_sub(*at) < 6 * window);
        }
        let since = match self.0.get(&key) {
            Some((at, _)) if now_ms.saturating_sub(*at) < window => return None,
            // Counts since the last event, unless the process restarted
            // from zero since.
            Some((_, then)) if *then <= before => *then,
            _ => before,
        };
        self.0.insert(key, (now_ms, total));
        Some(total - since)
    }
}

/// What changed in `node`'s processes between the view `held` and its next
/// status `next`, as events. A node the controller has no view of yet
/// (just started, or it just restarted) makes none: nothing says what
/// changed.
pub(crate) fn status_events(
    node: &NodeName,
    held: Option<&NodeStatus>,
    next: &NodeStatus,
    bursts: &mut Bursts,
    now_ms: u64,
) -> Vec<EventEntry> {
    let Some(held) = held else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in &next.processes {
        let before = held.reported(&p.app, &p.name, p.replica);
        process_events(node, before, p, bursts, now_ms, &mut out);
    }
    device_events(node, held, next, &mut out);
    group(out)
}

/// A device whose link changed state between two statuses.
fn device_events(node: &NodeName, held: &NodeStatus, next: &NodeStatus, out: &mut Vec<EventEntry>) {
    for now in &next.device_reports {
        let was = held.device_reports.iter().find(|d| d.name == now.name);
        if was.is_none_or(|d| d.state == now.state) {
            continue;
        }
        let (kind, why) = match now.state {
            LinkState::Connected => (
                EventKind::DeviceUp,
                format!(" again ({} reconnects)", now.reconnects),
            ),
            _ => (
                EventKind::DeviceDown,
                now.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
            ),
        };
        out.push(
            EventEntry::new(
                kind,
                format!(
                    "device {} ({}) on {node} is {}{why}",
                    now.name, now.kind, now.state
                ),
            )
            .node(node),
        );
    }
}

fn process_events(
    node: &NodeName,
    before: Option<&ProcessStatus>,
    now: &ProcessStatus,
    bursts: &mut Bursts,
    now_ms: u64,
    out: &mut Vec<EventEntry>,
) {
    let who = ProcessRef::new(now.app.clone(), now.name.clone());
    // Counters restart from zero with a new incarnation of the node.
    let was = |f: fn(&ProcessStatus) -> u64| before.map_or(0, f).min(f(now));
    let event = |kind, message: String| {
        EventEntry::new(kind, message)
            .process(&who)
            .node(node)
            .replica(now.replica)
    };
    let faults = now.faults - was(|p| p.faults);
    if faults > 0 {
        let mut e = event(EventKind::Fault, fault_message(now, faults)).count(faults);
        if let Some(f) = &now.last_fault {
            e = e.fault(f.kind).tag(f.tag);
        }
        out.push(e);
    }
    let restarted = now.restarts > was(|p| p.restarts);
    if restarted {
        out.push(event(
            EventKind::Restart,
            format!("{who} restarted on {node} ({} restarts)", now.restarts),
        ));
    }
    let state_was = before.map(|p| p.state);
    // A run's first tag is reported once it has run one; a report that
    // adds it is the same run.
    let new_run =
        before.is_none_or(|p| p.first_tag_ns.is_some() && p.first_tag_ns != now.first_tag_ns);
    match now.state {
        ProcessState::Running
            if !restarted && (state_was != Some(ProcessState::Running) || new_run) =>
        {
            out.push(started(
                event(EventKind::Started, String::new()),
                &who,
                node,
                now,
            ))
        }
        ProcessState::Parked | ProcessState::Failed if state_was != Some(now.state) => {
            let kind = match now.state {
                ProcessState::Parked => EventKind::Parked,
                _ => EventKind::Failed,
            };
            let reason = now.reason.as_deref().unwrap_or("no reason given");
            out.push(event(
                kind,
                format!("{who} {} on {node}: {reason}", now.state),
            ));
        }
        _ => {}
    }
    let bursts_of = [
        (
            EventKind::DeadlineMisses,
            was(|p| p.deadline_misses),
            now.deadline_misses,
            "deadline misses",
        ),
        (
            EventKind::Tardy,
            was(|p| p.tardy),
            now.tardy,
            "tardy messages",
        ),
    ];
    for (kind, before, total, what) in bursts_of {
        let key = (who.clone(), now.replica, kind);
        if let Some(n) = bursts.note(key, before, total, now_ms) {
            out.push(
                event(
                    kind,
                    format!("{who} on {node}: {n} {what} ({total} in all)"),
                )
                .count(n),
            );
        }
    }
}

fn fault_message(now: &ProcessStatus, faults: u64) -> String {
    let who = format!("{}/{}", now.app, now.name);
    let times = if faults > 1 {
        format!(" ({faults} times)")
    } else {
        String::new()
    };
    match &now.last_fault {
        Some(f) => {
            let at = f.tag.map(|t| format!(" at tag {t}")).unwrap_or_default();
            format!("{who} faulted{times}: {} fault{at}: {}", f.kind, f.message)
        }
        None => format!("{who} faulted{times}"),
    }
}

/// A started event says what the new run resumed from.
fn started(e: EventEntry, who: &ProcessRef, node: &NodeName, now: &ProcessStatus) -> EventEntry {
    let role = if now.replica { "'s replica" } else { "" };
    let from = match now.restored_from_tag {
        Some(tag) => format!(", restored from the checkpoint at tag {tag}"),
        None => String::new(),
    };
    let paused = now.resume_lateness_ns.map(|ns| ns as f64 / 1e6);
    let pause = paused
        .map(|ms| format!("; outputs paused {ms:.3} ms"))
        .unwrap_or_default();
    let e = EventEntry {
        message: format!("{who}{role} runs on {node}{from}{pause}"),
        tag: now.restored_from_tag.map(weft_types::Tag),
        ..e
    };
    match paused {
        Some(ms) => e.millis(ms),
        None => e,
    }
}

#[cfg(test)]
mod tests;
