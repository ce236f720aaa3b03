use std::collections::BTreeMap;

use weft_fabric::proto::FaultNote;
use weft_types::{DeviceKind, DeviceReport, FaultKind, RtClass, Tag};

use super::*;

fn n(name: &str) -> NodeName {
    name.parse().unwrap()
}

fn who(text: &str) -> ProcessRef {
    text.parse().unwrap()
}

fn node_status(processes: Vec<ProcessStatus>) -> NodeStatus {
    NodeStatus {
        name: n("a"),
        pid: 1,
        labels: BTreeMap::new(),
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
        processes,
        handed_over: Vec::new(),
        checkpoint_bytes_sent: 0,
        checkpoints: Vec::new(),
        seq: 1,
        wants_sync: true,
    }
}

fn running(process: &str) -> ProcessStatus {
    let mut p = ProcessStatus::unreported(
        "cell".parse().unwrap(),
        process.parse().unwrap(),
        1,
        ProcessState::Running,
    );
    p.first_tag_ns = Some(1_000);
    p
}

fn kinds(events: &[EventEntry]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

fn changes(before: Vec<ProcessStatus>, after: Vec<ProcessStatus>) -> Vec<EventEntry> {
    let held = node_status(before);
    let next = node_status(after);
    status_events(&n("a"), Some(&held), &next, &mut Bursts::default(), 0)
}

#[test]
fn events_are_numbered_in_order_and_read_after_a_sequence_number() {
    let log = EventLog::recover(Vec::new());
    log.record([
        EventEntry::new(EventKind::NodeUp, "a joined").node(&n("a")),
        EventEntry::new(EventKind::Fault, "pid faulted").process(&who("cell/pid")),
        EventEntry::new(EventKind::Fault, "log faulted").process(&who("cell/log")),
        EventEntry::new(EventKind::Removed, "other removed").app(&"other".parse().unwrap()),
    ]);
    assert!(
        log.read(&Query::default()).events.is_empty(),
        "not stored yet"
    );
    log.stored(4);
    let all = log.read(&Query::default());
    assert_eq!(
        all.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!((all.last, all.oldest), (4, 1));
    assert!(all.events.iter().all(|e| e.at_unix_ms > 0), "stamped");
    let after = log.read(&Query {
        after: Some(2),
        ..Query::default()
    });
    assert_eq!(kinds(&after.events), [EventKind::Fault, EventKind::Removed]);
    let cell = log.read(&Query {
        app: Some("cell".parse().unwrap()),
        ..Query::default()
    });
    assert_eq!(cell.events.len(), 2, "the node's event concerns no app");
    let pid = log.read(&Query {
        app: Some("cell".parse().unwrap()),
        process: Some("pid".parse().unwrap()),
        ..Query::default()
    });
    assert_eq!(pid.events.len(), 1);
    assert_eq!(pid.events[0].message, "pid faulted");
    let first = log.read(&Query {
        limit: Some(1),
        ..Query::default()
    });
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.last, 4);
}

#[test]
fn the_log_keeps_the_newest_and_carries_on_numbering_after_a_restart() {
    let log = EventLog::recover(Vec::new());
    log.record((0..KEEP + 3).map(|i| EventEntry::new(EventKind::Warning, format!("{i}"))));
    log.stored(KEEP as u64 + 3);
    let all = log.read(&Query::default());
    assert_eq!(all.events.len(), KEEP);
    assert_eq!(all.oldest, 4, "the three oldest went");
    assert_eq!(log.unsaved().len(), KEEP + 3, "every one is written once");
    assert!(log.unsaved().is_empty());

    let again = EventLog::recover(all.events);
    again.record([EventEntry::new(EventKind::NodeUp, "after")]);
    again.stored(KEEP as u64 + 4);
    let last = again.read(&Query {
        after: Some(all.last),
        ..Query::default()
    });
    assert_eq!(last.events[0].seq, KEEP as u64 + 4);
}

#[tokio::test]
async fn a_reader_that_waits_is_woken_by_the_next_event() {
    let log = std::sync::Arc::new(EventLog::recover(Vec::new()));
    let waiter = {
        let log = log.clone();
        tokio::spawn(async move { log.wait_after(0, Duration::from_secs(30)).await })
    };
    tokio::task::yield_now().await;
    log.record([EventEntry::new(EventKind::NodeUp, "a joined")]);
    log.stored(1);
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken by the event, not by its timeout")
        .unwrap();
}

#[test]
fn many_placements_at_once_are_one_event_and_a_few_stay_apart() {
    let place = |process: &str, node: &str| Event::Placed {
        app: "cell".parse().unwrap(),
        unit: Unit::primary(&process.parse().unwrap()),
        node: n(node),
    };
    let mut plan: Vec<Event> = (0..100).map(|i| place(&format!("p{i}"), "a")).collect();
    plan.push(place("q", "b"));
    plan.push(Event::TookOver {
        who: who("cell/pid"),
        from: n("a"),
        to: n("b"),
    });
    let events = from_plan(&plan);
    assert_eq!(
        kinds(&events),
        [EventKind::Placed, EventKind::Placed, EventKind::Takeover]
    );
    assert_eq!(events[0].count, Some(100));
    assert_eq!(events[0].message, "100 processes of cell placed on a");
    assert_eq!(events[0].process, None);
    assert_eq!(events[1].process, Some("q".parse().unwrap()));
    assert_eq!(events[2].node, Some(n("b")));
    assert_eq!(events[2].from, Some(n("a")));
}

#[test]
fn a_fault_names_its_kind_and_tag_and_a_restart_follows() {
    let before = running("pid");
    let mut after = running("pid");
    after.faults = 1;
    after.restarts = 1;
    after.last_fault = Some(FaultNote {
        kind: FaultKind::Trap,
        tag: Some(Tag(5_000_000)),
        message: "wasm trap: unreachable".into(),
    });
    let events = changes(vec![before], vec![after]);
    assert_eq!(kinds(&events), [EventKind::Fault, EventKind::Restart]);
    assert_eq!(events[0].fault, Some(FaultKind::Trap));
    assert_eq!(events[0].tag, Some(Tag(5_000_000)));
    assert!(
        events[0].message.contains("unreachable"),
        "{}",
        events[0].message
    );
    assert_eq!(events[0].node, Some(n("a")));
}

#[test]
fn a_parked_process_says_why() {
    let mut after = running("pid");
    after.state = ProcessState::Parked;
    after.reason = Some("crash loop: 4 faults in a row".into());
    let events = changes(vec![running("pid")], vec![after.clone()]);
    assert_eq!(kinds(&events), [EventKind::Parked]);
    assert!(events[0].message.contains("crash loop"));
    assert!(
        changes(vec![after.clone()], vec![after]).is_empty(),
        "said once"
    );
}

#[test]
fn a_new_run_is_started_and_an_unchanged_one_is_not() {
    let mut moved = running("pid");
    moved.restored_from_tag = Some(9_000);
    moved.resume_lateness_ns = Some(400_000);
    let events = changes(Vec::new(), vec![moved.clone()]);
    assert_eq!(kinds(&events), [EventKind::Started]);
    assert_eq!(events[0].tag, Some(Tag(9_000)));
    assert_eq!(events[0].millis, Some(0.4));
    assert!(changes(vec![moved.clone()], vec![moved]).is_empty());
}

#[test]
fn a_node_seen_for_the_first_time_makes_no_process_events() {
    let next = node_status(vec![running("pid")]);
    assert!(status_events(&n("a"), None, &next, &mut Bursts::default(), 0).is_empty());
}

#[test]
fn deadline_misses_make_one_event_per_window_counting_all_since_the_last() {
    let mut bursts = Bursts::default();
    let misses = |held: u64, now: u64, at_ms: u64, bursts: &mut Bursts| {
        let mut before = running("pid");
        before.deadline_misses = held;
        let mut after = running("pid");
        after.deadline_misses = now;
        let (held, next) = (node_status(vec![before]), node_status(vec![after]));
        status_events(&n("a"), Some(&held), &next, bursts, at_ms)
    };
    let first = misses(0, 3, 1_000, &mut bursts);
    assert_eq!(kinds(&first), [EventKind::DeadlineMisses]);
    assert_eq!(first[0].count, Some(3));
    assert!(misses(3, 10, 2_000, &mut bursts).is_empty(), "same burst");
    let window = BURST_WINDOW.as_millis() as u64;
    let later = misses(10, 12, 1_000 + window, &mut bursts);
    assert_eq!(later[0].count, Some(9), "every miss since the last event");
    assert!(later[0].message.contains("12 in all"));
}

#[test]
fn a_run_that_reports_its_first_tag_later_started_once() {
    let mut early = running("pid");
    early.first_tag_ns = None;
    assert_eq!(
        kinds(&changes(Vec::new(), vec![early.clone()])),
        [EventKind::Started]
    );
    assert!(changes(vec![early], vec![running("pid")]).is_empty());
    let mut restarted_node = running("pid");
    restarted_node.first_tag_ns = Some(9_000);
    assert_eq!(
        kinds(&changes(vec![running("pid")], vec![restarted_node])),
        [EventKind::Started],
        "a new run"
    );
}

#[test]
fn a_device_link_going_down_and_coming_back_are_events() {
    let report = |state, error: Option<&str>| DeviceReport {
        state,
        reconnects: 2,
        last_error: error.map(str::to_string),
        ..DeviceReport::simulated("plant".parse().unwrap(), DeviceKind::ModbusTcp)
    };
    let with = |r: DeviceReport| NodeStatus {
        device_reports: vec![r],
        ..node_status(Vec::new())
    };
    let up = with(report(LinkState::Connected, None));
    let down = with(report(
        LinkState::Disconnected,
        Some("read: no answer within 100ms"),
    ));
    let events = status_events(&n("a"), Some(&up), &down, &mut Bursts::default(), 0);
    assert_eq!(kinds(&events), [EventKind::DeviceDown]);
    assert_eq!(
        events[0].message,
        "device plant (modbus-tcp) on a is disconnected: read: no answer within 100ms"
    );
    let events = status_events(&n("a"), Some(&down), &up, &mut Bursts::default(), 0);
    assert_eq!(kinds(&events), [EventKind::DeviceUp]);
    assert!(
        events[0]
            .message
            .ends_with("is connected again (2 reconnects)")
    );
    assert!(status_events(&n("a"), Some(&up), &up, &mut Bursts::default(), 0).is_empty());
}
