//! What moving a process's state costs weft in one process, without the
//! network: snapshot → encode → decode → restore (the floor under every
//! migration), and the same through a file (what a checkpoint to disk and
//! a restore from it cost, comparable with CRIU's dump and restore).
//!
//! Each state size gets its own rt process of the `stateful` module (its
//! whole memory written with a pattern in `weft_init`, a few pages changed
//! per tick), instantiated on a node of this process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use weft_abi::Capability;
use weft_manifest::module::Files;
use weft_manifest::{Class, ProcessSpec};
use weft_runtime::Program;
use weft_runtime::process::run_sync;
use weft_runtime::{Node, Process, RuntimeConfig, Snapshot, Tag};

use crate::Ctx;
use crate::modules::stateful;
use crate::stats::{histogram, record};

/// Fuel for one call of the stateful module: `weft_init` writes every word
/// of up to 64 MiB (about 100 million instructions); ticks use far less.
pub const FUEL_PER_CALL: u64 = 400_000_000;

/// Costs measured for one state size, in nanoseconds per sample.
pub struct LocalCosts {
    /// Encoded snapshot size, bytes (what a migration hands over).
    pub snapshot_bytes: usize,
    /// snapshot → encode → decode → restore, in memory.
    pub in_memory: Histogram<u64>,
    /// snapshot → encode → write a file; read it → decode → restore.
    pub via_file: Histogram<u64>,
}

/// The manifest's view of the stateful process holding `bytes` of state.
pub fn spec(ctx: &Ctx, bytes: u64, period: Duration) -> Result<ProcessSpec> {
    let path = ctx
        .scratch
        .write(&format!("stateful-{bytes}.wat"), &stateful(bytes))?;
    let mut spec = ProcessSpec::new("state", &path);
    spec.class = Class::Rt;
    spec.period = Some(period);
    spec.fuel_per_tick = Some(FUEL_PER_CALL);
    spec.memory = bytes;
    spec.capabilities.insert(Capability::Ports);
    spec.outputs = vec!["out".parse().unwrap()];
    Ok(spec)
}

/// A stateful process that has run `weft_init` and a few ticks.
struct Running {
    node: Node,
    spec: Arc<ProcessSpec>,
    program: Arc<Program>,
    process: Process,
}

impl Running {
    fn start(ctx: &Ctx, bytes: u64) -> Result<Running> {
        let node = Node::new(&RuntimeConfig::default().max_processes(4).cache_dir(None))?;
        let spec = Arc::new(spec(ctx, bytes, Duration::from_millis(10))?);
        let program = Arc::new(node.prepare(spec.clone(), &Files)?);
        let mut process = run_sync(Process::instantiate(program.clone(), node.env(&spec, 1)))?;
        run_sync(process.init())?;
        for k in 1..=3 {
            run_sync(process.tick(Tag(k * 10_000_000)))?;
        }
        Ok(Running {
            node,
            spec,
            program,
            process,
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<Process> {
        let env = self.node.env(&self.spec, 1);
        run_sync(Process::restore(self.program.clone(), env, snapshot))
    }

    /// One in-memory round trip; the restored process is returned so the
    /// caller decides when to drop it (outside the timed part).
    fn in_memory(&mut self) -> Result<Process> {
        let bytes = self.process.snapshot()?.encode();
        self.restore(&Snapshot::decode(&bytes)?)
    }

    /// One round trip through `file`.
    fn via_file(&mut self, file: &PathBuf) -> Result<Process> {
        std::fs::write(file, self.process.snapshot()?.encode())?;
        let bytes = std::fs::read(file)?;
        self.restore(&Snapshot::decode(&bytes)?)
    }
}

/// Times `reps` in-memory and `reps` file round trips of `bytes` of state.
pub fn measure(ctx: &Ctx, bytes: u64, reps: usize) -> Result<LocalCosts> {
    let mut running = Running::start(ctx, bytes).context("cannot start the stateful process")?;
    let original = running.process.snapshot()?;
    if original.memory_bytes() != bytes {
        bail!(
            "the stateful process holds {} bytes of memory, not {bytes}",
            original.memory_bytes()
        );
    }
    // Once, untimed: the restored process must hold exactly the same state,
    // or the timings below would not be of a real restore.
    if running.in_memory()?.snapshot()? != original {
        bail!("a restored process differs from the original ({bytes} bytes of state)");
    }
    let file = ctx.scratch.path().join(format!("checkpoint-{bytes}.snap"));
    let (mut in_memory, mut via_file) = (histogram(), histogram());
    for _ in 0..reps {
        let t = Instant::now();
        let restored = running.in_memory()?;
        record(&mut in_memory, t.elapsed().as_nanos() as u64);
        drop(restored);
        let t = Instant::now();
        let restored = running.via_file(&file)?;
        record(&mut via_file, t.elapsed().as_nanos() as u64);
        drop(restored);
    }
    let _ = std::fs::remove_file(&file);
    Ok(LocalCosts {
        snapshot_bytes: original.encode().len(),
        in_memory,
        via_file,
    })
}
