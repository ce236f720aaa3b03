//! Local port message latency: one process sends on a port, the router
//! delivers into the receiver's inbox and the receiver's `weft_message`
//! handles it, against a tokio mpsc channel carrying the same payload from
//! a native sender function to a native handler.
//!
//! Both paths run on one thread, one message at a time, so the figure is
//! the cost of the delivery path itself; a cross-thread wake-up, which
//! both would pay alike, is not part of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_abi::Capability;
use weft_manifest::{Class, ProcessSpec};
use weft_runtime::ports::Router;
use weft_runtime::process::run_sync;
use weft_runtime::{Node, Process, RuntimeConfig, Tag};

use crate::modules::{RECEIVER, SENDER};
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};
use crate::{Ctx, progress};

fn rt_spec(name: &str, path: &std::path::Path) -> ProcessSpec {
    let mut spec = ProcessSpec::new(name, path);
    spec.class = Class::Rt;
    spec.fuel_per_tick = Some(1_000_000);
    spec.memory = 64 << 10;
    spec
}

pub fn port_latency(ctx: &Ctx) -> Result<Vec<Figure>> {
    let iters: u64 = if ctx.quick { 20_000 } else { 200_000 };
    let node = Node::new(&RuntimeConfig::default().max_processes(16).cache_dir(None))?;

    let mut sender = rt_spec("sender", &ctx.scratch.write("sender.wat", SENDER)?);
    sender.period = Some(Duration::from_millis(1));
    sender.capabilities = BTreeSet::from([Capability::Ports]);
    sender.outputs = vec!["out".into()];
    let mut receiver = rt_spec("receiver", &ctx.scratch.write("receiver.wat", RECEIVER)?);
    receiver.inputs = vec!["in".into()];
    receiver.mailbox = 16;
    let (sender, receiver) = (Arc::new(sender), Arc::new(receiver));

    let send_env = node.env(&sender, 1);
    let recv_env = node.env(&receiver, 1);
    let inbox = recv_env.inbox.clone();
    let mut router = Router::default();
    router.connect(
        "sender",
        sender.port_handle("out").context("no port out")?,
        "receiver",
        inbox.clone(),
        receiver.port_handle("in").context("no port in")?,
        Duration::ZERO,
    );
    let mut tx = run_sync(Process::instantiate(
        Arc::new(node.prepare(sender)?),
        send_env,
    ))?;
    let mut rx = run_sync(Process::instantiate(
        Arc::new(node.prepare(receiver)?),
        recv_env,
    ))?;
    let init = run_sync(tx.init())?;
    tx.publish(&router, Tag::ZERO, init.outputs);
    run_sync(rx.init())?;

    let mut weft_once = |k: u64| -> Result<Duration> {
        let tag = Tag(k * 1_000_000);
        let t = Instant::now();
        let sent = run_sync(tx.tick(tag))?;
        tx.publish(&router, tag, sent.outputs);
        let message = inbox.pop_next().context("the message was not delivered")?;
        run_sync(rx.message(&message))?;
        Ok(t.elapsed())
    };

    // The baseline: a native "tick" producing the same 8 bytes, a bounded
    // tokio mpsc channel, a native handler adding them up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (chan_tx, mut chan_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut counter = 0u64;
    let mut sum = 0u64;
    let mut native_once = || -> Result<Duration> {
        runtime.block_on(async {
            let t = Instant::now();
            counter += 1;
            let payload = std::hint::black_box(counter.to_le_bytes().to_vec());
            chan_tx.send(payload).await.context("channel closed")?;
            let got = chan_rx.recv().await.context("channel closed")?;
            sum = sum.wrapping_add(u64::from_le_bytes(got[..8].try_into()?));
            Ok(t.elapsed())
        })
    };

    for k in 1..=1000 {
        weft_once(k)?;
        native_once()?;
    }
    let (mut weft, mut native) = (histogram(), histogram());
    for k in 0..iters {
        record(&mut weft, weft_once(1001 + k)?.as_nanos() as u64);
        record(&mut native, native_once()?.as_nanos() as u64);
    }
    std::hint::black_box(sum);
    let fig = Figure::new(
        "port-latency",
        "Local port message latency vs tokio mpsc",
        Unit::Nanoseconds,
        Summary::of("weft: sender weft_tick → send → router → inbox → receiver weft_message", &weft),
        Summary::of("tokio mpsc: native sender → bounded channel → native handler", &native),
        Some(Goal::RatioAtMost { stat: Stat::Median, max: 2.0 }),
        "median ≤ 2× tokio mpsc",
    )
    .note(format!(
        "{iters} messages of 8 bytes each, interleaved, one at a time on one thread (rt/fuel processes, zero logical delay). \
         The weft path includes the two Wasm calls (sender tick, receiver alloc + message) and fuel set-up; \
         the baseline has no sandbox crossing at all. A cross-thread variant (receiver woken on another thread) is not measured."
    ));
    progress(&fig);
    Ok(vec![fig])
}
