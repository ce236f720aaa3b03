//! Local port message latency: one process sends on a port, the router
//! delivers into the receiver's inbox and the receiver's `weft_message`
//! handles it, against a tokio mpsc channel carrying the same payload from
//! a native sender function to a native handler.
//!
//! Both paths run on one thread, one message at a time, so the figure is
//! the cost of the delivery path itself; a cross-thread wake-up, which
//! both would pay alike, is not part of it.
//!
//! A third path, the same two modules driven by bare wasmtime with weft's
//! engine configuration, is the floor any sandboxed delivery pays: two
//! metered entries into Wasm plus one host call. Set against it, the weft
//! figure splits into what wasmtime costs and what weft adds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use wasmtime::{Caller, Engine, Linker, Memory, Module, Store, TypedFunc};
use weft_abi::Capability;
use weft_manifest::module::Files;
use weft_manifest::{Class, ProcessSpec};
use weft_runtime::engine::{Metering, engine_config};
use weft_runtime::process::run_sync;
use weft_runtime::router::Router;
use weft_runtime::{Inbox, Node, Process, ProcessEnv, ProcessId, Roster, RuntimeConfig, Tag};

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

/// The sender and receiver of one app, wired as a node wires them: the
/// sender's output routed into the receiver's inbox.
struct Pair {
    tx: Process,
    rx: Process,
    router: Router,
    inbox: Arc<Inbox>,
}

impl Pair {
    fn wire(ctx: &Ctx, node: &Node) -> Result<Pair> {
        let mut sender = rt_spec("sender", &ctx.scratch.write("sender.wat", SENDER)?);
        sender.period = Some(Duration::from_millis(1));
        sender.capabilities = BTreeSet::from([Capability::Ports]);
        sender.outputs = vec!["out".parse().unwrap()];
        let mut receiver = rt_spec("receiver", &ctx.scratch.write("receiver.wat", RECEIVER)?);
        receiver.inputs = vec!["in".parse().unwrap()];
        receiver.mailbox = 16;
        let (sender, receiver) = (Arc::new(sender), Arc::new(receiver));

        let roster = Roster::new([sender.name.clone(), receiver.name.clone()]);
        let send_env = ProcessEnv {
            id: ProcessId(0),
            ..node.env(&sender, 1)
        };
        let recv_env = ProcessEnv {
            id: ProcessId(1),
            inbox: Arc::new(Inbox::new(receiver.mailbox, roster)),
            ..node.env(&receiver, 1)
        };
        let inbox = recv_env.inbox.clone();
        let mut router = Router::default();
        router.connect(
            ProcessId(0),
            sender.port_handle("out").context("no port out")?,
            inbox.clone(),
            receiver.port_handle("in").context("no port in")?,
            Duration::ZERO,
        );
        let mut tx = run_sync(Process::instantiate(
            Arc::new(node.prepare(sender, &Files)?),
            send_env,
        ))?;
        let mut rx = run_sync(Process::instantiate(
            Arc::new(node.prepare(receiver, &Files)?),
            recv_env,
        ))?;
        let init = run_sync(tx.init())?;
        tx.publish(&router, Tag::ZERO, init.outputs);
        run_sync(rx.init())?;
        Ok(Pair {
            tx,
            rx,
            router,
            inbox,
        })
    }

    /// Tick `k` of the sender, its message delivered and handled.
    fn once(&mut self, k: u64) -> Result<Duration> {
        let tag = Tag(k * 1_000_000);
        let t = Instant::now();
        let sent = run_sync(self.tx.tick(tag))?;
        self.tx.publish(&self.router, tag, sent.outputs);
        let message = self
            .inbox
            .pop_next()
            .context("the message was not delivered")?;
        run_sync(self.rx.message(&message))?;
        Ok(t.elapsed())
    }
}

/// The baseline: a native "tick" producing the same 8 bytes, a bounded
/// tokio mpsc channel, a native handler adding them up.
struct Channel {
    runtime: tokio::runtime::Runtime,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    counter: u64,
    sum: u64,
}

impl Channel {
    fn new() -> Result<Channel> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        Ok(Channel {
            runtime,
            tx,
            rx,
            counter: 0,
            sum: 0,
        })
    }

    fn once(&mut self) -> Result<Duration> {
        let Channel {
            runtime,
            tx,
            rx,
            counter,
            sum,
        } = self;
        runtime.block_on(async {
            let t = Instant::now();
            *counter += 1;
            let payload = std::hint::black_box(counter.to_le_bytes().to_vec());
            tx.send(payload).await.context("channel closed")?;
            let got = rx.recv().await.context("channel closed")?;
            *sum = sum.wrapping_add(u64::from_le_bytes(got[..8].try_into()?));
            Ok(t.elapsed())
        })
    }
}

/// The floor: the sender's tick and the receiver's alloc + message called
/// through bare wasmtime, with weft's rt engine configuration and the
/// least a host can do (fuel set per call, the payload copied out of the
/// sender and into the receiver). No routing, ordering, hash chain or
/// accounting.
struct Bare {
    sender: Store<BareHost>,
    receiver: Store<BareHost>,
    tick: TypedFunc<i64, ()>,
    alloc: TypedFunc<i32, i32>,
    message: TypedFunc<(i32, i32, i32, i64), ()>,
    memory: Memory,
}

const BARE_FUEL: u64 = 1_000_000;

/// A bare host: the sender's memory, looked up once, and what it sent.
#[derive(Default)]
struct BareHost {
    memory: Option<Memory>,
    sent: Vec<Vec<u8>>,
}

