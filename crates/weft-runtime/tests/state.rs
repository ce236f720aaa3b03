//! Snapshots, linking, determinism and the compiled-module cache.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tempfile::tempdir;
use weft_manifest::ProcessSpec;
use weft_manifest::module::Files;
use weft_runtime::HashChain;
use weft_runtime::device::Devices;
use weft_runtime::process::run_sync;
use weft_runtime::router::Router;
use weft_runtime::{Node, Process, RuntimeConfig, Snapshot, SnapshotError, Tag};

/// A module whose every tick depends on memory, a global, kv and the PRNG.
const STATEFUL: &str = r#"(module
  (import "weft" "random" (func $random (result i64)))
  (import "weft" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "weft" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
  (memory 1)
  (global $acc (mut i64) (i64.const 7))
  (data (i32.const 0) "k")
  (func (export "weft_tick") (param $tag i64)
    ;; acc = acc * 31 + random + tag
    (global.set $acc (i64.add (i64.add (i64.mul (global.get $acc) (i64.const 31)) (call $random)) (local.get $tag)))
    ;; memory[16 + (tag/1e6 % 64)*8] += acc
    (i64.store (i32.add (i32.const 16) (i32.mul (i32.wrap_i64 (i64.rem_u (i64.div_u (local.get $tag) (i64.const 1000000)) (i64.const 64))) (i32.const 8)))
      (i64.add (global.get $acc) (i64.load (i32.add (i32.const 16) (i32.mul (i32.wrap_i64 (i64.rem_u (i64.div_u (local.get $tag) (i64.const 1000000)) (i64.const 64))) (i32.const 8))))))
    ;; kv["k"] += 1 (8 bytes at 1024)
    (drop (call $kv_get (i32.const 0) (i32.const 1) (i32.const 1024) (i32.const 8)))
    (i64.store (i32.const 1024) (i64.add (i64.load (i32.const 1024)) (global.get $acc)))
    (drop (call $kv_set (i32.const 0) (i32.const 1) (i32.const 1024) (i32.const 8)))
    (i64.store (i32.const 8) (global.get $acc))
    (drop (call $send (i32.const 0) (i32.const 8) (i32.const 8)))
    (drop (call $send (i32.const 0) (i32.const 1024) (i32.const 8)))))"#;

fn stateful_spec(dir: &std::path::Path) -> ProcessSpec {
    let m = write(dir, "stateful.wat", STATEFUL);
    let mut spec = rt_spec("stateful", &m, Duration::from_millis(1), 1_000_000);
    caps(&mut spec, &["random", "kv", "ports"]);
    spec.outputs = vec!["out".parse().unwrap()];
    spec
}

fn ticks(p: &mut Process, range: std::ops::Range<u64>) {
    let router = Router::default();
    for k in range {
        let tag = Tag(k * 1_000_000);
        let report = run_sync(p.tick(tag)).unwrap();
        p.publish(&router, tag, report.outputs);
    }
}

fn restore(
    node: &Node,
    spec: ProcessSpec,
    snapshot: &Snapshot,
    devices: Devices,
) -> anyhow::Result<Process> {
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files)?);
    let mut env = node.env(&spec, 1);
    env.devices = devices;
    run_sync(Process::restore(program, env, snapshot))
}

#[test]
fn snapshot_restore_continues_bit_identically() {
    let dir = tempdir().unwrap();
    let node = node();
    let spec = stateful_spec(dir.path());

    let mut reference = instantiate(&node, spec.clone()).unwrap();
    ticks(&mut reference, 0..200);

    let mut first = instantiate(&node, spec.clone()).unwrap();
    ticks(&mut first, 0..77);
    let bytes = first.snapshot().unwrap().encode();
    drop(first);
    let snapshot = Snapshot::decode(&bytes).unwrap();
    let mut second = restore(&node, spec, &snapshot, Devices::simulated()).unwrap();
    ticks(&mut second, 77..200);

    assert_ne!(reference.chain(), HashChain::default());
    assert_eq!(second.chain(), reference.chain(), "restored run diverged");
    assert_eq!(second.kv(), reference.kv());
    assert_eq!(
        second.snapshot().unwrap().instances,
        reference.snapshot().unwrap().instances
    );
}

