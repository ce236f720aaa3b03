//! Memory density: RSS per idle process and the number of processes one
//! node holds in 8 GiB, against raw wasmtime instances of the same module
//! in the same pooling configuration.
//!
//! RSS comes from `/proc/self/statm`, read before and after each batch of
//! instantiations; a batch's growth divided by its size is one sample. The
//! module touches exactly one OS page of its linear memory, which is the
//! "touched memory" the goal excludes.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::{Engine, Linker, Module, Store};
use weft_manifest::ProcessSpec;
use weft_manifest::module::Files;
use weft_runtime::engine::{Metering, engine_config};
use weft_runtime::{Node, Process, RuntimeConfig};

use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

/// The goal's process count: a node must hold this many.
const GOAL_N: u32 = 10_000;
const GIB8: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Resident set size of this process, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// Per-batch samples of RSS growth per instance (bytes, touched memory included).
pub(crate) struct Density {
    pub per_process: hdrhistogram::Histogram<u64>,
    pub held: usize,
    pub error: Option<String>,
}

/// Makes up to `n` with `make`, sampling RSS growth per instance once per
/// `batch`, and says how far it got every 100,000.
fn measure<T>(
    n: usize,
    batch: usize,
    mut make: impl FnMut(usize) -> Result<T>,
) -> (Density, Vec<T>) {
    let mut held = Vec::with_capacity(n);
    let mut per_process = histogram();
    let mut error = None;
    let started = std::time::Instant::now();
    'outer: while held.len() < n {
        let before = rss_bytes();
        let size = batch.min(n - held.len());
        for _ in 0..size {
            match make(held.len()) {
                Ok(x) => held.push(x),
                Err(e) => {
                    error = Some(format!("{e:#}"));
                    break 'outer;
                }
            }
        }
        let grown = rss_bytes().saturating_sub(before);
        record(&mut per_process, grown / size as u64);
        if held.len() % 100_000 == 0 {
            eprintln!(
                "[bench]   {} held after {:.1} s",
                held.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    (
        Density {
            per_process,
            held: held.len(),
            error,
        },
        held,
    )
}

/// `h` less `touched` bytes per sample (at least 1).
pub(crate) fn beyond_touched(
    h: &hdrhistogram::Histogram<u64>,
    touched: u64,
) -> hdrhistogram::Histogram<u64> {
    let mut out = histogram();
    for v in h.iter_recorded() {
        let _ = out.record_n(
            v.value_iterated_to().saturating_sub(touched).max(1),
            v.count_at_value(),
        );
    }
    out
}

/// The largest pool size (in steps of 100) for which a node can be
/// created, below `target` which could not; and the error at `target`.
fn largest_node(target: u32) -> (u32, Option<String>) {
    let config = |n: u32| RuntimeConfig::default().max_processes(n).cache_dir(None);
    let error = match Node::new(&config(target)) {
        Ok(_) => return (target, None),
        Err(e) => format!("{e:#}"),
    };
    let (mut lo, mut hi) = (0u32, target / 100);
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if Node::new(&config(mid * 100)).is_ok() {
            lo = mid
        } else {
            hi = mid
        }
    }
    (lo * 100, Some(error))
}

/// How many processes the run instantiates, and why it is fewer than the
/// goal's N when it is.
struct Pool {
    /// Processes wanted by this run (fewer in a quick run).
    target: usize,
    /// Processes instantiated: `target`, or fewer if no node that large
    /// could be created.
    n: usize,
    /// The largest creatable node pool, and why the goal's could not be.
    node_cap: u32,
    node_error: Option<String>,
    batch: usize,
    /// Linear memory each instance touches, bytes.
    touched: u64,
}

impl Pool {
    fn of(ctx: &Ctx) -> Result<Pool> {
        let target: usize = if ctx.quick { 1_000 } else { 10_000 };
        let batch = if ctx.quick { 25 } else { 100 };
        // A node's pools reserve address space for every slot up front; find
        // out whether one can be created for the goal's N at all (also in a
        // quick run, where fewer processes are instantiated).
        let (node_cap, node_error) = largest_node(GOAL_N);
        if node_cap == 0 {
            anyhow::bail!(
                "no node could be created even with a pool of 100 processes: {}",
                node_error.unwrap_or_default()
            );
        }
        Ok(Pool {
            target,
            n: target.min(node_cap as usize),
            node_cap,
            node_error,
            batch,
            touched: page_size(),
        })
    }

    fn config(&self) -> RuntimeConfig {
        RuntimeConfig::default()
            .max_processes(self.n as u32)
            .cache_dir(None)
    }
}

/// `n` raw wasmtime instances of the module in `config`'s pooling
/// configuration, each given its first call, held at once.
pub(crate) fn raw_density(config: &RuntimeConfig, n: usize, batch: usize) -> Result<Density> {
    let engine = Engine::new(&engine_config(config, Metering::Epoch))
        .map_err(anyhow::Error::from)
        .context("cannot create a wasmtime engine with a pool that large")?;
    let module = Module::new(&engine, TINY).map_err(anyhow::Error::from)?;
    let pre = Linker::<()>::new(&engine)
        .instantiate_pre(&module)
        .map_err(anyhow::Error::from)?;
    let (d, held) = measure(n, batch, |_| {
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(1 << 40);
        let instance = pre.instantiate(&mut store).map_err(anyhow::Error::from)?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "weft_init")
            .map_err(anyhow::Error::from)?;
        init.call(&mut store, ()).map_err(anyhow::Error::from)?;
        Ok((store, instance))
    });
    drop(held);
    Ok(d)
}