impl Bare {
    fn new() -> Result<Bare> {
        let config = engine_config(&RuntimeConfig::default().max_processes(16), Metering::Fuel);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<BareHost>::new(&engine);
        linker.func_wrap("weft", "port", |_: Caller<'_, _>, _: i32, _: i32| 0i32)?;
        linker.func_wrap(
            "weft",
            "send",
            |mut c: Caller<'_, BareHost>, _port: i32, ptr: i32, len: i32| {
                let memory = match c.data().memory {
                    Some(memory) => memory,
                    None => c
                        .get_export("memory")
                        .and_then(|e| e.into_memory())
                        .expect("memory"),
                };
                c.data_mut().memory = Some(memory);
                let (start, end) = (ptr as usize, ptr as usize + len as usize);
                let payload = memory.data(&c)[start..end].to_vec();
                c.data_mut().sent.push(payload);
                0i32
            },
        )?;
        let mut sender = Store::new(&engine, BareHost::default());
        let mut receiver = Store::new(&engine, BareHost::default());
        sender.set_fuel(BARE_FUEL)?;
        receiver.set_fuel(BARE_FUEL)?;
        let tx = linker.instantiate(&mut sender, &Module::new(&engine, SENDER)?)?;
        let rx = linker.instantiate(&mut receiver, &Module::new(&engine, RECEIVER)?)?;
        tx.get_typed_func::<(), ()>(&mut sender, "weft_init")?
            .call(&mut sender, ())?;
        Ok(Bare {
            tick: tx.get_typed_func(&mut sender, "weft_tick")?,
            alloc: rx.get_typed_func(&mut receiver, "weft_alloc")?,
            message: rx.get_typed_func(&mut receiver, "weft_message")?,
            memory: rx
                .get_memory(&mut receiver, "memory")
                .context("no memory")?,
            sender,
            receiver,
        })
    }

    fn once(&mut self, k: u64) -> Result<Duration> {
        let tag = (k * 1_000_000) as i64;
        let t = Instant::now();
        self.sender.set_fuel(BARE_FUEL)?;
        self.tick.call(&mut self.sender, tag)?;
        let payload = self.sender.data_mut().sent.pop().context("nothing sent")?;
        self.receiver.set_fuel(BARE_FUEL)?;
        let len = payload.len() as i32;
        let ptr = self.alloc.call(&mut self.receiver, len)?;
        self.memory
            .write(&mut self.receiver, ptr as usize, &payload)?;
        self.message.call(&mut self.receiver, (0, ptr, len, tag))?;
        Ok(t.elapsed())
    }
}

pub fn port_latency(ctx: &Ctx) -> Result<Vec<Figure>> {
    let iters: u64 = if ctx.quick { 20_000 } else { 200_000 };
    let node = Node::new(&RuntimeConfig::default().max_processes(16).cache_dir(None))?;
    let mut pair = Pair::wire(ctx, &node)?;
    let mut channel = Channel::new()?;
    let mut bare = Bare::new()?;
    for k in 1..=1000 {
        pair.once(k)?;
        channel.once()?;
        bare.once(k)?;
    }
    let (mut weft, mut native, mut floor) = (histogram(), histogram(), histogram());
    for k in 0..iters {
        record(&mut weft, pair.once(1001 + k)?.as_nanos() as u64);
        record(&mut native, channel.once()?.as_nanos() as u64);
        record(&mut floor, bare.once(1001 + k)?.as_nanos() as u64);
    }
    std::hint::black_box(channel.sum);
    let figs = vec![
        latency_figure(iters, &weft, &native, &floor),
        floor_figure(iters, &weft, &floor),
    ];
    figs.iter().for_each(progress);
    Ok(figs)
}

fn latency_figure(
    iters: u64,
    weft: &Histogram<u64>,
    native: &Histogram<u64>,
    floor: &Histogram<u64>,
) -> Figure {
    let floor_ratio = floor.value_at_quantile(0.5) as f64 / native.value_at_quantile(0.5) as f64;
    Figure::new(
        "port-latency",
        "Local port message latency vs tokio mpsc",
        Unit::Nanoseconds,
        Summary::of("weft: sender weft_tick → send → router → inbox → receiver weft_message", weft),
        Summary::of("tokio mpsc: native sender → bounded channel → native handler", native),
        Some(Goal::RatioAtMost { stat: Stat::Median, max: 2.0 }),
        "median ≤ 2× tokio mpsc",
    )
    .note(format!(
        "{iters} messages of 8 bytes each, interleaved, one at a time on one thread (rt/fuel processes, zero logical delay). \
         The weft path includes the two Wasm calls (sender tick, receiver alloc + message) and fuel set-up; \
         the baseline has no sandbox crossing at all. A cross-thread variant (receiver woken on another thread) is not measured."
    ))
    .note(format!(
        "The same two modules driven by bare wasmtime (`port-latency-floor`) took {floor_ratio:.2}× tokio mpsc at the median in this run: \
         that much of the ratio is the sandbox crossing itself, before any weft code."
    ))
}

fn floor_figure(iters: u64, weft: &Histogram<u64>, floor: &Histogram<u64>) -> Figure {
    Figure::new(
        "port-latency-floor",
        "Local port message latency vs bare wasmtime",
        Unit::Nanoseconds,
        Summary::of("weft: sender weft_tick → send → router → inbox → receiver weft_message", weft),
        Summary::of("bare wasmtime: the same modules and calls, payload handed over in a Vec", floor),
        None,
        "none (context: what weft adds to the sandbox crossing)",
    )
    .note(format!(
        "{iters} messages, interleaved with the figure above. Both use weft's rt engine configuration (fuel). \
         What weft adds: message ordering and the inbox, the router, the output hash chain, fuel and fault accounting per call."
    ))
}
