//! The devices group: a Modbus TCP device of 64 holding registers and 16
//! coils, served on loopback by an in-process tokio-modbus server, reached
//! through a node's device link (`weft-devices`), against a raw
//! tokio-modbus client doing the same request/response pair in a loop.
//!
//! * **`device_read`**: what the host call costs on the process's thread
//!   (the latch lookup and copy of a 64-value sample), read once a
//!   millisecond as a 1 kHz process does, against one raw round trip.
//! * **Sample age**: how old the values a process reads are (the header's
//!   age: the read's instant minus the scan's arrival), against the same
//!   raw round trip: the age is what a latched image costs in freshness.
//! * **A 1 kHz rt process on a real device**: its wake-up jitter when each
//!   tick reads the 64 registers and writes the 16 coils, against the same
//!   process without device calls, run after it; and its deadline misses.
//! * **MQTT input latency** (`mqtt`): through mosquitto, against a raw
//!   rumqttc subscriber.

use std::future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::net::TcpListener;
use tokio_modbus::client::{Reader, Writer};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, Slave};
use weft_abi::sample::Sample;
use weft_devices::{NodeConfig, NodeDevices};
use weft_manifest::AppManifest;
use weft_runtime::device::ReadAt;
use weft_runtime::{Node, RuntimeConfig, rt};
use weft_types::Tag;

use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};
use crate::{Ctx, progress};

const REGISTERS: u16 = 64;
const COILS: u16 = 16;

pub fn devices(ctx: &Ctx) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = runtime.block_on(serve_bank())?;
    let rounds = if ctx.quick { 1_000 } else { 5_000 };
    eprintln!("[bench]   devices: {rounds} raw tokio-modbus round trips");
    let raw = runtime.block_on(raw_round_trips(&addr, rounds))?;
    let config = NodeConfig::parse(&node_config(&addr), Path::new("bench.node.toml"))?;
    let devices = NodeDevices::start(&config)?;
    eprintln!("[bench]   devices: {rounds} reads at 1 kHz through the device link");
    let (scans, started) = (devices.reports()[0].scans, Instant::now());
    let (read_ns, ages) = latched_reads(&devices, rounds)?;
    let scan_period = started.elapsed() / (devices.reports()[0].scans - scans).max(1) as u32;
    let raw_summary = |what: &str| Summary::of_values(format!("raw tokio-modbus {what}"), &raw);
    let read = Figure::new(
        "device-read-64",
        "device_read of a 64-register Modbus device (host side, latched)",
        Unit::Nanoseconds,
        Summary::of_values("device_read on an rt thread, 1 kHz", &read_ns),
        raw_summary("read 64 registers + write 16 coils"),
        Some(Goal::ValueAtMost {
            stat: Stat::P99,
            max: 20_000.0,
        }),
        "p99 ≤ 20 µs",
    );
    let age = Figure::new(
        "device-sample-age",
        "Age of the values a 1 kHz reader gets (scan every 1 ms)",
        Unit::Nanoseconds,
        Summary::of_values("sample age at read", &ages),
        raw_summary("round trip"),
        None,
        "for information: the age is at most a scan period plus a round trip",
    )
    .note(format!(
        "the link scanned every {scan_period:?} on average (configured: 1 ms)"
    ));
    let rt = rt_on_device(ctx, &devices, &runtime)?;
    let mut figures = vec![read, age, rt];
    figures.extend(crate::mqtt::figures(ctx));
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

/// A device of 64 holding registers and 16 coils.
#[derive(Clone, Default)]
struct Bank {
    holding: Arc<Mutex<Vec<u16>>>,
    coils: Arc<Mutex<Vec<bool>>>,
}

impl Service for Bank {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Request<'static>) -> Self::Future {
        let fits = |addr: u16, n: usize, len: u16| usize::from(addr) + n <= usize::from(len);
        future::ready(match request {
            Request::ReadHoldingRegisters(addr, n) if fits(addr, n.into(), REGISTERS) => {
                let regs = self.holding.lock().unwrap();
                let from = usize::from(addr);
                Ok(Response::ReadHoldingRegisters(
                    regs[from..from + usize::from(n)].to_vec(),
                ))
            }
            Request::WriteMultipleCoils(addr, bits) if fits(addr, bits.len(), COILS) => {
                let mut coils = self.coils.lock().unwrap();
                let from = usize::from(addr);
                coils[from..from + bits.len()].copy_from_slice(&bits);
                Ok(Response::WriteMultipleCoils(addr, bits.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalDataAddress),
        })
    }
}

/// Serves a [`Bank`] on a free loopback port.
async fn serve_bank() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let bank = Bank {
        holding: Arc::new(Mutex::new((0..REGISTERS).collect())),
        coils: Arc::new(Mutex::new(vec![false; COILS.into()])),
    };
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream: tokio::net::TcpStream, addr| {
            let _ = stream.set_nodelay(true);
            let bank = bank.clone();
            future::ready(accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(bank.clone()))
            }))
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(addr)
}

/// `rounds` of read-64-registers + write-16-coils, each timed.
async fn raw_round_trips(addr: &str, rounds: usize) -> Result<Vec<u64>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut client = tokio_modbus::client::tcp::attach_slave(stream, Slave(1));
    let coils = vec![true; COILS.into()];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        client.read_holding_registers(0, REGISTERS).await??;
        client.write_multiple_coils(0, &coils).await??;
        times.push(start.elapsed().as_nanos() as u64);
    }
    Ok(times)
}

