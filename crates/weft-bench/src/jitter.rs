//! rt wake-up jitter at 1 kHz: a weft rt process run by `Node::start`,
//! against a native Rust loop with the same scheduling (`SCHED_FIFO`, the
//! same pinned CPU, `clock_nanosleep` on absolute release times) and
//! against `cyclictest`, each alone and with a CPU-burning neighbour (a be
//! process for weft, a spinning thread for the baselines).
//!
//! Jitter is wake-up lateness: the time between a release and the moment
//! the thread runs. On a shared VM the kernel and hypervisor dominate it,
//! which is why it is only ever reported as a ratio.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use weft_manifest::AppManifest;
use weft_runtime::RtClass;
use weft_runtime::rt;
use weft_runtime::{Node, ProcessState, RuntimeConfig};

use crate::modules::{SPIN, TINY};
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

const PERIOD_NS: u64 = 1_000_000;

/// A spinning thread at normal priority, stopped when dropped.
struct Burner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Burner {
    fn start() -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        Burner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Run {
    summary: Summary,
    notes: Vec<String>,
}

fn weft_run(
    ctx: &Ctx,
    node: &Node,
    runtime: &tokio::runtime::Runtime,
    loaded: bool,
    dur: Duration,
) -> Result<(Run, RtClass)> {
    let mut toml = String::from(
        "name = \"bench-jitter\"\n\
         [[process]]\nname = \"rt\"\nmodule = \"tick.wat\"\nclass = \"rt\"\nperiod = \"1ms\"\nfuel_per_tick = 100000\nmemory = \"64KiB\"\n",
    );
    if loaded {
        toml.push_str("[[process]]\nname = \"burner\"\nmodule = \"spin.wat\"\nperiod = \"5ms\"\ndeadline = \"10s\"\nmemory = \"64KiB\"\n");
    }
    let mut app = AppManifest::parse(&toml, "bench-jitter.toml")?;
    app.resolve_paths(ctx.scratch.path());
    let running = node.start(&app, runtime.handle())?;
    std::thread::sleep(dur + Duration::from_millis(50));
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
    let label = if loaded {
        "weft rt process (1 ms period) beside a CPU-burning be process"
    } else {
        "weft rt process (1 ms period), alone"
    };
    let mut notes = vec![format!(
        "weft: {} ticks, {} deadline misses",
        rt.ticks, rt.deadline_misses
    )];
    if let Some(b) = report.processes.iter().find(|p| p.name == "burner") {
        notes.push(format!(
            "burner be process: {} ticks of ~30M loop iterations each, {} faults, exec p50 {:.1} ms",
            b.ticks,
            b.faults,
            b.exec.p50_us / 1000.0
        ));
    }
    let summary = Summary::from_values(
        label,
        j.p50_us * 1000.0,
        j.p99_us * 1000.0,
        j.max_us * 1000.0,
        j.samples,
    );
    Ok((Run { summary, notes }, report.rt_class))
}

fn native_run(loaded: bool, dur: Duration) -> Result<(Run, RtClass)> {
    let _burner = loaded.then(Burner::start);
    let n = dur.as_millis() as u64;
    let (h, class) = std::thread::Builder::new()
        .name("bench-native-rt".into())
        .spawn(move || {
            let class = rt::make_current_thread_rt(rt::RT_PRIORITY, rt::rt_cpu());
            let mut h = histogram();
            let start = rt::monotonic_ns() + 50_000_000;
            let mut acc = 0u64;
            for k in 0..n {
                let release = start + k * PERIOD_NS;
                rt::sleep_until_ns(release);
                let woke = rt::monotonic_ns();
                record(&mut h, woke.saturating_sub(release));
                acc = std::hint::black_box(acc.wrapping_add(k));
            }
            (h, class)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("native rt loop panicked"))?;
    let label = if loaded {
        "native Rust loop (same scheduling) beside a spinning thread"
    } else {
        "native Rust loop (SCHED_FIFO 80, pinned, clock_nanosleep absolute), alone"
    };
    Ok((
        Run {
            summary: Summary::of(label, &h),
            notes: vec![],
        },
        class,
    ))
}

/// Why cyclictest cannot run here, if it cannot.
fn cyclictest_missing() -> Option<String> {
    match Command::new("cyclictest")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => None,
        Err(e) => Some(format!(
            "cyclictest is not available ({e}); install rt-tests to measure this baseline"
        )),
    }
}

/// Parses `cyclictest -h` output (one `bucket_us count` line per µs) into a histogram in ns.
fn parse_cyclictest(out: &str) -> Result<Histogram<u64>> {
    let mut h = histogram();
    let mut max_us = 0u64;
    let mut overflows = 0u64;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("# Max Latencies:") {
            max_us = max_us.max(
                rest.split_whitespace()
                    .filter_map(|t| t.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0),
            );
        } else if let Some(rest) = line.strip_prefix("# Histogram Overflows:") {
            overflows += rest
                .split_whitespace()
                .filter_map(|t| t.parse::<u64>().ok())
                .sum::<u64>();
        } else if !line.starts_with('#') {
            let mut it = line.split_whitespace().map(str::parse::<u64>);
            if let (Some(Ok(us)), Some(Ok(count)), None) = (it.next(), it.next(), it.next())
                && count > 0
            {
                let _ = h.record_n((us * 1000).max(1), count);
            }
        }
    }
    if overflows > 0 {
        // Beyond the histogram range: counted at the reported maximum.
        let _ = h.record_n((max_us * 1000).max(1), overflows);
    }
    if h.is_empty() {
        bail!("no histogram in cyclictest output");
    }
    Ok(h)
}

