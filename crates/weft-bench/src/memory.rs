//! Memory density: RSS per idle process and the number of processes one
//! node holds in 8 GiB, against raw wasmtime instances of the same module
//! in the same pooling configuration.
//!
//! RSS comes from `/proc/self/statm`, read before and after each batch of
//! instantiations; a batch's growth divided by its size is one sample. The
//! module touches exactly one OS page of its linear memory, which is the
//! "touched memory" the goal excludes.

use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::{Engine, Linker, Module, Store};
use weft_manifest::ProcessSpec;
use weft_runtime::engine::{Metering, engine_config};
use weft_runtime::{Node, Process, RuntimeConfig};

use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

const GIB8: f64 = 8.0 * 1024.0 * 1024.0 * 1024.0;

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Resident set size of this process, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * page_size()
}

/// Per-batch samples of RSS growth per instance (bytes, touched memory included).
struct Density {
    per_process: hdrhistogram::Histogram<u64>,
    held: usize,
    error: Option<String>,
}

fn measure<T>(n: usize, batch: usize, mut make: impl FnMut(usize) -> Result<T>) -> (Density, Vec<T>) {
    let mut held = Vec::with_capacity(n);
    let mut per_process = histogram();
    let mut error = None;
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
    }
    (Density { per_process, held: held.len(), error }, held)
}

pub fn density(ctx: &Ctx) -> Result<Vec<Figure>> {
    let n: usize = if ctx.quick { 1_000 } else { 10_000 };
    let batch = if ctx.quick { 25 } else { 100 };
    let touched = page_size();
    let path = ctx.scratch.write("tiny.wat", TINY)?;
    let config = RuntimeConfig::default().max_processes(n as u32).cache_dir(None);

    // Baseline first, then dropped, so the two pools never coexist.
    let raw = {
        let engine = Engine::new(&engine_config(&config, Metering::Epoch)).map_err(anyhow::Error::from)?;
        let module = Module::new(&engine, TINY).map_err(anyhow::Error::from)?;
        let pre = Linker::<()>::new(&engine).instantiate_pre(&module).map_err(anyhow::Error::from)?;
        let (d, held) = measure(n, batch, |_| {
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(1 << 40);
            let instance = pre.instantiate(&mut store).map_err(anyhow::Error::from)?;
            let init = instance.get_typed_func::<(), ()>(&mut store, "weft_init").map_err(anyhow::Error::from)?;
            init.call(&mut store, ()).map_err(anyhow::Error::from)?;
            Ok((store, instance))
        });
        drop(held);
        d
    };

    let weft = {
        let node = Node::new(&config).context("cannot create a node with a pool of that many processes")?;
        let mut spec = ProcessSpec::new("idle", &path);
        spec.memory = 64 << 10;
        let spec = Arc::new(spec);
        let program = Arc::new(node.prepare(spec.clone())?);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (d, held) = measure(n, batch, |i| {
            let env = node.env(&spec, i as u64);
            rt.block_on(async {
                let mut p = Process::instantiate(program.clone(), env).await?;
                p.init().await?;
                Ok(p)
            })
        });
        drop(held);
        d
    };

    let beyond = |d: &Density, label: &str| {
        let mut h = histogram();
        for v in d.per_process.iter_recorded() {
            let _ = h.record_n(v.value_iterated_to().saturating_sub(touched).max(1), v.count_at_value());
        }
        Summary::of(format!("{label} (held {} of {n})", d.held), &h)
    };
    let mut rss = Figure::new(
        "rss-per-idle-process",
        &format!("RSS per idle process beyond touched memory, N = {n}"),
        Unit::Bytes,
        beyond(&weft, "weft be process: Process::instantiate + weft_init"),
        beyond(&raw, "raw wasmtime: Store + instance + first call, same pooling config"),
        Some(Goal::ValueAtMost { stat: Stat::P99, max: 65536.0 }),
        "p99 ≤ 64 KiB beyond touched memory",
    )
    .note(format!(
        "RSS growth per batch of {batch} from /proc/self/statm divided by {batch}; touched linear memory ({touched} B, one OS page) subtracted"
    ));
    for (who, d) in [("weft", &weft), ("raw wasmtime", &raw)] {
        if let Some(e) = &d.error {
            rss = rss.note(format!("{who} stopped after {} processes: {e}", d.held));
        }
    }
    progress(&rss);

    let capacity = |d: &Density, label: &str| {
        let h = &d.per_process;
        let at = |q: f64| GIB8 / (h.value_at_quantile(q).max(1) as f64);
        // The p99 of cost gives the conservative (smaller) capacity.
        Summary::from_values(label, at(0.5), at(0.99), GIB8 / (h.min().max(1) as f64), h.len())
    };
    let fig = Figure::new(
        "max-processes-8gib",
        "Largest N one node holds in 8 GiB (extrapolated)",
        Unit::Processes,
        capacity(&weft, "weft: 8 GiB / RSS per idle process (touched memory included)"),
        capacity(&raw, "raw wasmtime: 8 GiB / RSS per instance"),
        Some(Goal::ValueAtLeast { stat: Stat::P99, min: 10_000.0 }),
        "≥ 10,000 processes (judged at the p99 RSS per process)",
    )
    .note(format!(
        "An extrapolation, not a measurement: 8 GiB divided by the RSS per process measured at N = {n} ({} weft processes were actually held at once). \
         The 'p99' column is the capacity at the p99 cost per process. Node-wide fixed costs (engines, code) are not counted.",
        weft.held
    ));
    progress(&fig);
    Ok(vec![rss, fig])
}
