//! Node failure figures: how fast the fabric reports a node dead after
//! `kill -9` and after `SIGSTOP`, and how fast the stateful counter it
//! hosted runs again on the other node; against the operating system's own
//! notice of a dead TCP peer and the configured Zenoh lease.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use weft_client::LocalCluster;
use weft_client::cluster::NodeSpec;
use weft_fabric::FabricConfig;
use weft_types::NodeName;

use super::deploy::counter_request;
use super::watch::Event;
use super::{Watch, runs};
use crate::Ctx;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};

/// One TCP connection whose far end is held only by a child process, and
/// the time from `kill -9` of that child until the read here returns: how
/// fast the operating system itself reports a dead peer.
fn tcp_close_detection() -> Result<Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let far = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (mut near, _) = listener.accept()?;
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(far)))
        .stdout(Stdio::null())
        .spawn()
        .context("cannot spawn sleep")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 1];
        let n = near.read(&mut buf);
        let _ = tx.send((Instant::now(), n.map_err(|e| e.to_string())));
    });
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    let _ = child.kill();
    let _ = child.wait();
    let (seen, n) = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("the connection was not closed within 5 s"))?;
    let _ = reader.join();
    match n {
        Ok(0) | Err(_) => Ok(seen.duration_since(t)),
        Ok(_) => bail!("unexpected data on the connection"),
    }
}

/// What the watch saw after one kind of signal, over its rounds: the time
/// until the node's liveliness Delete, and until the counter ran elsewhere.
struct Outage {
    detect: Histogram<u64>,
    recover: Histogram<u64>,
}

impl Outage {
    fn new() -> Outage {
        Outage {
            detect: histogram(),
            recover: histogram(),
        }
    }

    fn record(&mut self, (detected, recovered): (Duration, Duration)) {
        record(&mut self.detect, detected.as_nanos() as u64);
        record(&mut self.recover, recovered.as_nanos() as u64);
    }
}

pub(super) async fn failures(
    ctx: &Ctx,
    cluster: &mut LocalCluster,
    watch: &mut Watch,
) -> Result<Vec<Figure>> {
    let (kills, stops) = if ctx.quick { (3, 2) } else { (10, 4) };
    let mut host = deploy_counter(watch).await?;
    let (mut kill, mut stop, mut tcp) = (Outage::new(), Outage::new(), histogram());
    for rep in 0..kills + stops {
        let is_kill = rep < kills;
        // Let the new incarnation checkpoint before it is lost.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let victim = host;
        let other: NodeName = if victim == "a" { "b" } else { "a" }.parse()?;
        let t = Instant::now();
        cluster.signal_node(
            victim.as_str(),
            if is_kill {
                libc::SIGKILL
            } else {
                libc::SIGSTOP
            },
        )?;
        let seen = until_moved(watch, &victim, &other, t).await?;
        if is_kill {
            kill.record(seen);
            record(&mut tcp, tcp_close_detection()?.as_nanos() as u64);
            cluster.kill_node(victim.as_str());
            cluster.start_node(&NodeSpec::new(victim.as_str()).max_processes(1024))?;
        } else {
            stop.record(seen);
            cluster.signal_node(victim.as_str(), libc::SIGCONT)?;
        }
        until_back(cluster, watch, &victim).await?;
        host = other;
    }
    let mut figures = kill_figures(kills, &kill, &tcp);
    figures.extend(stop_figures(stops, &stop));
    Ok(figures)
}

/// Deploys the counter and returns the node it runs on.
async fn deploy_counter(watch: &mut Watch) -> Result<NodeName> {
    watch.deploy(&counter_request()).await?;
    let mut host: Option<NodeName> = None;
    watch
        .until(
            "the counter running",
            Duration::from_secs(30),
            |w, _, e| match e {
                Event::Status(s) if w.runs(&s.name, "count", "counter") => {
                    host = Some(s.name.clone());
                    true
                }
                _ => false,
            },
        )
        .await?;
    Ok(host.expect("the counter runs somewhere"))
}

/// The time from `signalled` until `victim` was reported dead, and until
/// `other` reported the counter running: (detection, recovery).
async fn until_moved(
    watch: &mut Watch,
    victim: &NodeName,
    other: &NodeName,
    signalled: Instant,
) -> Result<(Duration, Duration)> {
    let (mut dead, mut running) = (None, None);
    watch
        .until(
            &format!("node {victim} reported dead and the counter running on {other}"),
            Duration::from_secs(20),
            |w, at, e| {
                match e {
                    Event::Alive(n, false) if n == victim => dead = dead.or(Some(at)),
                    Event::Status(s) if s.name == *other && w.runs(other, "count", "counter") => {
                        running = running.or(Some(at))
                    }
                    _ => {}
                }
                dead.is_some() && running.is_some()
            },
        )
        .await?;
    let (dead, running) = (dead.unwrap(), running.unwrap());
    Ok((
        dead.duration_since(signalled),
        running.duration_since(signalled),
    ))
}

