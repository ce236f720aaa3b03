//! The weft benchmark suite (`weft bench`).
//!
//! Every figure is weft against a baseline measured in the same run
//! (raw wasmtime, a native process spawn, a native Rust loop, `cyclictest`,
//! a tokio channel, an unmetered engine, CRIU), reported as median and p99 with
//! the ratios, and judged against its goal. Results go to `BENCHMARKS.md`
//! and `benchmarks.json`.
//!
//! * `startup`: instantiate-to-first-call and cold start.
//! * `memory`: RSS per idle process and processes per 8 GiB.
//! * `latency`: local port message latency.
//! * `jitter`: rt 1 kHz wake-up jitter, alone and under load.
//! * `metering`: fuel and epoch overhead.
//! * `cluster`: cross-node port latency against raw Zenoh, node failure
//!   detection and recovery, and deploy time, on a real local cluster.
//! * `scale`: apps of 100, 1,000 and 10,000 stateful processes over 4
//!   nodes: time to all running, controller and node CPU, RSS and disk
//!   writes, checkpoint traffic, `weft ps` latency; and the recovery of a
//!   killed node's ~1,000 processes.
//! * `migration`: live `weft migrate` of 64 KiB to 64 MiB of state on a
//!   real local cluster: output downtime and missed ticks as a consumer on
//!   a third node sees them (10 ms and 1 ms loops), against the same watch
//!   with no move, and total time against the in-process snapshot →
//!   restore of the same state (`checkpoint`); and weft's checkpoint +
//!   restore against CRIU dumping and restoring a native process with the
//!   same memory (`criu`); and missed tags and the output pause when a hot
//!   standby takes over after `kill -9` of its process's node (`takeover`).
//! * `state`: rt jitter and deadline misses of a 1 kHz process while its
//!   64 MiB of state is checkpointed, against the same with 64 KiB.
//! * `density`: a million idle processes held at once on one node (raising
//!   `vm.max_map_count` when run as root), RSS per process against raw
//!   wasmtime at the same N, and 100,000 of them ticking at 1 s against
//!   native closure calls.
//! * `stats` and `report`: figures, verdicts and the two output files.

mod checkpoint;
mod cluster;
mod criu;
mod density;
mod devices;
mod jitter;
mod latency;
mod memory;
mod metering;
mod migration;
mod modules;
mod mqtt;
mod observability;
mod report;
mod scale;
mod startup;
mod state;
mod stats;
mod takeover;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::modules::Scratch;
use crate::stats::{Figure, Unit, Verdict, count};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Fewer iterations, for a fast smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Directory to write BENCHMARKS.md and benchmarks.json to (default: the repository root).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only these benchmark groups: startup, memory, latency, metering, cluster, scale, observability, devices, migration, state, jitter, density (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
}

/// What every benchmark gets.
pub(crate) struct Ctx {
    pub quick: bool,
    /// The repository root (for examples/wasm).
    pub root: PathBuf,
    pub scratch: Scratch,
}

/// Prints a figure's verdict as a progress line.
/// Runs a group that talks to a cluster on a runtime of its own (two
/// workers, as Zenoh wants), then reports each figure.
pub(crate) fn on_runtime(
    group: impl std::future::Future<Output = Result<Vec<Figure>>>,
) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let figures = runtime.block_on(group)?;
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

pub(crate) fn progress(f: &Figure) {
    eprintln!("[bench]   {}: {}", f.id, f.verdict_text());
}

type Group = fn(&Ctx) -> Result<Vec<Figure>>;

/// The groups in running order. State and jitter run last: they lock the process's
/// memory (as a node with rt processes does), which would distort the RSS
/// figures and slow the others. Cluster runs before it for the same reason
/// (its controller and nodes are separate processes, but the bench's own
/// sessions and threads should not be locked in), and migration too (it
/// also holds up to 64 MiB of state in this process).
const GROUPS: &[(&str, Group)] = &[
    ("startup", |c| {
        let mut v = startup::instantiate(c)?;
        v.extend(startup::cold_start(c)?);
        Ok(v)
    }),
    ("memory", memory::density),
    ("latency", latency::port_latency),
    ("metering", metering::metering),
    ("cluster", cluster::cluster),
    ("scale", scale::scale),
    ("observability", observability::observability),
    ("migration", migration::migration),
    // It runs an rt process, so it locks memory too.
    ("devices", devices::devices),
    ("state", state::state),
    ("jitter", jitter::jitter),
    // Last: it holds a million processes, and what it frees stays mapped.
    ("density", density::density),
];

/// The repository root: the nearest ancestor of the working directory, then
/// of the binary, then of this crate's source, that holds `examples/wasm`.
fn repo_root() -> PathBuf {
    let candidates = [
        std::env::current_dir().ok(),
        std::env::current_exe().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in candidates.into_iter().flatten() {
        let mut dir: Option<&Path> = Some(&start);
        while let Some(d) = dir {
            if d.join("examples/wasm").is_dir() && d.join("Cargo.toml").is_file() {
                return d.to_path_buf();
            }
            dir = d.parent();
        }
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

pub fn run(args: BenchArgs) -> Result<()> {
    for name in &args.only {
        if !GROUPS.iter().any(|(g, _)| g == name) {
            let names: Vec<_> = GROUPS.iter().map(|(g, _)| *g).collect();
            bail!(
                "unknown benchmark group {name:?}; choose from {}",
                names.join(", ")
            );
        }
    }
    let mode = if args.quick { "quick" } else { "full" };
    let root = repo_root();
    let out = args.out.clone().unwrap_or_else(|| root.clone());
    let ctx = Ctx {
        quick: args.quick,
        root,
        scratch: Scratch::new()?,
    };
    let host = report::Host::probe();
    let started = Instant::now();
    eprintln!(
        "[bench] weft bench ({mode}) on {} CPUs; results go to {}",
        host.cpus,
        out.display()
    );
    let mut figures = Vec::new();
    for (name, group) in GROUPS {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
            continue;
        }
        let t = Instant::now();
        eprintln!("[bench] {name} ...");
        match group(&ctx) {
            Ok(v) => figures.extend(v),
            Err(e) => {
                eprintln!("[bench]   {name} failed: {e:#}");
                figures.push(Figure::skipped(
                    name,
                    &format!("{name} (group failed)"),
                    Unit::Nanoseconds,
                    "—",
                    format!("the {name} benchmarks failed: {e:#}"),
                ));
            }
        }
        eprintln!("[bench] {name} done in {:.1} s", t.elapsed().as_secs_f64());
    }
    report::write(&out, &figures, &host, mode)?;
    let met = count(&figures, Verdict::Met);
    let not_met = count(&figures, Verdict::NotMet);
    let skipped = count(&figures, Verdict::Skipped);
    eprintln!(
        "[bench] {met} goals met, {not_met} not met, {skipped} skipped, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
