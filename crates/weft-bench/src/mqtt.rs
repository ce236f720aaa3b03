//! MQTT input latency, in the devices group: a publisher sends its send
//! instant through Debian's mosquitto (started here, on loopback, killed
//! by PID at the end) to a node's MQTT device and, in the same run, to a
//! raw rumqttc subscriber of the same topic.
//!
//! * **Visible at a tag**: publish → the first 1 kHz tag whose read sees
//!   the message, against the raw subscriber's publish → receive. The
//!   difference is the bridge plus the wait for the next tag (≤ 1 ms).
//! * **Into the latch**: publish → the sample's arrival (the read's
//!   release minus its age), against the same raw figure: what the bridge
//!   adds to the client it is built on.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use weft_abi::sample::{Quality, Sample};
use weft_devices::{NodeConfig, NodeDevices};
use weft_runtime::device::{Device, ReadAt};
use weft_runtime::rt;
use weft_types::Tag;

use crate::Ctx;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};

const TOPIC: &str = "bench/sent";
/// One message every this often: two tags apart, so each is seen alone.
const EVERY: Duration = Duration::from_millis(2);

pub fn figures(ctx: &Ctx) -> Vec<Figure> {
    match measure(ctx) {
        Ok(figures) => figures,
        Err(e) => ["mqtt-visible-at-tag", "mqtt-into-latch"]
            .into_iter()
            .map(|id| {
                Figure::skipped(
                    id,
                    "MQTT input latency",
                    Unit::Nanoseconds,
                    "",
                    format!("{e:#}"),
                )
            })
            .collect(),
    }
}

fn measure(ctx: &Ctx) -> Result<Vec<Figure>> {
    let port = weft_client::free_port()?;
    let _broker = Mosquitto::start(ctx.scratch.path(), port)?;
    let config = NodeConfig::parse(&node_config(port), Path::new("bench-mqtt.node.toml"))?;
    let devices = NodeDevices::start(&config)?;
    let device = devices
        .devices()
        .get("bus")
        .context("no bus device")?
        .clone();
    let messages = if ctx.quick { 500 } else { 2_500 };
    eprintln!("[bench]   devices: {messages} MQTT messages through mosquitto");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(until_subscribed(port, &*device))?;
    let raw = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let subscriber = runtime.block_on(raw_subscriber(port, raw.clone()))?;
    let done = Arc::new(AtomicBool::new(false));
    let publisher = runtime.spawn(publish(port, messages, done.clone()));
    let reading = Instant::now();
    let (visible, arrival) = read_at_tags(&*device, &done)?;
    let reading = reading.elapsed();
    runtime.block_on(publisher)??;
    subscriber.abort();
    let raw = raw.lock().unwrap().clone();
    if raw.is_empty() || visible.is_empty() {
        bail!(
            "no message arrived (raw {}, device {}): {:?}",
            raw.len(),
            visible.len(),
            devices.reports()
        );
    }
    let raw_summary = Summary::of_values("raw rumqttc subscriber, publish → receive", &raw);
    let seen = visible.len();
    let at_tag = Figure::new(
        "mqtt-visible-at-tag",
        "MQTT input: publish → first 1 kHz tag that reads it",
        Unit::Nanoseconds,
        Summary::of_values("weft device, publish → visible at a tag", &visible),
        raw_summary.clone(),
        None,
        "for information: the bridge plus the wait for the next tag (≤ 1 ms)",
    )
    .note(format!(
        "{seen} of {messages} messages seen at a tag over {reading:?} (the device received {}): \
         a sample is the latest value, so messages arriving within one tag are seen as their last",
        devices.reports()[0].scans
    ));
    let latch = Figure::new(
        "mqtt-into-latch",
        "MQTT input: publish → in the device's latch",
        Unit::Nanoseconds,
        Summary::of_values("weft device, publish → latched", &arrival),
        raw_summary,
        Some(Goal::RatioAtMost {
            stat: Stat::Median,
            max: 1.5,
        }),
        "median ≤ 1.5× the raw client's",
    );
    Ok(vec![at_tag, latch])
}

fn node_config(port: u16) -> String {
    format!(
        r#"[devices.bus]
kind = "mqtt"
broker = "127.0.0.1:{port}"
[[devices.bus.read]]
name = "sent"
topic = "{TOPIC}"
format = "f64-le"
qos = 0
"#
    )
}

