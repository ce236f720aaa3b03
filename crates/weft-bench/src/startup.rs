//! Start-up costs: instantiate-to-first-call of a precompiled process
//! against raw wasmtime with the same engine configuration and against
//! spawning a native process, and the cold start of `weft run hello.wasm`
//! against a native hello binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use weft_manifest::module::Files;
use weft_manifest::{Class, ProcessSpec};
use weft_runtime::engine::{Metering, engine_config};
use weft_runtime::process::run_sync;
use weft_runtime::{Node, Process, ProcessEnv, Program, RuntimeConfig};

use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

const FUEL: u64 = 1_000_000;

/// A precompiled rt program (InstancePre inside) of the tiny module, with
/// the node it was prepared on.
struct WeftTiny {
    _node: Node,
    program: Arc<Program>,
    env: ProcessEnv,
}

impl WeftTiny {
    fn prepare(config: &RuntimeConfig, path: &Path) -> Result<WeftTiny> {
        let node = Node::new(config)?;
        let mut spec = ProcessSpec::new("tiny", path);
        spec.class = Class::Rt;
        spec.period = Some(Duration::from_millis(1));
        spec.fuel_per_tick = Some(FUEL);
        spec.memory = 64 << 10;
        let spec = Arc::new(spec);
        let program = Arc::new(node.prepare(spec.clone(), &Files)?);
        let env = node.env(&spec, 1);
        Ok(WeftTiny {
            _node: node,
            program,
            env,
        })
    }

    /// Instantiated and `weft_init` called; rt calls never suspend, so
    /// run_sync drives them.
    fn once(&self) -> Result<Duration> {
        let (program, env) = (self.program.clone(), self.env.clone());
        let t = Instant::now();
        let mut p = run_sync(Process::instantiate(program, env))?;
        run_sync(p.init())?;
        let d = t.elapsed();
        drop(p);
        Ok(d)
    }
}

/// raw wasmtime: the same engine configuration (fuel, pooling), an
/// InstancePre of the same module.
struct RawTiny {
    engine: Engine,
    pre: InstancePre<()>,
}

impl RawTiny {
    fn prepare(config: &RuntimeConfig) -> Result<RawTiny> {
        let engine =
            Engine::new(&engine_config(config, Metering::Fuel)).map_err(anyhow::Error::from)?;
        let module = Module::new(&engine, TINY).map_err(anyhow::Error::from)?;
        let pre = Linker::<()>::new(&engine)
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)?;
        Ok(RawTiny { engine, pre })
    }

    /// A fresh store, instantiated, the same first call.
    fn once(&self) -> Result<Duration> {
        let t = Instant::now();
        let mut store = Store::new(&self.engine, ());
        store.set_fuel(FUEL).map_err(anyhow::Error::from)?;
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "weft_init")
            .map_err(anyhow::Error::from)?;
        init.call(&mut store, ()).map_err(anyhow::Error::from)?;
        let d = t.elapsed();
        drop(store);
        Ok(d)
    }
}

