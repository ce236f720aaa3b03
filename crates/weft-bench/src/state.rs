//! What keeping a process's state costs the process: a 1 kHz rt process
//! with 64 MiB of state, checkpointed every 500 ms while it writes 1 MiB a
//! second, against the same process with 64 KiB of state, in the same
//! run. Checkpoints are incremental and their base is copied in slices
//! between ticks (`weft_runtime::snapshot`), so the large one should tick
//! like the small one: same wake-up jitter, same deadline misses.
//!
//! The two sizes run in alternating rounds so that a burst of load from
//! another tenant of this VM hits both alike. Checkpoints go to a thread
//! that counts and drops them, as a node's checkpoint task would take them
//! off the rt thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use weft_manifest::AppManifest;
use weft_manifest::module::Files;
use weft_runtime::{Checkpointing, Node, ProcessState, RuntimeConfig, Snapshot, StartOptions, rt};

use crate::stats::{Figure, Goal, Stat, Summary, Unit};
use crate::{Ctx, progress};

const SMALL: u64 = 64 << 10;
const LARGE: u64 = 64 << 20;
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// `weft_init` fills all of memory with an LCG stream; each tick writes
/// the next 1 KiB (wrapping), so 1 MiB a second at 1 kHz.
fn writer(bytes: u64) -> String {
    let pages = bytes / 65536;
    r#"(module
  (memory PAGES PAGES)
  (global $x (mut i64) (i64.const 12345))
  (global $at (mut i32) (i32.const 0))
  (func $next (result i64)
    (global.set $x (i64.add (i64.mul (global.get $x) (i64.const 6364136223846793005))
                            (i64.const 1442695040888963407)))
    (global.get $x))
  (func (export "weft_init") (local $i i32)
    (loop $fill
      (i64.store (local.get $i) (call $next))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const BYTES)))))
  (func (export "weft_tick") (param i64) (local $end i32)
    (local.set $end (i32.add (global.get $at) (i32.const 1024)))
    (loop $write
      (i64.store (global.get $at) (call $next))
      (global.set $at (i32.add (global.get $at) (i32.const 8)))
      (br_if $write (i32.lt_u (global.get $at) (local.get $end))))
    (if (i32.ge_u (global.get $at) (i32.const BYTES))
      (then (global.set $at (i32.const 0))))))"#
        .replace("PAGES", &pages.to_string())
        .replace("BYTES", &(pages * 65536).to_string())
}

/// One round of one size: its jitter summary, deadline misses, ticks and
/// checkpoint bytes.
struct Round {
    summary: Summary,
    misses: u64,
    ticks: u64,
    checkpoints: u64,
    carried: u64,
}

/// A sink that hands each checkpoint to a thread which counts and drops it
/// (freeing a 64 MiB base is not the rt thread's business either).
fn counting_sink() -> (Checkpointing, Arc<(AtomicU64, AtomicU64)>) {
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (tx, rx) = std::sync::mpsc::channel::<Snapshot>();
    let seen = counts.clone();
    std::thread::spawn(move || {
        for snapshot in rx {
            seen.0.fetch_add(1, Ordering::Relaxed);
            seen.1
                .fetch_add(snapshot.carried_bytes(), Ordering::Relaxed);
        }
    });
    let tx = std::sync::Mutex::new(tx);
    let sink = Arc::new(move |_: &weft_types::ProcessName, _, snapshot: Snapshot| {
        let _ = tx.lock().unwrap().send(snapshot);
    });
    (
        Checkpointing {
            every: CHECKPOINT_EVERY,
            sink,
        },
        counts,
    )
}

