//! Metering overhead: the same compute kernels on three engines built from
//! the node's configuration with fuel, with epoch interruption and with no
//! metering; fuel and epochs are each reported against unmetered.
//!
//! Two kernels, because the overhead depends on the code: a tight
//! memory loop (whose dependency chain can hide the counter updates) and
//! a call-heavy recursion (where every call pays the check).

use std::time::Instant;

use anyhow::Result;
use wasmtime::{Engine, Instance, Module, Store, TypedFunc};
use weft_runtime::RuntimeConfig;
use weft_runtime::engine::{Metering, engine_config};

use crate::modules::KERNEL;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

/// (export, argument, id, description) of each kernel.
const KERNELS: &[(&str, i32, &str, &str)] = &[
    (
        "kernel",
        16,
        "hash",
        "16 FNV-1a passes over 64 KiB of linear memory (tight loop)",
    ),
    (
        "fib",
        25,
        "fib",
        "recursive fib(25), about 250k calls (call-heavy)",
    ),
];

struct Kernel {
    store: Store<()>,
    func: TypedFunc<i32, i32>,
    arg: i32,
}

impl Kernel {
    fn new(config: &RuntimeConfig, metering: Metering, export: &str, arg: i32) -> Result<Kernel> {
        let engine = Engine::new(&engine_config(config, metering)).map_err(anyhow::Error::from)?;
        let module = Module::new(&engine, KERNEL).map_err(anyhow::Error::from)?;
        let mut store = Store::new(&engine, ());
        match metering {
            Metering::Fuel => store.set_fuel(u64::MAX).map_err(anyhow::Error::from)?,
            // Far in the future: the check runs, the callback never does.
            Metering::Epoch => store.set_epoch_deadline(1 << 40),
            Metering::None => {}
        }
        let instance = Instance::new(&mut store, &module, &[]).map_err(anyhow::Error::from)?;
        let func = instance
            .get_typed_func::<i32, i32>(&mut store, export)
            .map_err(anyhow::Error::from)?;
        Ok(Kernel { store, func, arg })
    }

    fn run(&mut self) -> Result<u64> {
        let t = Instant::now();
        std::hint::black_box(
            self.func
                .call(&mut self.store, self.arg)
                .map_err(anyhow::Error::from)?,
        );
        Ok(t.elapsed().as_nanos() as u64)
    }
}

pub fn metering(ctx: &Ctx) -> Result<Vec<Figure>> {
    let iters = if ctx.quick { 40 } else { 250 };
    let config = RuntimeConfig::default().max_processes(4).cache_dir(None);
    let mut figures = Vec::new();
    for &(export, arg, id, what) in KERNELS {
        let mut ks = [Metering::None, Metering::Fuel, Metering::Epoch]
            .into_iter()
            .map(|m| Kernel::new(&config, m, export, arg))
            .collect::<Result<Vec<_>>>()?;
        let mut hs = [histogram(), histogram(), histogram()];
        for _ in 0..5 {
            for k in ks.iter_mut() {
                k.run()?;
            }
        }
        // Round-robin so drift in machine load hits all three alike.
        for _ in 0..iters {
            for (k, h) in ks.iter_mut().zip(hs.iter_mut()) {
                record(h, k.run()?);
            }
        }
        let none = Summary::of(
            format!("unmetered engine (same config, no fuel, no epochs), {id} kernel"),
            &hs[0],
        );
        let note = format!("{iters} calls each, round-robin; one call = {what}");
        let fuel = Figure::new(
            &format!("fuel-overhead-{id}"),
            &format!("Fuel metering overhead, {id} kernel"),
            Unit::Nanoseconds,
            Summary::of(
                format!("fuel-metered engine (as rt processes), {id} kernel"),
                &hs[1],
            ),
            none.clone(),
            Some(Goal::RatioAtMost {
                stat: Stat::Median,
                max: 1.25,
            }),
            "median ≤ 1.25× unmetered (≤ 25 % overhead)",
        )
        .note(note.clone());
        progress(&fuel);
        let epoch = Figure::new(
            &format!("epoch-overhead-{id}"),
            &format!("Epoch interruption overhead, {id} kernel"),
            Unit::Nanoseconds,
            Summary::of(format!("epoch-interrupted engine (as be processes), {id} kernel"), &hs[2]),
            none,
            Some(Goal::RatioAtMost { stat: Stat::Median, max: 1.10 }),
            "median ≤ 1.10× unmetered (≤ 10 % overhead)",
        )
        .note(note)
        .note(
            "synchronous calls with a far epoch deadline: the epoch checks are measured, the yields a be process takes every 1 ms are not",
        );
        progress(&epoch);
        figures.extend([fuel, epoch]);
    }
    Ok(figures)
}