/// Subscribes and records publish → receive for each message.
async fn raw_subscriber(
    port: u16,
    latencies: Arc<Mutex<Vec<u64>>>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (client, mut events) = AsyncClient::new(options("weft-bench-raw", port), 64);
    client.subscribe(TOPIC, QoS::AtMostOnce).await?;
    // Subscribed once the broker says so: messages before would be lost.
    loop {
        match events.poll().await? {
            Event::Incoming(Packet::SubAck(_)) => break,
            _ => continue,
        }
    }
    Ok(tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let now = rt::monotonic_ns();
                if let Ok(bytes) = <[u8; 8]>::try_from(&p.payload[..]) {
                    let sent = f64::from_le_bytes(bytes) as u64;
                    latencies.lock().unwrap().push(now.saturating_sub(sent));
                }
            }
        }
    }))
}

/// Publishes until the device has seen a message: it has subscribed.
async fn until_subscribed(port: u16, device: &dyn Device) -> Result<()> {
    let (client, mut events) = AsyncClient::new(options("weft-bench-warm-up", port), 64);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let until = Instant::now() + Duration::from_secs(10);
    let seen = || {
        let at = ReadAt {
            tag: Tag::ZERO,
            release_ns: rt::monotonic_ns(),
        };
        Sample::decode(&device.read(at)).is_ok_and(|s| s.quality == Quality::Good)
    };
    while !seen() {
        if Instant::now() > until {
            bail!("the MQTT device never saw a message");
        }
        client
            .publish(TOPIC, QoS::AtMostOnce, false, 0f64.to_le_bytes().to_vec())
            .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    poll.abort();
    Ok(())
}

/// Publishes `messages` send instants (monotonic ns, as f64: exact below
/// 2^53 ns, 104 days of uptime).
async fn publish(port: u16, messages: usize, done: Arc<AtomicBool>) -> Result<()> {
    let (client, mut events) = AsyncClient::new(options("weft-bench-pub", port), 64);
    let poll = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut tick = tokio::time::interval(EVERY);
    // A late tick is not made up with a burst: two messages in one tag
    // would hide the first.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..messages {
        tick.tick().await;
        let sent = rt::monotonic_ns() as f64;
        client
            .publish(TOPIC, QoS::AtMostOnce, false, sent.to_le_bytes().to_vec())
            .await?;
    }
    // Let the last ones through before the reader stops.
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.store(true, Ordering::SeqCst);
    poll.abort();
    Ok(())
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options
}

/// Reads the device at 1 kHz releases (on an rt-scheduled thread, as an
/// rt process does) until the publisher is `done`; for each new message:
/// publish → visible at the tag, and publish → latched.
fn read_at_tags(device: &dyn Device, done: &AtomicBool) -> Result<(Vec<u64>, Vec<u64>)> {
    let _rt = rt::RtThread::current(rt::RT_PRIORITY, rt::rt_cpu());
    let (mut visible, mut arrival) = (Vec::new(), Vec::new());
    let mut last_seq = None;
    let mut release = rt::monotonic_ns();
    while !done.load(Ordering::SeqCst) {
        release += 1_000_000;
        rt::sleep_until_ns(release);
        let sample = Sample::decode(&device.read(ReadAt {
            tag: Tag::ZERO,
            release_ns: release,
        }))
        .map_err(anyhow::Error::msg)?;
        if sample.quality != Quality::Good || last_seq == Some(sample.seq) {
            continue;
        }
        last_seq = Some(sample.seq);
        let sent = sample.values[0] as u64;
        if sent == 0 {
            continue; // the warm-up's
        }
        visible.push(release.saturating_sub(sent));
        arrival.push((release - sample.age_ns).saturating_sub(sent));
    }
    Ok((visible, arrival))
}

/// mosquitto on 127.0.0.1, killed by PID on drop.
struct Mosquitto(Child);

impl Mosquitto {
    fn start(dir: &Path, port: u16) -> Result<Mosquitto> {
        let conf = dir.join("bench-mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )?;
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("mosquitto is not installed (Debian package mosquitto)")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {binary}"))?;
        let broker = Mosquitto(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > until {
                bail!("mosquitto did not listen on {port}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(broker)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