/// Waits until `victim` is back and running nothing, so each round starts
/// from the same cluster.
async fn until_back(cluster: &LocalCluster, watch: &mut Watch, victim: &NodeName) -> Result<()> {
    watch
        .until(
            &format!("node {victim} back without the counter"),
            Duration::from_secs(30),
            |w, _, _| {
                w.alive.contains(victim)
                    && w.status
                        .get(victim)
                        .is_some_and(|s| !runs(s, "count", "counter"))
            },
        )
        .await
        .with_context(|| {
            format!(
                "node {victim}'s log ends:\n{}",
                cluster.tail(victim.as_str(), 8)
            )
        })?;
    Ok(())
}

const WATCH_NOTE: &str = "Timed from just before the signal to the arrival of the event at a client session connected to the controller \
                          (liveliness Delete of weft/<cluster>/node/<name>/alive, the signal the controller acts on; and the first status \
                          of the other node listing the counter as running).";

fn kill_figures(kills: usize, kill: &Outage, tcp: &Histogram<u64>) -> Vec<Figure> {
    vec![
        Figure::new(
            "node-death-detection-kill",
            "Node death detection after kill -9",
            Unit::Nanoseconds,
            Summary::of("weft: kill -9 of the node → liveliness Delete seen on the fabric", &kill.detect),
            Summary::of("OS: kill -9 of a child holding one end of a loopback TCP connection → read() returns EOF", tcp),
            Some(Goal::ValueAtMost { stat: Stat::P99, max: 50e6 }),
            "p99 ≤ 50 ms",
        )
        .note(format!("{kills} kills of whichever node hosts the counter (2 nodes, the killed one restarted in between). {WATCH_NOTE}"))
        .note("The baseline is the operating system's own notice of the dead process (its socket closed by the kernel), the floor for any detector."),
        Figure::new(
            "recovery-after-kill",
            "Process running elsewhere after kill -9",
            Unit::Nanoseconds,
            Summary::of("weft: kill -9 → the other node's status lists the stateful counter running", &kill.recover),
            Summary::of("weft: kill -9 → liveliness Delete (the detection part of the same runs)", &kill.detect),
            Some(Goal::ValueAtMost { stat: Stat::P99, max: 1e9 }),
            "p99 ≤ 1 s",
        )
        .note(format!(
            "{kills} kills. An rt counter (10 ms period, restart on-failure) restored on the other node from its last checkpoint. \
             Node statuses are published every 250 ms, so up to 250 ms of this is waiting for the status that shows it. The baseline \
             is the detection time of the same runs: the ratio shows how much of recovery is detection. {WATCH_NOTE}"
        )),
    ]
}

fn stop_figures(stops: usize, stop: &Outage) -> Vec<Figure> {
    let lease = FabricConfig::default().lease;
    let lease_ns = lease.as_nanos() as f64;
    vec![
        Figure::new(
            "node-death-detection-stop",
            "Node death detection after SIGSTOP",
            Unit::Nanoseconds,
            Summary::of("weft: SIGSTOP of the node → liveliness Delete seen on the fabric", &stop.detect),
            Summary::from_values(
                format!("the Zenoh lease configured by weft's FabricConfig ({} ms): a silent peer is declared gone after it", lease.as_millis()),
                lease_ns,
                lease_ns,
                lease_ns,
                0,
            ),
            None,
            "none (bounded by the lease)",
        )
        .note(format!(
            "{stops} SIGSTOPs of the node hosting the counter, each followed by SIGCONT and a wait until the node is back and has dropped \
             its stale copy. A frozen process closes no socket, so only the lease can notice it. The baseline is the configured lease itself, \
             not a measurement. {WATCH_NOTE}"
        )),
        Figure::new(
            "recovery-after-stop",
            "Process running elsewhere after SIGSTOP",
            Unit::Nanoseconds,
            Summary::of("weft: SIGSTOP → the other node's status lists the counter running", &stop.recover),
            Summary::of("weft: SIGSTOP → liveliness Delete (the detection part of the same runs)", &stop.detect),
            None,
            "none (context)",
        )
        .note(format!("{stops} SIGSTOPs; see node-death-detection-stop. Status granularity is 250 ms as for kill -9.")),
    ]
}