fn round(
    ctx: &Ctx,
    node: &Node,
    runtime: &tokio::runtime::Runtime,
    bytes: u64,
    dur: Duration,
) -> Result<Round> {
    let module = format!("writer-{bytes}.wat");
    ctx.scratch.write(&module, &writer(bytes))?;
    let toml = format!(
        "name = \"bench-state\"\n[[process]]\nname = \"rt\"\nmodule = \"{module}\"\nclass = \"rt\"\n\
         period = \"1ms\"\nfuel_per_tick = 400000000\nmemory = {bytes}\n"
    );
    let mut app = AppManifest::parse(&toml, "bench-state.toml")?;
    app.resolve_paths(ctx.scratch.path());
    let (checkpointing, counts) = counting_sink();
    let options = StartOptions {
        checkpointing: Some(checkpointing),
        ..StartOptions::default()
    };
    let running = node.start_with(&app, &Files, runtime.handle(), options)?;
    std::thread::sleep(dur);
    let report = runtime.block_on(running.stop());
    let rt = report
        .processes
        .iter()
        .find(|p| p.name == "rt")
        .context("no rt process in the report")?;
    if rt.faults > 0 || rt.state == ProcessState::Failed {
        bail!("the rt process faulted: {:?}", rt.last_fault);
    }
    let j = rt.jitter;
    let label = format!(
        "rt process (1 ms period) with {} of state, checkpointed every 500 ms",
        Unit::Bytes.show(bytes as f64)
    );
    Ok(Round {
        summary: Summary::from_values(
            label,
            j.p50_us * 1e3,
            j.p99_us * 1e3,
            j.max_us * 1e3,
            j.samples,
        ),
        misses: rt.deadline_misses,
        ticks: rt.ticks,
        checkpoints: counts.0.load(Ordering::Relaxed),
        carried: counts.1.load(Ordering::Relaxed),
    })
}

/// Rounds of one size combined: the median across rounds of each round's
/// median and p99, the largest maximum, every sample, miss and checkpoint.
fn combine(rounds: &[Round]) -> (Summary, String) {
    let first = &rounds[0].summary;
    let summary = Summary::of_rounds(rounds.iter().map(|r| &r.summary));
    let sum = |f: fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
    let p99s: Vec<String> = rounds
        .iter()
        .map(|r| format!("{:.0}", r.summary.p99 / 1e3))
        .collect();
    let note = format!(
        "{}: {} deadline misses in {} ticks; {} checkpoints carrying {} in all; p99 per round (µs): {}",
        first.label,
        sum(|r| r.misses),
        sum(|r| r.ticks),
        sum(|r| r.checkpoints),
        Unit::Bytes.show(sum(|r| r.carried) as f64),
        p99s.join(", ")
    );
    (summary, note)
}

pub fn state(ctx: &Ctx) -> Result<Vec<Figure>> {
    let (rounds, dur) = if ctx.quick {
        (1, Duration::from_secs(3))
    } else {
        (5, Duration::from_secs(4))
    };
    rt::lock_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = RuntimeConfig::default()
        .max_processes(4)
        .max_memory(LARGE)
        .cache_dir(None);
    let node = Node::new(&config)?;
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        small.push(round(ctx, &node, &runtime, SMALL, dur)?);
        large.push(round(ctx, &node, &runtime, LARGE, dur)?);
    }
    let (base, small_note) = combine(&small);
    let (weft, large_note) = combine(&large);
    let large_misses: u64 = large.iter().map(|r| r.misses).sum();
    let small_misses: u64 = small.iter().map(|r| r.misses).sum();
    let figure = Figure::new(
        "checkpoint-jitter",
        "rt jitter while checkpointing 64 MiB vs 64 KiB of state",
        Unit::Nanoseconds,
        weft,
        base,
        Some(Goal::RatioAtMost {
            stat: Stat::P99,
            max: 1.1,
        }),
        "p99 ≤ 1.1× the 64 KiB process, same deadline misses",
    )
    .note(large_note)
    .note(small_note)
    .note(format!(
        "dirty pages found by {}; the 64 MiB base is copied in slices of about a tenth of a period after each tick",
        weft_runtime::dirty_tracking()
    ))
    ;
    let count = |label: &str, misses: u64| {
        Summary::from_values(label, misses as f64, misses as f64, misses as f64, 1)
    };
    let misses = Figure::new(
        "checkpoint-misses",
        "rt deadline misses while checkpointing 64 MiB vs 64 KiB of state",
        Unit::Ticks,
        count("deadline misses with 64 MiB of state", large_misses),
        count("deadline misses with 64 KiB of state", small_misses),
        Some(Goal::ValueAtMost {
            stat: Stat::Median,
            max: small_misses as f64,
        }),
        "no more misses than the 64 KiB process",
    );
    progress(&figure);
    progress(&misses);
    Ok(vec![figure, misses])
}
