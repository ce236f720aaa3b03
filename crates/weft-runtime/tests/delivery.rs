//! Message delivery under concurrency: what arrives while a process runs is
//! neither lost nor silently read late.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use tempfile::tempdir;
use weft_manifest::module::Files;
use weft_runtime::device::{Device, Devices, ReadAt};
use weft_runtime::process::run_sync;
use weft_runtime::{
    Inbox, Message, MessageKey, Node, ProcessEnv, ProcessId, RemoteInlet, Roster, RuntimeConfig,
    StartOptions, Tag,
};
use weft_types::PortHandle;

/// Calls `recv` 1000 times per tick with a 16-byte buffer. A message that
/// does not fit (`BUFFER_TOO_SMALL`) is taken again with a 4096-byte
/// buffer. Small (≤ 16 bytes) and large messages received are counted at
/// bytes 0 and 8.
const RECEIVER: &str = r#"(module
  (import "weft" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (memory 1)
  (func $bump (param $at i32)
    (i64.store (local.get $at) (i64.add (i64.load (local.get $at)) (i64.const 1))))
  (func $count (param $len i32)
    (if (i32.gt_s (local.get $len) (i32.const 16))
      (then (call $bump (i32.const 8)))
      (else (if (i32.ge_s (local.get $len) (i32.const 0)) (then (call $bump (i32.const 0)))))))
  (func (export "weft_tick") (param i64) (local $i i32) (local $r i32)
    (loop $l
      (local.set $r (call $recv (i32.const 0) (i32.const 1024) (i32.const 16)))
      (if (i32.eq (local.get $r) (i32.const -2))
        (then (call $count (call $recv (i32.const 0) (i32.const 1024) (i32.const 4096))))
        (else (call $count (local.get $r))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))))"#;

/// The receiver and the two senders of the recv test, by id.
fn roster() -> Roster {
    Roster::new(["rx", "a", "b"].map(|n| n.parse().unwrap()))
}

fn message(source: &str, seq: u64, len: usize) -> Message {
    Message {
        key: MessageKey {
            tag: Tag::ZERO,
            source: roster().id(source).unwrap(),
            seq,
        },
        port: PortHandle(0),
        payload: vec![7; len].into(),
    }
}

/// `recv` checks a message's length and takes it under one lock: a larger
/// message that arrives with a smaller key in between is not consumed
/// while `BUFFER_TOO_SMALL` is returned (it stays for the next call).
#[test]
fn recv_never_loses_a_message_that_arrives_while_it_checks_the_length() {
    const PAIRS: u64 = 100_000;
    let dir = tempdir().unwrap();
    let module = write(dir.path(), "receiver.wat", RECEIVER);
    let mut spec = rt_spec("rx", &module, Duration::from_millis(1), 1 << 40);
    caps(&mut spec, &["ports"]);
    spec.inputs = vec!["in".parse().unwrap()];
    spec.mailbox = 1 << 20;
    let node = node();
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files).unwrap());
    let env = ProcessEnv {
        id: ProcessId(0),
        inbox: Arc::new(Inbox::new(spec.mailbox, roster())),
        ..node.env(&spec, 1)
    };
    let inbox = env.inbox.clone();
    let mut process = run_sync(weft_runtime::Process::instantiate(program, env)).unwrap();

    // Each pair: a small message from "b", then a large one from "a", whose
    // key sorts first, so it can slip in ahead of the small one.
    let pusher = std::thread::spawn(move || {
        for seq in 1..=PAIRS {
            inbox.push(message("b", seq, 8)).unwrap();
            inbox.push(message("a", seq, 100)).unwrap();
        }
        inbox
    });
    let mut tag = 0;
    while !pusher.is_finished() {
        run_sync(process.tick(Tag(tag))).unwrap();
        tag += 1;
    }
    let inbox = pusher.join().unwrap();
    while !inbox.is_empty() {
        run_sync(process.tick(Tag(tag))).unwrap();
        tag += 1;
    }
    let snapshot = process.snapshot().unwrap();
    let memory = snapshot.instances[0].memories[&0].to_bytes().unwrap();
    let count = |at: usize| u64::from_le_bytes(memory[at..at + 8].try_into().unwrap());
    assert_eq!(
        (count(0), count(8)),
        (PAIRS, PAIRS),
        "(small, large) messages received: every message exactly once"
    );
}

/// A device that, the first time it is read, delivers a message to its
/// reader through the app's inlet, visible at the very tag being run: as if
/// it had arrived from the network during that tick.
#[derive(Default)]
struct ArrivesDuringTheTick {
    inlet: OnceLock<RemoteInlet>,
    sent: std::sync::atomic::AtomicBool,
}

impl Device for ArrivesDuringTheTick {
    fn read(&self, at: ReadAt) -> bytes::Bytes {
        let tag = at.tag;
        if !self.sent.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let inlet = self.inlet.get().expect("the test connects the inlet");
            inlet.deliver("src", "out", tag, 1, vec![1]).unwrap();
        }
        vec![0; 8].into()
    }
    fn write(&self, _tag: Tag, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A message for tag t that arrives while the tick at t runs was not read
/// at t: it is tardy (counted, recorded), not quietly read a tag late.
#[test]
fn a_message_arriving_during_its_own_tick_is_tardy() {
    let dir = tempdir().unwrap();
    write(
        dir.path(),
        "probe.wat",
        r#"(module
          (import "weft" "device_open" (func $open (param i32 i32) (result i32)))
          (import "weft" "device_read" (func $read (param i32 i32 i32) (result i32)))
          (memory 1) (data (i32.const 0) "probe")
          (func (export "weft_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "weft_message") (param i32 i32 i32 i64))
          (func (export "weft_tick") (param i64)
            (drop (call $read (call $open (i32.const 0) (i32.const 5)) (i32.const 64) (i32.const 8)))))"#,
    );
    write(dir.path(), "src.wat", "(module (memory 1))");
    let app = manifest(
        dir.path(),
        r#"name = "late"
           [[process]]
           name = "src"
           module = "src.wat"
           outputs = ["out"]
           [[process]]
           name = "probe"
           module = "probe.wat"
           class = "rt"
           period = "10ms"
           capabilities = ["device:probe"]
           inputs = ["in"]
           [[connection]]
           from = "src.out"
           to = "probe.in"
           delay = "0ms""#,
    );
    let device = Arc::new(ArrivesDuringTheTick::default());
    let mut devices = Devices::new();
    devices.add("probe", device.clone());
    let node = Node::with_devices(
        &RuntimeConfig::default().max_processes(8).cache_dir(None),
        devices,
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = StartOptions {
        only: Some(["probe".parse().unwrap()].into()),
        ..StartOptions::default()
    };
    let running = node
        .start_with(&app, &Files, runtime.handle(), options)
        .expect("starts");
    device.inlet.set(running.inlet()).ok().unwrap();
    let probe = || {
        running
            .report()
            .processes
            .into_iter()
            .find(|p| p.name == "probe")
            .unwrap()
    };
    assert!(wait_until(Duration::from_secs(20), || probe().ticks >= 5));
    let report = probe();
    runtime.block_on(running.stop());
    assert_eq!(report.tardy, 1, "{report:?}");
}
