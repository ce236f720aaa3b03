//! The density group: a million idle processes held at once on one node
//! (this benchmark process), measured, not extrapolated; then 100,000 of
//! them ticking once a second, with the cost of a tick against a native
//! closure call in the same run.
//!
//! A million processes need more memory mappings than Linux allows by
//! default (`vm.max_map_count`, 65,530: each be slot reserves a fiber
//! stack and its guard, a running process splits its memory slot), so the
//! group raises the limit when it runs as root and otherwise holds as many
//! as the limit allows, and says so. It also stops short of the memory the
//! machine has. Each process gets the smallest slot (one 64 KiB Wasm page),
//! since a slot's reservation is address space a million times over.
//!
//! The baseline of the RSS figure is raw wasmtime instances of the same
//! module in the same pooling configuration, held at the same N (first,
//! then dropped, so the two never coexist). The ticks are driven by this
//! loop, one batch at a time, not by the node's be drivers: what is timed
//! is the call into each process, which is what a tick costs the node.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_runtime::{Process, RuntimeConfig, Tag};

use crate::memory::{Density, beyond_touched, raw_density, weft_density};
use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

/// Memory mappings a process costs at most (see `weft_runtime::engine`),
/// and what the rest of this process needs.
const MAPPINGS_PER_PROCESS: u64 = 4;
const MAPPING_HEADROOM: u64 = 65_536;
/// The RAM per process this group budgets for when it decides how many
/// the machine can hold (the memory group measures 8 KiB, touched page
/// included, at the median and 14 KiB at the p99).
const BUDGET_PER_PROCESS: u64 = 12 << 10;
/// Instances per RSS sample.
const BATCH: usize = 1_000;
/// The OS page each process touches: the RSS figure counts what is beyond.
const TOUCHED: u64 = 4096;
/// Ticks per timing sample.
const TICK_BATCH: usize = 1_000;
const PERIOD: Duration = Duration::from_secs(1);

pub fn density(ctx: &Ctx) -> Result<Vec<Figure>> {
    let (target, ticking, rounds) = match ctx.quick {
        true => (100_000, 10_000, 3),
        false => (1_000_000, 100_000, 5),
    };
    let (room, _restore) = Room::for_target(target)?;
    eprintln!(
        "[bench]   density: holding {} processes ({}); {ticking} of them then tick at 1 s for {rounds} s",
        room.n, room.why
    );
    let path = ctx.scratch.write("tiny.wat", TINY)?;
    // The baseline first, then dropped, so the two pools never coexist.
    let raw = raw_density(&room.config(), room.n, BATCH)?;
    let (weft, ticks) = weft_density(&room.config(), &path, room.n, BATCH, |rt, held| {
        let ticking = ticking.min(held.len());
        tick_rounds(rt, &mut held[..ticking], rounds)
    })?;
    let figures = vec![
        rss_figure(&room, &weft, &raw),
        held_figure(&room, &weft, &raw, target),
        tick_figure(ticking, &ticks),
    ];
    figures.iter().for_each(progress);
    Ok(figures)
}

/// How many processes this machine lets the group hold, and what decided.
struct Room {
    n: usize,
    why: String,
}

impl Room {
    /// The room for up to `target`, and the guard that puts the mapping
    /// limit back as it was when the group is done.
    fn for_target(target: usize) -> Result<(Room, Option<MapCountRaised>)> {
        let needed = target as u64 * MAPPINGS_PER_PROCESS + MAPPING_HEADROOM;
        let (limit, raised) = raise_map_count(needed)?;
        let by_maps = (limit.saturating_sub(MAPPING_HEADROOM) / MAPPINGS_PER_PROCESS) as usize;
        let by_memory = (available_memory() / 10 * 8 / BUDGET_PER_PROCESS) as usize;
        let n = target.min(by_maps).min(by_memory);
        let why = if n == target {
            format!("vm.max_map_count is {limit}")
        } else if n == by_maps {
            format!(
                "fewer than {target}: vm.max_map_count is {limit} and could not be raised (run as root to raise it)"
            )
        } else {
            format!("fewer than {target}: this machine's available memory binds")
        };
        Ok((Room { n, why }, raised))
    }

    fn config(&self) -> RuntimeConfig {
        RuntimeConfig::default()
            .max_processes(self.n as u32)
            .max_memory(64 << 10)
            .cache_dir(None)
    }
}

const MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// Puts `vm.max_map_count` back when dropped.
struct MapCountRaised {
    original: u64,
}

impl Drop for MapCountRaised {
    fn drop(&mut self) {
        match std::fs::write(MAP_COUNT, self.original.to_string()) {
            Ok(()) => eprintln!(
                "[bench]   density: vm.max_map_count back to {}",
                self.original
            ),
            Err(e) => eprintln!(
                "[bench]   density: cannot put vm.max_map_count back to {} ({e})",
                self.original
            ),
        }
    }
}