/// `path` if it exists, else the bare command name found on `PATH`.
fn system_command(path: &'static str) -> &'static str {
    if Path::new(path).exists() {
        path
    } else {
        path.rsplit('/').next().unwrap_or(path)
    }
}

/// Spawn-and-wait times of `spawns` runs of `cmd`, after 5 untimed ones.
fn native_spawns(cmd: &str, spawns: usize) -> Result<Histogram<u64>> {
    let mut native = histogram();
    for i in 0..spawns + 5 {
        let t = Instant::now();
        let status = Command::new(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        let d = t.elapsed();
        if !status.success() {
            bail!("{cmd} failed: {status}");
        }
        if i >= 5 {
            record(&mut native, d.as_nanos() as u64);
        }
    }
    Ok(native)
}

/// Instantiate-to-first-call, weft vs raw wasmtime vs native spawn.
pub fn instantiate(ctx: &Ctx) -> Result<Vec<Figure>> {
    let iters = if ctx.quick { 500 } else { 3000 };
    let spawns = if ctx.quick { 50 } else { 300 };
    let path = ctx.scratch.write("tiny.wat", TINY)?;
    let config = RuntimeConfig::default().max_processes(16).cache_dir(None);
    let weft_tiny = WeftTiny::prepare(&config, &path)?;
    let raw_tiny = RawTiny::prepare(&config)?;
    for _ in 0..50 {
        weft_tiny.once()?;
        raw_tiny.once()?;
    }
    let (mut weft, mut raw) = (histogram(), histogram());
    // Interleaved so both see the same machine state.
    for _ in 0..iters {
        record(&mut weft, weft_tiny.once()?.as_nanos() as u64);
        record(&mut raw, raw_tiny.once()?.as_nanos() as u64);
    }
    let native_cmd = system_command("/bin/true");
    let native = native_spawns(native_cmd, spawns)?;
    let weft_s = Summary::of(
        "weft: Process::instantiate + weft_init (precompiled rt program)",
        &weft,
    );
    let raw_fig = Figure::new(
        "instantiate-vs-wasmtime",
        "Instantiate to first call vs raw wasmtime",
        Unit::Nanoseconds,
        weft_s.clone(),
        Summary::of(
            "raw wasmtime: Store::new + InstancePre::instantiate + first call, same engine config",
            &raw,
        ),
        Some(Goal::RatioAtMost {
            stat: Stat::Median,
            max: 1.2,
        }),
        "median ≤ 1.2× raw wasmtime",
    )
    .note(format!(
        "{iters} samples each, interleaved; module: one 64 KiB page, weft_init touches one byte"
    ));
    progress(&raw_fig);
    let spawn_fig = Figure::new(
        "instantiate-vs-native-spawn",
        "Instantiate to first call vs spawning a native process",
        Unit::Nanoseconds,
        weft_s,
        Summary::of(
            format!("native: spawn `{native_cmd}` and wait for it"),
            &native,
        ),
        Some(Goal::SpeedupAtLeast {
            stat: Stat::Median,
            min: 100.0,
        }),
        "median ≥ 100× faster than a native spawn",
    )
    .note(format!("{spawns} native spawns"));
    progress(&spawn_fig);
    Ok(vec![raw_fig, spawn_fig])
}

const COLD_START_TITLE: &str = "Cold start: `weft run hello-wasi.wasm` vs a native hello";
const COLD_START_GOAL: &str = "none set (reported for context)";

/// Wall time of `cmd` from spawn to a successful exit, output discarded.
fn time(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let d = t.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(d)
}

/// Cold start of the `weft` binary running a WASI hello module vs a native hello.
pub fn cold_start(ctx: &Ctx) -> Result<Vec<Figure>> {
    let runs = if ctx.quick { 8 } else { 30 };
    let hello = ctx.root.join("examples/wasm/hello-wasi.wasm");
    if !hello.is_file() {
        let fig = Figure::skipped(
            "cold-start",
            COLD_START_TITLE,
            Unit::Nanoseconds,
            COLD_START_GOAL,
            format!(
                "{} is missing; build it with `bash scripts/build-guests.sh`",
                hello.display()
            ),
        );
        progress(&fig);
        return Ok(vec![fig]);
    }
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let echo = system_command("/bin/echo");
    let weft_cmd = || {
        let mut c = Command::new(&exe);
        c.arg("run").arg(&hello).env("WEFT_LOG", "error");
        c
    };
    let echo_cmd = || {
        let mut c = Command::new(echo);
        c.arg("hello");
        c
    };
    // The first runs fill the compiled-artefact cache (a real deployment
    // precompiles) and warm the page cache for both binaries.
    for _ in 0..3 {
        time(&mut weft_cmd())?;
        time(&mut echo_cmd())?;
    }
    let (mut weft, mut native) = (histogram(), histogram());
    for _ in 0..runs {
        record(&mut weft, time(&mut weft_cmd())?.as_nanos() as u64);
        record(&mut native, time(&mut echo_cmd())?.as_nanos() as u64);
    }
    let fig = cold_start_figure(runs, &exe, echo, &weft, &native);
    progress(&fig);
    Ok(vec![fig])
}

fn cold_start_figure(
    runs: usize,
    exe: &Path,
    echo: &str,
    weft: &Histogram<u64>,
    native: &Histogram<u64>,
) -> Figure {
    Figure::new(
        "cold-start",
        COLD_START_TITLE,
        Unit::Nanoseconds,
        Summary::of(
            format!(
                "weft: `{} run examples/wasm/hello-wasi.wasm` (artefact cache warm)",
                exe.display()
            ),
            weft,
        ),
        Summary::of(format!("native: `{echo} hello`"), native),
        None,
        COLD_START_GOAL,
    )
    .note(format!(
        "{runs} runs each, interleaved, after 3 warm-up runs; wall time from spawn to exit"
    ))
}