fn node_config(addr: &str) -> String {
    let mut text = format!(
        "[devices.bank]\nkind = \"modbus-tcp\"\naddress = \"{addr}\"\nscan = \"1ms\"\ntimeout = \"100ms\"\n"
    );
    for i in 0..REGISTERS {
        text +=
            &format!("[[devices.bank.read]]\nname = \"r{i}\"\ntable = \"holding\"\naddr = {i}\n");
    }
    for i in 0..COILS {
        text += &format!("[[devices.bank.write]]\nname = \"c{i}\"\ntable = \"coil\"\naddr = {i}\n");
    }
    text
}

/// Reads the device once a millisecond, as the first reader of each tag
/// does, on a thread scheduled as an rt process's is (`SCHED_FIFO` on the
/// rt CPU where permitted, released on absolute times): the time of each
/// read, and the age of what it got.
fn latched_reads(devices: &NodeDevices, rounds: usize) -> Result<(Vec<u64>, Vec<u64>)> {
    let device = devices
        .devices()
        .get("bank")
        .context("no bank device")?
        .clone();
    wait_good(devices, &device)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let _rt = rt::RtThread::current(rt::RT_PRIORITY, rt::rt_cpu());
            let (mut times, mut ages) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
            let mut release = rt::monotonic_ns();
            for _ in 0..rounds {
                release += 1_000_000;
                rt::sleep_until_ns(release);
                let start = Instant::now();
                let bytes = device.read(ReadAt {
                    tag: Tag::ZERO,
                    release_ns: release,
                });
                times.push(start.elapsed().as_nanos() as u64);
                let sample = Sample::decode(&bytes).map_err(anyhow::Error::msg)?;
                if sample.values.len() != usize::from(REGISTERS) {
                    bail!(
                        "a sample of {} values, not {REGISTERS}",
                        sample.values.len()
                    );
                }
                ages.push(sample.age_ns);
            }
            Ok((times, ages))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?
    })
}

/// Waits until the device reads `good`.
fn wait_good(devices: &NodeDevices, device: &Arc<dyn weft_runtime::device::Device>) -> Result<()> {
    let connected = Instant::now() + Duration::from_secs(10);
    loop {
        let at = ReadAt {
            tag: Tag::ZERO,
            release_ns: rt::monotonic_ns(),
        };
        let sample = Sample::decode(&device.read(at)).map_err(anyhow::Error::msg)?;
        if sample.quality == weft_abi::sample::Quality::Good {
            return Ok(());
        }
        if Instant::now() > connected {
            bail!("the bench device never read good: {:?}", devices.reports());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads the 64 registers and writes the 16 coils every tick.
const ON_DEVICE: &str = r#"(module
  (import "weft" "device_open" (func $open (param i32 i32) (result i32)))
  (import "weft" "device_read" (func $read (param i32 i32 i32) (result i32)))
  (import "weft" "device_write" (func $write (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "bank")
  (global $dev (mut i32) (i32.const -1))
  (func (export "weft_init") (global.set $dev (call $open (i32.const 0) (i32.const 4))))
  (func (export "weft_tick") (param i64)
    (drop (call $read (global.get $dev) (i32.const 1024) (i32.const 1024)))
    (drop (call $write (global.get $dev) (i32.const 4096) (i32.const 128)))))
"#;

/// The rt process on the device, then the same without device calls.
fn rt_on_device(
    ctx: &Ctx,
    devices: &NodeDevices,
    runtime: &tokio::runtime::Runtime,
) -> Result<Figure> {
    let secs = if ctx.quick { 5 } else { 60 };
    ctx.scratch.write("on-device.wat", ON_DEVICE)?;
    ctx.scratch.write("tick.wat", TINY)?;
    let config = RuntimeConfig::default().max_processes(4).cache_dir(None);
    let node = Node::with_devices(&config, devices.devices())?;
    let run = |module: &str| -> Result<weft_runtime::ProcessReport> {
        let toml = format!(
            "name = \"bench-devices\"\n[[process]]\nname = \"rt\"\nmodule = \"{module}\"\nclass = \"rt\"\n\
             period = \"1ms\"\nfuel_per_tick = 100000\nmemory = \"64KiB\"\ncapabilities = [\"device:bank\"]\n"
        );
        let mut app = AppManifest::parse(&toml, "bench-devices.toml")?;
        app.resolve_paths(ctx.scratch.path());
        let running = node.start(&app, runtime.handle())?;
        std::thread::sleep(Duration::from_secs(secs));
        let report = runtime.block_on(running.stop());
        let rt = report
            .processes
            .into_iter()
            .next()
            .context("no rt process")?;
        if rt.faults > 0 {
            bail!("the rt process faulted: {:?}", rt.last_fault);
        }
        Ok(rt)
    };
    eprintln!("[bench]   devices: a 1 kHz rt process on the device for {secs} s, then without it");
    let writes_before = devices.reports()[0].writes;
    let on = run("on-device.wat")?;
    let writes = devices.reports()[0].writes - writes_before;
    let off = run("tick.wat")?;
    let summary = |label: &str, p: &weft_runtime::ProcessReport| {
        let j = &p.jitter;
        Summary::from_values(
            label,
            j.p50_us * 1e3,
            j.p99_us * 1e3,
            j.max_us * 1e3,
            j.samples,
        )
    };
    Ok(Figure::new(
        "device-rt-jitter",
        "Wake-up jitter of a 1 kHz rt process reading 64 registers and writing 16 coils per tick",
        Unit::Nanoseconds,
        summary("rt process on the Modbus device", &on),
        summary("the same process without device calls", &off),
        Some(Goal::RatioAtMost {
            stat: Stat::P99,
            max: 1.1,
        }),
        "p99 ≤ 1.1× without device calls",
    )
    .note(format!(
        "on the device: {} ticks, {} deadline misses, {writes} wire writes; without: {} ticks, {} deadline misses",
        on.ticks, on.deadline_misses, off.ticks, off.deadline_misses
    )))
}