/// The kernel's mapping limit, raised to `needed` if it is lower and this
/// process may (root), with the guard that lowers it again.
fn raise_map_count(needed: u64) -> Result<(u64, Option<MapCountRaised>)> {
    let read = || -> Result<u64> {
        let text = std::fs::read_to_string(MAP_COUNT)
            .with_context(|| format!("cannot read {MAP_COUNT}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("{MAP_COUNT} says {text:?}"))
    };
    let limit = read()?;
    if limit >= needed {
        return Ok((limit, None));
    }
    match std::fs::write(MAP_COUNT, needed.to_string()) {
        Ok(()) => {
            eprintln!(
                "[bench]   density: raised vm.max_map_count from {limit} to {needed} for this group"
            );
            Ok((read()?, Some(MapCountRaised { original: limit })))
        }
        Err(e) => {
            eprintln!("[bench]   density: cannot raise vm.max_map_count ({e}); it stays {limit}");
            Ok((limit, None))
        }
    }
}

/// What the kernel says is available (the baseline's instances are
/// dropped before weft's are made, so each may use it).
fn available_memory() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(8 << 30, |kib| kib * 1024)
}

/// Per-tick cost samples (ns per tick, one per batch): weft's and a native
/// closure's.
struct Ticks {
    weft: hdrhistogram::Histogram<u64>,
    native: hdrhistogram::Histogram<u64>,
}

/// Ticks every process once a second for `rounds` seconds, timing each
/// batch; each round also calls as many native closures, timed the same
/// way, so both see the same machine at the same moment.
fn tick_rounds(
    rt: &tokio::runtime::Runtime,
    processes: &mut [Process],
    rounds: u64,
) -> Result<Ticks> {
    let mut counters = vec![0u64; processes.len()];
    let mut closures: Vec<Box<dyn FnMut(u64)>> = counters
        .iter_mut()
        .map(|c| Box::new(move |tag: u64| *c = c.wrapping_add(tag | 1)) as Box<dyn FnMut(u64)>)
        .collect();
    let (mut weft, mut native) = (histogram(), histogram());
    for round in 0..rounds {
        let start = Instant::now();
        let tag = Tag(round * PERIOD.as_nanos() as u64);
        for batch in processes.chunks_mut(TICK_BATCH) {
            let at = Instant::now();
            rt.block_on(async {
                for p in batch.iter_mut() {
                    p.tick(tag).await?;
                }
                anyhow::Ok(())
            })?;
            record(
                &mut weft,
                at.elapsed().as_nanos() as u64 / batch.len() as u64,
            );
        }
        for batch in closures.chunks_mut(TICK_BATCH) {
            let at = Instant::now();
            for f in batch.iter_mut() {
                f(std::hint::black_box(tag.0));
            }
            record(
                &mut native,
                at.elapsed().as_nanos() as u64 / batch.len() as u64,
            );
        }
        std::thread::sleep(PERIOD.saturating_sub(start.elapsed()));
    }
    drop(closures);
    std::hint::black_box(&counters);
    Ok(Ticks { weft, native })
}

fn rss_figure(room: &Room, weft: &Density, raw: &Density) -> Figure {
    let n = room.n;
    let mut fig = Figure::new(
        "density-rss-per-process",
        &format!("RSS per idle process beyond touched memory, {n} held at once"),
        Unit::Bytes,
        Summary::of(
            format!("weft be processes: Process::instantiate + weft_init (held {} of {n})", weft.held),
            &beyond_touched(&weft.per_process, TOUCHED),
        ),
        Summary::of(
            format!("raw wasmtime: Store + instance + first call, same pooling config (held {} of {n})", raw.held),
            &beyond_touched(&raw.per_process, TOUCHED),
        ),
        Some(Goal::ValueAtMost { stat: Stat::P99, max: 65536.0 }),
        "p99 ≤ 64 KiB beyond touched memory",
    )
    .note(format!(
        "RSS growth per batch of {BATCH} from /proc/self/statm divided by {BATCH}; one touched OS page (4 KiB) subtracted; {}",
        room.why
    ));
    for (who, d) in [("weft", weft), ("raw wasmtime", raw)] {
        if let Some(e) = &d.error {
            fig = fig.note(format!("{who} stopped after {} processes: {e}", d.held));
        }
    }
    fig
}

fn held_figure(room: &Room, weft: &Density, raw: &Density, target: usize) -> Figure {
    let one = |label: &str, held: usize| {
        let v = held as f64;
        Summary::from_values(label, v, v, v, 1)
    };
    Figure::new(
        "density-held",
        "Idle processes one node holds at once (measured)",
        Unit::Processes,
        one("weft be processes held at once", weft.held),
        one("raw wasmtime instances held at once", raw.held),
        Some(Goal::ValueAtLeast {
            stat: Stat::Median,
            min: target as f64,
        }),
        &format!("≥ {target} held at once, measured"),
    )
    .note(format!(
        "Density in this benchmark process, one node's engines; {}",
        room.why
    ))
}

fn tick_figure(ticking: usize, ticks: &Ticks) -> Figure {
    Figure::new(
        "density-tick-cost",
        &format!("Cost of one tick, {ticking} idle processes ticking at 1 s"),
        Unit::Nanoseconds,
        Summary::of("weft Process::tick (host call path, metering, chain)", &ticks.weft),
        Summary::of("a boxed native closure call doing the same counting", &ticks.native),
        None,
        "none (context: what a sandboxed, deterministic tick costs over a closure)",
    )
    .note(format!(
        "Per-tick time of batches of {TICK_BATCH}, every process ticked once a second, each round also calling as many closures; the other processes stay held and idle meanwhile"
    ))
}