fn cyclictest_run(loaded: bool, dur: Duration) -> Result<Run> {
    let _burner = loaded.then(Burner::start);
    let mut cmd = Command::new("cyclictest");
    cmd.args(["-m", "--laptop", "-p80", "-i1000", "-q", "-h", "100000"])
        .arg(format!("-l{}", dur.as_millis()));
    if let Some(cpu) = rt::rt_cpu() {
        cmd.arg(format!("-a{cpu}"));
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot run cyclictest")?;
    if !out.status.success() {
        bail!(
            "cyclictest failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let h = parse_cyclictest(&String::from_utf8_lossy(&out.stdout))?;
    let label = if loaded {
        "cyclictest beside a spinning thread"
    } else {
        "cyclictest, alone"
    };
    let args = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    Ok(Run {
        summary: Summary::of(label, &h),
        notes: vec![format!(
            "cyclictest args: {args} (µs resolution); --laptop keeps it from setting /dev/cpu_dma_latency to 0, \
             which neither weft nor the native loop do either (with it, idle-state exit latency disappears from cyclictest's figures only)"
        )],
    })
}

/// Several short runs of one kind combined: the median across rounds of
/// each round's median and p99 (robust to a burst of load from another
/// tenant hitting one round), the largest maximum, all samples counted.
fn combine(runs: Vec<Run>) -> Run {
    let first = &runs[0].summary;
    let summary = Summary::of_rounds(runs.iter().map(|r| &r.summary));
    let mut notes: Vec<String> = Vec::new();
    if runs.len() > 1 {
        let p99s: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.0}", r.summary.p99 / 1000.0))
            .collect();
        notes.push(format!(
            "{}: p99 per round (µs): {}",
            first.label,
            p99s.join(", ")
        ));
    }
    for n in runs.iter().flat_map(|r| &r.notes) {
        if !notes.contains(n) && !n.starts_with("weft: ") && !n.starts_with("burner") {
            notes.push(n.clone());
        }
    }
    Run { summary, notes }
}

/// One kind of load's runs (alone, or with a burner), one per round.
#[derive(Default)]
struct Series {
    weft: Vec<Run>,
    native: Vec<Run>,
    cyclictest: Vec<Run>,
}

/// Every run of every round, and what the runs obtained.
struct Rounds {
    alone: Series,
    loaded: Series,
    /// The rt class of the last weft run and of the last native loop.
    class: RtClass,
    native_class: RtClass,
    /// cyclictest's first failure: it is not run again after one.
    cyc_error: Option<String>,
    /// Every weft run's notes, in running order.
    weft_notes: Vec<String>,
}

/// A series' runs combined, per kind; `cyclictest` is `None` when it is
/// missing from this machine.
struct Combined {
    weft: Run,
    native: Run,
    cyclictest: Option<Result<Run>>,
}

impl Series {
    fn combine(self, missing: &Option<String>, cyc_error: &Option<String>) -> Combined {
        let cyclictest = match (missing, cyc_error) {
            (None, None) => Some(Ok(combine(self.cyclictest))),
            (None, Some(e)) => Some(Err(anyhow::anyhow!("{e}"))),
            (Some(_), _) => None,
        };
        Combined {
            weft: combine(self.weft),
            native: combine(self.native),
            cyclictest,
        }
    }
}

/// Interleaved rounds so that load from others on a shared machine
/// spreads over all kinds instead of landing on one.
fn run_rounds(
    ctx: &Ctx,
    node: &Node,
    runtime: &tokio::runtime::Runtime,
    (rounds, dur): (u32, Duration),
    cyclictest: bool,
) -> Result<Rounds> {
    let mut r = Rounds {
        alone: Series::default(),
        loaded: Series::default(),
        class: RtClass::Soft,
        native_class: RtClass::Soft,
        cyc_error: None,
        weft_notes: Vec::new(),
    };
    for round in 1..=rounds {
        eprintln!(
            "[bench]   jitter round {round}/{rounds}: weft, native, cyclictest; alone then with a burner ({} s each)",
            dur.as_secs()
        );
        for loaded in [false, true] {
            let (w, c) = weft_run(ctx, node, runtime, loaded, dur)?;
            r.class = c;
            r.weft_notes.extend(w.notes.iter().cloned());
            let (n, c) = native_run(loaded, dur)?;
            r.native_class = c;
            let series = if loaded { &mut r.loaded } else { &mut r.alone };
            series.weft.push(w);
            series.native.push(n);
            if cyclictest && r.cyc_error.is_none() {
                match cyclictest_run(loaded, dur) {
                    Ok(run) => series.cyclictest.push(run),
                    Err(e) => r.cyc_error = Some(format!("{e:#}")),
                }
            }
        }
    }
    Ok(r)
}

/// What the rt process did in each run, for the reader to check, and the
/// burner's note of the first round.
fn run_notes(weft_notes: &[String]) -> (String, Option<String>) {
    let misses: Vec<&str> = weft_notes
        .iter()
        .filter(|n| n.starts_with("weft: "))
        .map(|n| &n[6..])
        .collect();
    let burner = weft_notes
        .iter()
        .find(|n| n.starts_with("burner"))
        .map(|b| format!("{b} (first round)"));
    (
        format!("weft rt process per run: {}", misses.join("; ")),
        burner,
    )
}

/// The note every figure carries: the scheduling obtained and how the
/// rounds were run and combined.
fn sched_note(r: &Rounds, (rounds, dur): (u32, Duration)) -> String {
    let (class, native_class) = (r.class, r.native_class);
    format!(
        "scheduling obtained: weft rt class {class:?}, native loop {native_class:?} ({}); {} s per run, 1 kHz",
        if class == RtClass::Hard {
            "SCHED_FIFO"
        } else {
            "normal priority: SCHED_FIFO was not permitted"
        },
        dur.as_secs()
    ) + &format!(
        ", {rounds} interleaved round(s); figures are the median over rounds of each round's median and p99, max is the largest seen"
    )
}

fn ratio_goal() -> Option<Goal> {
    Some(Goal::RatioAtMost {
        stat: Stat::P99,
        max: 1.2,
    })
}

/// What all the jitter figures share: the scheduling note, and why
/// cyclictest is missing if it is.
struct JitterFigures {
    sched: String,
    missing: Option<String>,
}

impl JitterFigures {
    fn vs(
        &self,
        id: &str,
        title: &str,
        weft: &Run,
        base: &Run,
        goal: Option<Goal>,
        text: &str,
    ) -> Figure {
        let mut f = Figure::new(
            id,
            title,
            Unit::Nanoseconds,
            weft.summary.clone(),
            base.summary.clone(),
            goal,
            text,
        )
        .note(self.sched.clone());
        for n in weft.notes.iter().chain(&base.notes) {
            if !f.notes.contains(n) {
                f = f.note(n.clone());
            }
        }
        f
    }

    fn vs_cyclictest(
        &self,
        id: &str,
        title: &str,
        weft: &Run,
        cyc: &Option<Result<Run>>,
    ) -> Figure {
        match (cyc, &self.missing) {
            (Some(Ok(c)), _) => self.vs(id, title, weft, c, ratio_goal(), "p99 ≤ 1.2× cyclictest"),
            (Some(Err(e)), _) => Figure::skipped(
                id,
                title,
                Unit::Nanoseconds,
                "p99 ≤ 1.2× cyclictest",
                format!("cyclictest failed: {e:#}"),
            ),
            (None, reason) => Figure::skipped(
                id,
                title,
                Unit::Nanoseconds,
                "p99 ≤ 1.2× cyclictest",
                reason.clone().unwrap_or_default(),
            ),
        }
    }

    fn all(&self, alone: &Combined, loaded: &Combined) -> Vec<Figure> {
        vec![
            self.vs(
                "rt-jitter-vs-native",
                "rt 1 kHz wake-up jitter vs a native loop, alone",
                &alone.weft,
                &alone.native,
                ratio_goal(),
                "p99 ≤ 1.2× native",
            ),
            self.vs_cyclictest(
                "rt-jitter-vs-cyclictest",
                "rt 1 kHz wake-up jitter vs cyclictest, alone",
                &alone.weft,
                &alone.cyclictest,
            ),
            self.vs(
                "rt-jitter-loaded-vs-native",
                "rt 1 kHz wake-up jitter vs a native loop, with a CPU burner beside it",
                &loaded.weft,
                &loaded.native,
                ratio_goal(),
                "p99 ≤ 1.2× native",
            ),
            self.vs_cyclictest(
                "rt-jitter-loaded-vs-cyclictest",
                "rt 1 kHz wake-up jitter vs cyclictest, with a CPU burner beside it",
                &loaded.weft,
                &loaded.cyclictest,
            ),
            self.vs(
                "rt-jitter-growth-under-load",
                "Growth of weft rt jitter when a CPU-burning be process runs beside it",
                &loaded.weft,
                &alone.weft,
                ratio_goal(),
                "p99 grows ≤ 1.2× (loaded / alone)",
            ),
            self.vs(
                "native-jitter-growth-under-load",
                "Growth of native-loop jitter with a spinning thread beside it (context for the line above)",
                &loaded.native,
                &alone.native,
                None,
                "none (context)",
            ),
        ]
    }
}

pub fn jitter(ctx: &Ctx) -> Result<Vec<Figure>> {
    let plan = if ctx.quick {
        (1, Duration::from_secs(2))
    } else {
        (5, Duration::from_secs(3))
    };
    ctx.scratch.write("tick.wat", TINY)?;
    ctx.scratch.write("spin.wat", SPIN)?;
    // Node::start locks memory for rt processes; the baselines get the same.
    rt::lock_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node = Node::new(&RuntimeConfig::default().max_processes(8).cache_dir(None))?;
    let missing = cyclictest_missing();
    let r = run_rounds(ctx, &node, &runtime, plan, missing.is_none())?;
    let (weft_runs_note, burner) = run_notes(&r.weft_notes);
    let sched = format!("{}. {weft_runs_note}", sched_note(&r, plan));
    let alone = r.alone.combine(&missing, &r.cyc_error);
    let mut loaded = r.loaded.combine(&missing, &r.cyc_error);
    loaded.weft.notes.extend(burner);
    let figures = JitterFigures { sched, missing }.all(&alone, &loaded);
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cyclictest_histograms() {
        let out = "# /dev/cpu_dma_latency set to 0us\n# Histogram\n000013 000001\n000020 000098\n000030 000000\n\
                   # Total: 000000100\n# Max Latencies: 22172\n# Histogram Overflows: 00001\n# Thread 0: 00019\n";
        let h = parse_cyclictest(out).unwrap();
        assert_eq!(h.len(), 100);
        assert_eq!(h.value_at_quantile(0.5) / 1000, 20);
        assert!(h.max() >= 22_000_000);
        assert!(parse_cyclictest("# nothing\n").is_err());
    }
}