/// The Rust PID example (heap, `__stack_pointer`, an opened device) too.
#[test]
fn snapshot_of_the_rust_pid_controller_continues_identically() {
    let node = node();
    let mut spec = rt_spec(
        "pid",
        &example("pid.wasm"),
        Duration::from_millis(10),
        1_000_000,
    );
    caps(&mut spec, &["ports", "log", "device:plant"]);
    spec.inputs = vec!["setpoint".parse().unwrap()];
    spec.outputs = vec!["telemetry".parse().unwrap()];
    let run = |p: &mut Process, range: std::ops::Range<u64>| {
        let router = Router::default();
        for k in range {
            let tag = Tag(k * 10_000_000);
            let report = run_sync(p.tick(tag)).unwrap();
            p.publish(&router, tag, report.outputs);
        }
    };
    let make = |devices: Devices| {
        let spec = Arc::new(spec.clone());
        let program = Arc::new(node.prepare(spec.clone(), &Files).unwrap());
        let mut env = node.env(&spec, 1);
        env.devices = devices;
        let mut p = run_sync(Process::instantiate(program, env)).unwrap();
        run_sync(p.init()).unwrap();
        p
    };
    let mut reference = make(Devices::simulated());
    run(&mut reference, 0..300);

    let mut first = make(Devices::simulated());
    run(&mut first, 0..123);
    let snapshot = Snapshot::decode(&first.snapshot().unwrap().encode()).unwrap();
    drop(first);
    // Restored next to another node's plant, which was never heated: the
    // plant's model state travels in the snapshot, so the loop goes on
    // controlling the same (simulated) plant.
    let elsewhere = Devices::simulated();
    let mut second = restore(&node, spec.clone(), &snapshot, elsewhere.clone()).unwrap();
    run(&mut second, 123..300);
    assert_eq!(second.chain(), reference.chain());
    assert!(
        elsewhere.status()["plant"]["temperature_c"]
            .as_f64()
            .unwrap()
            > 30.0
    );
}

#[test]
fn corrupt_or_foreign_snapshots_are_refused() {
    let dir = tempdir().unwrap();
    let node = node();
    let spec = stateful_spec(dir.path());
    let mut p = instantiate(&node, spec.clone()).unwrap();
    ticks(&mut p, 0..5);
    let mut bytes = p.snapshot().unwrap().encode();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    assert!(matches!(
        Snapshot::decode(&bytes),
        Err(SnapshotError::Checksum { .. })
    ));

    // A snapshot of one module cannot be restored into another.
    let snapshot = p.snapshot().unwrap();
    let other = write(
        dir.path(),
        "other.wat",
        &STATEFUL.replace("i64.const 31", "i64.const 37"),
    );
    let mut other_spec = spec.clone();
    other_spec.module = weft_manifest::ModuleRef::Path(other);
    let err = restore(&node, other_spec, &snapshot, Devices::simulated())
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("refusing to restore"),
        "{err:#}"
    );
}

