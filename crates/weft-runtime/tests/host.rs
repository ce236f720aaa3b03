//! Every status code of every `weft` host function, as a guest sees it,
//! and the one thing that is not a status: a buffer outside the guest's
//! memory faults the call, naming the function.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tempfile::tempdir;
use weft_abi::status::*;
use weft_manifest::module::Files;
use weft_runtime::device::{Device, Devices, ReadAt};
use weft_runtime::process::run_sync;
use weft_runtime::{
    Inbox, Message, MessageKey, Node, Process, ProcessEnv, ProcessId, Roster, RuntimeConfig, Tag,
};
use weft_types::PortHandle;

/// Calls host functions in every condition that has a status and stores
/// each result as an i32 at `4096 + 4·i`, in the order of [`EXPECTED`].
const PROBE: &str = r#"(module
  (import "weft" "port" (func $port (param i32 i32) (result i32)))
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "weft" "recv" (func $recv (param i32 i32 i32) (result i32)))
  (import "weft" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "weft" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "weft" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "weft" "device_open" (func $open (param i32 i32) (result i32)))
  (import "weft" "device_read" (func $read (param i32 i32 i32) (result i32)))
  (import "weft" "device_write" (func $write (param i32 i32 i32) (result i32)))
  (memory 1)
  (data (i32.const 0) "nope") (data (i32.const 16) "out") (data (i32.const 32) "in")
  (data (i32.const 48) "plant") (data (i32.const 64) "other") (data (i32.const 80) "key")
  (data (i32.const 96) "value") (data (i32.const 128) "ABCDEFGH")
  (global $i (mut i32) (i32.const 0))
  (func $put (param $r i32)
    (i32.store (i32.add (i32.const 4096) (i32.mul (global.get $i) (i32.const 4))) (local.get $r))
    (global.set $i (i32.add (global.get $i) (i32.const 1))))
  (func (export "weft_tick") (param i64)
    (call $put (call $port (i32.const 0) (i32.const 4)))
    (call $put (call $port (i32.const 16) (i32.const 3)))
    (call $put (call $port (i32.const 32) (i32.const 2)))
    (call $put (call $send (i32.const 99) (i32.const 128) (i32.const 8)))
    (call $put (call $send (i32.const 0) (i32.const 128) (i32.const 8)))
    (call $put (call $send (i32.const 1) (i32.const 128) (i32.const 65)))
    (call $put (call $send (i32.const 1) (i32.const 128) (i32.const 8)))
    (call $put (call $send (i32.const 1) (i32.const 128) (i32.const 8)))
    (call $put (call $send (i32.const 1) (i32.const 128) (i32.const 8)))
    (call $put (call $recv (i32.const 1) (i32.const 1024) (i32.const 64)))
    (call $put (call $recv (i32.const 0) (i32.const 1024) (i32.const 4)))
    (call $put (call $recv (i32.const 0) (i32.const 1024) (i32.const 64)))
    (call $put (call $recv (i32.const 0) (i32.const 1024) (i32.const 64)))
    (call $put (call $kv_get (i32.const 80) (i32.const 3) (i32.const 1024) (i32.const 64)))
    (call $put (call $kv_set (i32.const 80) (i32.const 2000) (i32.const 96) (i32.const 5)))
    (call $put (call $kv_set (i32.const 80) (i32.const 3) (i32.const 96) (i32.const 5)))
    (call $put (call $kv_get (i32.const 80) (i32.const 3) (i32.const 1024) (i32.const 2)))
    (call $put (call $kv_get (i32.const 80) (i32.const 3) (i32.const 1024) (i32.const 64)))
    (call $put (call $kv_delete (i32.const 80) (i32.const 3)))
    (call $put (call $kv_delete (i32.const 80) (i32.const 3)))
    (call $put (call $open (i32.const 0) (i32.const 4)))
    (call $put (call $open (i32.const 64) (i32.const 5)))
    (call $put (call $open (i32.const 48) (i32.const 5)))
    (call $put (call $read (i32.const 7) (i32.const 1024) (i32.const 64)))
    (call $put (call $read (i32.const 0) (i32.const 1024) (i32.const 2)))
    (call $put (call $read (i32.const 0) (i32.const 1024) (i32.const 64)))
    (call $put (call $write (i32.const 0) (i32.const 128) (i32.const 8)))
    (call $put (call $write (i32.const 0) (i32.const 128) (i32.const 4)))
    (call $put (call $write (i32.const 5) (i32.const 128) (i32.const 4)))))"#;