/// `n` weft be processes of the module at `path` on a node of `config`,
/// each instantiated and initialised, held at once; `then` gets them
/// (and the runtime they run on) before they are dropped.
pub(crate) fn weft_density<R>(
    config: &RuntimeConfig,
    path: &Path,
    n: usize,
    batch: usize,
    then: impl FnOnce(&tokio::runtime::Runtime, &mut [Process]) -> Result<R>,
) -> Result<(Density, R)> {
    let node =
        Node::new(config).context("cannot create a node with a pool of that many processes")?;
    let mut spec = ProcessSpec::new("idle", path);
    spec.memory = 64 << 10;
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (d, mut held) = measure(n, batch, |i| {
        let env = node.env(&spec, i as u64);
        rt.block_on(async {
            let mut p = Process::instantiate(program.clone(), env).await?;
            p.init().await?;
            Ok(p)
        })
    });
    let after = then(&rt, &mut held)?;
    drop(held);
    Ok((d, after))
}

pub fn density(ctx: &Ctx) -> Result<Vec<Figure>> {
    let path = ctx.scratch.write("tiny.wat", TINY)?;
    let pool = Pool::of(ctx)?;
    // Baseline first, then dropped, so the two pools never coexist.
    let raw = raw_density(&pool.config(), pool.n, pool.batch)?;
    let (weft, ()) = weft_density(&pool.config(), &path, pool.n, pool.batch, |_, _| Ok(()))?;
    let rss = rss_figure(&pool, &weft, &raw);
    progress(&rss);
    let fig = capacity_figure(&pool, &weft, &raw);
    progress(&fig);
    Ok(vec![rss, fig])
}

fn rss_figure(pool: &Pool, weft: &Density, raw: &Density) -> Figure {
    let Pool {
        target,
        n,
        ref node_error,
        batch,
        touched,
        ..
    } = *pool;
    let beyond = |d: &Density, label: &str| {
        let h = beyond_touched(&d.per_process, touched);
        Summary::of(format!("{label} (held {} of {n})", d.held), &h)
    };
    let mut rss = Figure::new(
        "rss-per-idle-process",
        &format!("RSS per idle process beyond touched memory, N = {n}"),
        Unit::Bytes,
        beyond(weft, "weft be process: Process::instantiate + weft_init"),
        beyond(raw, "raw wasmtime: Store + instance + first call, same pooling config"),
        Some(Goal::ValueAtMost { stat: Stat::P99, max: 65536.0 }),
        "p99 ≤ 64 KiB beyond touched memory",
    )
    .note(format!(
        "RSS growth per batch of {batch} from /proc/self/statm divided by {batch}; touched linear memory ({touched} B, one OS page) subtracted"
    ));
    if let (Some(e), true) = (node_error, n < target) {
        rss = rss.note(format!(
            "measured at N = {n}, not {target}: a node could not be created with max_processes({GOAL_N}) ({e}); {n} was the largest pool (in steps of 100) that could be"
        ));
    }
    for (who, d) in [("weft", weft), ("raw wasmtime", raw)] {
        if let Some(e) = &d.error {
            rss = rss.note(format!("{who} stopped after {} processes: {e}", d.held));
        }
    }
    rss
}

fn capacity_figure(pool: &Pool, weft: &Density, raw: &Density) -> Figure {
    let (n, node_cap, node_error) = (pool.n, pool.node_cap, &pool.node_error);
    // The node's own pool limit caps the RSS extrapolation when it is lower.
    let cap = node_error
        .as_ref()
        .map_or(f64::INFINITY, |_| node_cap as f64);
    let capacity = |d: &Density, label: &str, cap: f64| {
        let h = &d.per_process;
        let at = |v: u64| (GIB8 / (v.max(1) as f64)).min(cap).floor();
        // The p99 of cost gives the conservative (smaller) capacity; "max" is the worst batch.
        Summary::from_values(
            label,
            at(h.value_at_quantile(0.5)),
            at(h.value_at_quantile(0.99)),
            at(h.max()),
            h.len(),
        )
    };
    let weft_label = if node_error.is_some() {
        format!("weft: min(8 GiB / RSS per idle process, largest creatable node pool = {node_cap})")
    } else {
        "weft: 8 GiB / RSS per idle process (touched memory included)".to_string()
    };
    let mut fig = Figure::new(
        "max-processes-8gib",
        "Largest N one node holds in 8 GiB (extrapolated)",
        Unit::Processes,
        capacity(weft, &weft_label, cap),
        capacity(raw, "raw wasmtime: 8 GiB / RSS per instance", f64::INFINITY),
        Some(Goal::ValueAtLeast { stat: Stat::P99, min: 10_000.0 }),
        "≥ 10,000 processes (judged at the p99 RSS per process)",
    )
    .note(format!(
        "An extrapolation, not a measurement: 8 GiB divided by the RSS per process measured at N = {n} ({} weft processes were actually held at once). \
         The 'p99' column is the capacity at the p99 cost per process, 'max' at the worst batch. Node-wide fixed costs (engines, code) are not counted.",
        weft.held
    ));
    if let Some(e) = node_error {
        fig = fig.note(format!(
            "RSS is not the binding limit: Node::new(max_processes({GOAL_N})) fails ({e}). Each of the node's two engines (rt and be) \
             reserves address space for 2 × max_processes linear-memory slots of about 4 GiB each up front, so a node's pool tops out \
             near {node_cap} processes in a 47-bit address space whatever the RAM. The raw wasmtime baseline has one engine."
        ));
    }
    fig
}