#[test]
fn linked_modules_call_each_other() {
    let dir = tempdir().unwrap();
    write(
        dir.path(),
        "mathlib.wat",
        r#"(module (memory 1) (global $calls (mut i32) (i32.const 0))
            (func (export "mul_add") (param i64 i64) (result i64)
              (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
              (i64.add (i64.mul (local.get 0) (local.get 1)) (i64.extend_i32_u (global.get $calls)))))"#,
    );
    let app = write(
        dir.path(),
        "app.wat",
        r#"(module
            (import "mathlib" "mul_add" (func $mul_add (param i64 i64) (result i64)))
            (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (memory 1)
            (func (export "weft_tick") (param i64)
              (i64.store (i32.const 0) (call $mul_add (i64.const 6) (i64.const 7)))
              (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))"#,
    );
    let mut spec = rt_spec("linked", &app, Duration::from_millis(1), 1_000_000);
    spec.links = vec![(
        "mathlib".into(),
        weft_manifest::ModuleRef::Path(dir.path().join("mathlib.wat")),
    )];
    caps(&mut spec, &["ports"]);
    spec.outputs = vec!["out".parse().unwrap()];
    let mut p = instantiate(&node(), spec.clone()).unwrap();
    let values: Vec<i64> = (0..3)
        .map(|k| {
            let report = run_sync(p.tick(Tag(k))).unwrap();
            i64::from_le_bytes(report.outputs[0].payload[..].try_into().unwrap())
        })
        .collect();
    assert_eq!(values, [43, 44, 45], "42 + the library's own call counter");
    // The library's state is part of the process's snapshot.
    let snapshot = p.snapshot().unwrap();
    assert_eq!(snapshot.instances.len(), 2);

    // Without the link the import cannot be satisfied, and the error says so.
    spec.links.clear();
    let err = format!("{:#}", instantiate(&node(), spec).err().unwrap());
    assert!(
        err.contains("mathlib::mul_add") && err.contains("no module is linked"),
        "{err}"
    );
}

#[test]
fn nan_canonicalisation_gives_the_same_bits_every_run() {
    let dir = tempdir().unwrap();
    let m = write(
        dir.path(),
        "nan.wat",
        r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (memory 1)
            (func (export "weft_tick") (param i64)
              (f64.store (i32.const 0) (f64.mul (f64.const 0) (f64.const inf)))
              (f32.store (i32.const 8) (f32.sqrt (f32.const -1)))
              (drop (call $send (i32.const 0) (i32.const 0) (i32.const 12)))))"#,
    );
    let mut bits = Vec::new();
    for class in [weft_manifest::Class::Rt, weft_manifest::Class::Be] {
        for _ in 0..3 {
            let mut spec = rt_spec("nan", &m, Duration::from_millis(1), 1_000_000);
            spec.class = class;
            if class == weft_manifest::Class::Be {
                spec.fuel_per_tick = None;
            }
            caps(&mut spec, &["ports"]);
            spec.outputs = vec!["out".parse().unwrap()];
            let mut p = instantiate(&node(), spec).unwrap();
            let report = block(p.tick(Tag(0))).unwrap();
            bits.push(report.outputs[0].payload.clone());
        }
    }
    let f64_bits = u64::from_le_bytes(bits[0][..8].try_into().unwrap());
    let f32_bits = u32::from_le_bytes(bits[0][8..].try_into().unwrap());
    assert_eq!(f64_bits, 0x7ff8_0000_0000_0000, "canonical f64 NaN");
    assert_eq!(f32_bits, 0x7fc0_0000, "canonical f32 NaN");
    assert!(bits.iter().all(|b| *b == bits[0]));
}

#[test]
fn a_second_start_uses_the_compiled_module_cache() {
    let cache = tempdir().unwrap();
    let dir = tempdir().unwrap();
    let spec = Arc::new(stateful_spec(dir.path()));
    let config = RuntimeConfig::default()
        .max_processes(8)
        .cache_dir(Some(cache.path().to_owned()));
    let first = Node::new(&config)
        .unwrap()
        .prepare(spec.clone(), &Files)
        .unwrap();
    assert!(!first.from_cache());
    let second = Node::new(&config).unwrap().prepare(spec, &Files).unwrap();
    assert!(second.from_cache(), "second start compiled again");
}

/// Processes of one module on one node share its compiled code: only the
/// first compiles, even with no artefact cache.
#[test]
fn a_module_is_compiled_once_per_node() {
    let dir = tempdir().unwrap();
    let spec = Arc::new(stateful_spec(dir.path()));
    let node = Node::new(&RuntimeConfig::default().max_processes(8).cache_dir(None)).unwrap();
    let first = node.prepare(spec.clone(), &Files).unwrap();
    let second = node.prepare(spec, &Files).unwrap();
    assert!(!first.from_cache(), "nothing was compiled before");
    assert!(second.from_cache(), "the second process compiled again");
}

#[test]
fn module_bigger_than_its_memory_limit_is_refused_before_start() {
    let dir = tempdir().unwrap();
    let m = write(
        dir.path(),
        "fat.wat",
        r#"(module (memory 32) (func (export "weft_tick") (param i64)))"#,
    );
    let mut spec = rt_spec("fat", &m, Duration::from_millis(1), 1000);
    spec.memory = 1 << 20;
    let err = format!("{:#}", instantiate(&node(), spec).err().unwrap());
    assert!(
        err.contains("needs at least 2097152 bytes") && err.contains("raise `memory`"),
        "{err}"
    );
}