/// What each call of [`PROBE`] must return, with why.
const EXPECTED: &[(&str, i32)] = &[
    ("port: unknown name", UNKNOWN),
    ("port: \"out\" (handles count inputs first)", 1),
    ("port: \"in\"", 0),
    ("send: no such handle", UNKNOWN),
    ("send: an input port", UNKNOWN),
    ("send: over max_message", TOO_LARGE),
    ("send: first message", OK),
    ("send: second message fills the mailbox of 2", OK),
    ("send: a full outbox", FULL),
    ("recv: an output port", UNKNOWN),
    ("recv: buffer smaller than the message", BUFFER_TOO_SMALL),
    ("recv: the same message, taken (its length)", 16),
    ("recv: nothing left", NOT_FOUND),
    ("kv_get: a missing key", NOT_FOUND),
    ("kv_set: a key over 1024 bytes", TOO_LARGE),
    ("kv_set: stored", OK),
    ("kv_get: buffer smaller than the value", BUFFER_TOO_SMALL),
    ("kv_get: the value (its length)", 5),
    ("kv_delete: deleted", OK),
    ("kv_delete: already gone", NOT_FOUND),
    ("device_open: no such device on the node", UNKNOWN),
    ("device_open: a device not granted", DENIED),
    ("device_open: the granted device (its handle)", 0),
    ("device_read: no such handle", UNKNOWN),
    (
        "device_read: buffer smaller than the sample",
        BUFFER_TOO_SMALL,
    ),
    ("device_read: the sample (its length)", 8),
    ("device_write: refused by the device", UNKNOWN),
    ("device_write: accepted", OK),
    ("device_write: no such handle", UNKNOWN),
];

/// A device whose samples are 8 bytes and which accepts writes of at most
/// 4 bytes.
struct Fussy;

impl Device for Fussy {
    fn read(&self, _at: ReadAt) -> bytes::Bytes {
        vec![1; 8].into()
    }
    fn write(&self, _tag: Tag, data: &[u8]) -> Result<(), String> {
        match data.len() {
            0..=4 => Ok(()),
            n => Err(format!("{n} bytes is more than 4")),
        }
    }
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

fn node_with_devices() -> Node {
    let mut devices = Devices::new();
    devices.add("plant", Arc::new(Fussy));
    devices.add("other", Arc::new(Fussy));
    Node::with_devices(
        &RuntimeConfig::default().max_processes(8).cache_dir(None),
        devices,
    )
    .unwrap()
}

/// The probe, instantiated with one 16-byte message from `src` waiting.
fn probe(node: &Node, text: &str) -> Process {
    let dir = tempdir().unwrap();
    let module = write(dir.path(), "probe.wat", text);
    let mut spec = rt_spec("probe", &module, Duration::from_millis(10), 1 << 30);
    caps(&mut spec, &["ports", "kv", "device:plant"]);
    spec.inputs = vec!["in".parse().unwrap()];
    spec.outputs = vec!["out".parse().unwrap()];
    spec.max_message = 64;
    spec.mailbox = 2;
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files).unwrap());
    let roster = Roster::new(["probe", "src"].map(|n| n.parse().unwrap()));
    let inbox = Arc::new(Inbox::new(spec.mailbox, roster.clone()));
    inbox
        .push(Message {
            key: MessageKey {
                tag: Tag::ZERO,
                source: roster.id("src").unwrap(),
                seq: 1,
            },
            port: PortHandle(0),
            payload: vec![3; 16].into(),
        })
        .unwrap();
    let env = ProcessEnv {
        id: ProcessId(0),
        inbox,
        ..node.env(&spec, 1)
    };
    run_sync(Process::instantiate(program, env)).unwrap()
}

#[test]
fn every_host_function_returns_its_documented_status() {
    let node = node_with_devices();
    let mut process = probe(&node, PROBE);
    let call = run_sync(process.tick(Tag::ZERO)).expect("no call faults");
    let snapshot = process.snapshot().unwrap();
    let memory = snapshot.instances[0].memories[&0].to_bytes().unwrap();
    let got = |i: usize| i32::from_le_bytes(memory[4096 + 4 * i..][..4].try_into().unwrap());
    let wrong: Vec<String> = EXPECTED
        .iter()
        .enumerate()
        .filter(|&(i, &(_, want))| got(i) != want)
        .map(|(i, (what, want))| format!("{what}: got {}, want {want}", got(i)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        got(EXPECTED.len()),
        0,
        "the probe made more calls than listed"
    );
    let sent: Vec<&[u8]> = call.outputs.iter().map(|o| &o.payload[..]).collect();
    assert_eq!(
        sent,
        [b"ABCDEFGH", b"ABCDEFGH"],
        "only the two accepted sends are published"
    );
}

#[test]
fn a_buffer_outside_the_guest_memory_faults_the_call_and_names_the_function() {
    let node = node_with_devices();
    for (function, call) in [
        (
            "send",
            "(drop (call $send (i32.const 1) (i32.const 65530) (i32.const 8)))",
        ),
        (
            "recv",
            "(drop (call $recv (i32.const 0) (i32.const 65530) (i32.const 64)))",
        ),
        (
            "kv_set",
            "(drop (call $kv_set (i32.const 65535) (i32.const 3) (i32.const 96) (i32.const 5)))",
        ),
        (
            "device_open",
            "(drop (call $open (i32.const -1) (i32.const 5)))",
        ),
    ] {
        let text = PROBE.replace(
            "(func (export \"weft_tick\") (param i64)",
            &format!("(func (export \"weft_tick\") (param i64) {call}"),
        );
        let mut process = probe(&node, &text);
        let fault = run_sync(process.tick(Tag::ZERO)).expect_err("an out-of-bounds buffer faults");
        assert!(
            fault.message.contains(function) && fault.message.contains("outside linear memory"),
            "{function}: {}",
            fault.message
        );
        assert!(
            process.last_outputs().is_empty(),
            "a faulted call publishes nothing"
        );
    }
}