/// State of 64 KiB, 1 MiB and 64 MiB survives snapshot → encode → decode →
/// restore bit for bit: every byte of memory, the globals, and what the
/// process computes next.
#[test]
fn large_memories_survive_a_snapshot_bit_for_bit() {
    let dir = tempdir().unwrap();
    // weft_init fills `pages` pages with an LCG stream; each tick folds the
    // whole memory into a checksum it sends.
    let module = r#"(module
        (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $x (mut i64) (i64.const 12345))
        (func (export "weft_init") (local $i i32) (local $end i32)
          (drop (memory.grow (i32.sub (i32.const PAGES) (i32.const 1))))
          (local.set $end (i32.mul (i32.const PAGES) (i32.const 65536)))
          (loop $l
            (global.set $x (i64.add (i64.mul (global.get $x) (i64.const 6364136223846793005)) (i64.const 1442695040888963407)))
            (i64.store (local.get $i) (global.get $x))
            (local.set $i (i32.add (local.get $i) (i32.const 8)))
            (br_if $l (i32.lt_u (local.get $i) (local.get $end)))))
        (func (export "weft_tick") (param i64) (local $i i32) (local $sum i64) (local $end i32)
          (local.set $end (i32.mul (i32.const PAGES) (i32.const 65536)))
          (loop $l
            (local.set $sum (i64.add (i64.rotl (local.get $sum) (i64.const 1)) (i64.load (local.get $i))))
            (local.set $i (i32.add (local.get $i) (i32.const 8)))
            (br_if $l (i32.lt_u (local.get $i) (local.get $end))))
          (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (local.get $sum)))
          (drop (call $send (i32.const 0) (i32.const 0) (i32.const 8)))))"#;
    let node = Node::new(&RuntimeConfig::default().max_processes(8).cache_dir(None)).unwrap();
    for pages in [1u32, 16, 1024] {
        let path = write(
            dir.path(),
            &format!("big{pages}.wat"),
            &module.replace("PAGES", &pages.to_string()),
        );
        let mut spec = rt_spec("big", &path, Duration::from_millis(1), u64::MAX / 4);
        caps(&mut spec, &["ports"]);
        spec.outputs = vec!["out".parse().unwrap()];
        spec.memory = 64 << 20;
        let mut original = instantiate(&node, spec.clone()).unwrap();
        run_sync(original.init()).unwrap();
        ticks(&mut original, 0..3);
        let snapshot = original.snapshot().unwrap();
        assert_eq!(snapshot.memory_bytes(), pages as u64 * 65536);
        let decoded = Snapshot::decode(&snapshot.encode()).unwrap();
        let mut restored = restore(&node, spec, &decoded, Devices::simulated()).unwrap();
        assert_eq!(
            restored.snapshot().unwrap(),
            snapshot,
            "{pages} pages: restored state differs"
        );
        ticks(&mut original, 3..6);
        ticks(&mut restored, 3..6);
        assert_eq!(
            restored.chain(),
            original.chain(),
            "{pages} pages: continuation differs"
        );
    }
}

/// A handover asks which processes were holding their outputs after a
/// stall when they stopped: their state skipped ahead and is not handed on.
/// The answer is read as they stop, not from an earlier look.
#[test]
fn a_stopped_app_says_which_processes_were_held() {
    let dir = tempdir().unwrap();
    write(
        dir.path(),
        "tick.wat",
        r#"(module (memory 1) (func (export "weft_tick") (param i64)))"#,
    );
    let app = manifest(
        dir.path(),
        r#"name = "held"
           [[process]]
           name = "held"
           module = "tick.wat"
           period = "10ms"
           [[process]]
           name = "live"
           module = "tick.wat"
           period = "10ms""#,
    );
    let node = node();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = weft_runtime::StartOptions {
        supervised: true,
        held: ["held".parse().unwrap()].into(),
        ..Default::default()
    };
    let running = node
        .start_with(&app, &Files, runtime.handle(), options)
        .expect("starts");
    assert!(wait_until(Duration::from_secs(20), || {
        running.report().processes.iter().all(|p| p.ticks >= 3)
    }));
    let stopped = runtime.block_on(running.stop_with_snapshots());
    let held: Vec<&str> = stopped.held.iter().map(|p| p.as_str()).collect();
    assert_eq!(held, ["held"]);
    let mut snapshots: Vec<&str> = stopped.snapshots.keys().map(|p| p.as_str()).collect();
    snapshots.sort();
    assert_eq!(snapshots, ["held", "live"], "both stopped at a boundary");
}
