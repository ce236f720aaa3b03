//! Cross-node port latency: weft's remote port path (outbox task, Zenoh
//! put, subscriber, router, inbox) against raw Zenoh puts of the same
//! bytes, ping-ponged between two peer sessions in this process joined
//! over TCP on loopback. Half the round trip is reported.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use weft_client::free_port;
use weft_fabric::codec::PortMessage;
use weft_fabric::{FabricConfig, Keys};
use weft_runtime::router::Router;
use weft_runtime::{Inbox, ProcessId, Roster, Tag};
use weft_types::{AppName, PortHandle};
use zenoh::Wait;
use zenoh::pubsub::Subscriber;

use super::zerr;
use crate::Ctx;
use crate::stats::{Figure, Goal, Stat, Summary, Unit, histogram, record};

const APP: &str = "app";
/// Port handles of the one-input, one-output processes (inputs come first).
const IN: PortHandle = PortHandle(0);
const OUT: PortHandle = PortHandle(1);

/// The two processes of the ping-pong, by id.
const P: ProcessId = ProcessId(0);
const Q: ProcessId = ProcessId(1);

/// How long a round trip may take before it counts as lost.
const ANSWER_WAIT: Duration = Duration::from_millis(200);

/// weft's sending half, as the agent's `Outbox`: the publishing thread hands
/// the encoded message to a channel, one task performs the puts.
fn outbox(session: zenoh::Session) -> mpsc::UnboundedSender<(String, Vec<u8>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((key, payload)) = rx.recv().await {
            if let Err(e) = session.put(&key, payload).await {
                tracing::warn!(key = %key, "cannot publish: {e}");
            }
        }
    });
    tx
}

/// A process's side of the remote delivery path: a router with one route
/// from `sender`'s output into `inbox`, as `RemoteInlet::deliver_to` uses it.
fn inlet(sender: ProcessId) -> (Router, Arc<Inbox>) {
    let roster = Roster::new(["p", "q"].map(|n| n.parse().expect("a name")));
    let inbox = Arc::new(Inbox::new(64, roster));
    let mut router = Router::default();
    router.connect(sender, OUT, inbox.clone(), IN, Duration::ZERO);
    (router, inbox)
}

/// The two peer sessions: `a` listens, `b` connects to it.
struct Peers {
    cluster: String,
    a: zenoh::Session,
    b: zenoh::Session,
}

impl Peers {
    async fn open() -> Result<Peers> {
        let cluster = format!("bench{}", std::process::id());
        let endpoint = format!("tcp/127.0.0.1:{}", free_port()?);
        let a = FabricConfig::default()
            .cluster(&cluster)
            .listen([endpoint.clone()])
            .open()
            .await?;
        let b = FabricConfig::default()
            .cluster(&cluster)
            .connect([endpoint])
            .open()
            .await?;
        Ok(Peers { cluster, a, b })
    }
}

/// weft: p (session a) publishes on port/app/p/o; q (session b) receives
/// it into its inbox and answers on port/app/q/o; p receives the answer
/// into its own inbox.
struct WeftPath {
    ping_key: String,
    out_p: mpsc::UnboundedSender<(String, Vec<u8>)>,
    inbox_p: Arc<Inbox>,
    arrived: mpsc::UnboundedReceiver<()>,
    subscribers: [Subscriber<()>; 2],
}

impl WeftPath {
    async fn open(peers: &Peers) -> Result<WeftPath> {
        let keys = Keys::new(&peers.cluster);
        let app: AppName = APP.parse()?;
        let (p, q, o) = ("p".parse()?, "q".parse()?, "o".parse()?);
        let ping_key = keys.port(&app, &p, &o);
        let pong_key = keys.port(&app, &q, &o);
        let echo = Self::echo_q(&peers.b, &ping_key, pong_key.clone()).await?;
        let (router_p, inbox_p) = inlet(Q);
        let (arrived_tx, arrived) = mpsc::unbounded_channel::<()>();
        let answers = peers
            .a
            .declare_subscriber(&pong_key)
            .callback(move |sample| {
                let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) else {
                    return;
                };
                if m.source != "q" {
                    return;
                }
                router_p.deliver_local(Q, OUT, Tag(m.tag), m.seq, &Bytes::from(m.payload));
                let _ = arrived_tx.send(());
            })
            .await
            .map_err(zerr)?;
        let out_p = outbox(peers.a.clone());
        Ok(WeftPath {
            ping_key,
            out_p,
            inbox_p,
            arrived,
            subscribers: [echo, answers],
        })
    }

    /// q's side on session `b`: each of p's messages delivered into q's
    /// inbox, popped, and answered on `pong_key` through q's outbox.
    async fn echo_q(
        b: &zenoh::Session,
        ping_key: &str,
        pong_key: String,
    ) -> Result<Subscriber<()>> {
        let (router_q, inbox_q) = inlet(P);
        let out_q = outbox(b.clone());
        b.declare_subscriber(ping_key)
            .callback(move |sample| {
                let Ok(m) = PortMessage::decode(&sample.payload().to_bytes()) else {
                    return;
                };
                if m.source != "p" {
                    return;
                }
                router_q.deliver_local(P, OUT, Tag(m.tag), m.seq, &Bytes::from(m.payload));
                if let Some(msg) = inbox_q.pop_next() {
                    let echo =
                        PortMessage::encode_parts(msg.key.tag.0, msg.key.seq, "q", &msg.payload);
                    let _ = out_q.send((pong_key.clone(), echo));
                }
            })
            .await
            .map_err(zerr)
    }

    /// One round trip of message `seq`; `None` if no answer came in time.
    async fn once(&mut self, seq: u64) -> Result<Option<Duration>> {
        let m = PortMessage {
            tag: seq,
            seq,
            source: "p".into(),
            payload: seq.to_le_bytes().to_vec(),
        };
        let t = Instant::now();
        self.out_p
            .send((self.ping_key.clone(), m.encode()))
            .map_err(|_| anyhow!("outbox closed"))?;
        loop {
            match tokio::time::timeout(ANSWER_WAIT, self.arrived.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("subscriber closed"),
                Ok(Some(())) => {}
            }
            if let Some(m) = self.inbox_p.pop_next()
                && m.key.seq == seq
            {
                return Ok(Some(t.elapsed()));
            }
        }
    }
}

/// Raw Zenoh: the same 8 payload bytes put on one key and put back
/// unchanged on another from the subscriber's callback.
struct RawPath {
    a: zenoh::Session,
    ping: String,
    answers: mpsc::UnboundedReceiver<Vec<u8>>,
    subscribers: [Subscriber<()>; 2],
}

impl RawPath {
    async fn open(peers: &Peers) -> Result<RawPath> {
        let cluster = &peers.cluster;
        let ping = format!("weft/{cluster}/raw/ping");
        let pong = format!("weft/{cluster}/raw/pong");
        let b2 = peers.b.clone();
        let echo_key = pong.clone();
        let echo = peers
            .b
            .declare_subscriber(&ping)
            .callback(move |sample| {
                let _ = b2
                    .put(&echo_key, sample.payload().to_bytes().to_vec())
                    .wait();
            })
            .await
            .map_err(zerr)?;
        let (tx, answers) = mpsc::unbounded_channel::<Vec<u8>>();
        let back = peers
            .a
            .declare_subscriber(&pong)
            .callback(move |sample| {
                let _ = tx.send(sample.payload().to_bytes().to_vec());
            })
            .await
            .map_err(zerr)?;
        Ok(RawPath {
            a: peers.a.clone(),
            ping,
            answers,
            subscribers: [back, echo],
        })
    }

    /// One round trip of `seq`'s bytes; `None` if no answer came in time.
    async fn once(&mut self, seq: u64) -> Result<Option<Duration>> {
        let payload = seq.to_le_bytes().to_vec();
        let t = Instant::now();
        self.a
            .put(&self.ping, payload.clone())
            .await
            .map_err(zerr)?;
        loop {
            match tokio::time::timeout(ANSWER_WAIT, self.answers.recv()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("subscriber closed"),
                Ok(Some(got)) if got == payload => return Ok(Some(t.elapsed())),
                Ok(Some(_)) => {}
            }
        }
    }
}

/// Half round trips of both paths, and the round trips that got no answer.
struct HalfTrips {
    weft: Histogram<u64>,
    raw: Histogram<u64>,
    lost: u64,
}

/// `iters` round trips of each path, interleaved, after both are known to
/// deliver and have been warmed up.
async fn ping_pong(weft: &mut WeftPath, raw: &mut RawPath, iters: u64) -> Result<HalfTrips> {
    // Until both sessions see each other's subscriptions, puts go nowhere.
    let start = Instant::now();
    let mut seq = 1u64;
    while weft.once(seq).await?.is_none() || raw.once(seq).await?.is_none() {
        seq += 1;
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the two sessions did not exchange messages within 10 s");
        }
    }
    for _ in 0..500 {
        seq += 1;
        weft.once(seq).await?;
        raw.once(seq).await?;
    }
    let mut trips = HalfTrips {
        weft: histogram(),
        raw: histogram(),
        lost: 0,
    };
    for _ in 0..iters {
        seq += 1;
        match weft.once(seq).await? {
            Some(d) => record(&mut trips.weft, d.as_nanos() as u64 / 2),
            None => trips.lost += 1,
        }
        match raw.once(seq).await? {
            Some(d) => record(&mut trips.raw, d.as_nanos() as u64 / 2),
            None => trips.lost += 1,
        }
    }
    Ok(trips)
}

pub(super) async fn port_latency(ctx: &Ctx) -> Result<Figure> {
    let iters: u64 = if ctx.quick { 2_000 } else { 10_000 };
    let peers = Peers::open().await?;
    let mut weft = WeftPath::open(&peers).await?;
    let mut raw = RawPath::open(&peers).await?;
    let trips = ping_pong(&mut weft, &mut raw, iters).await?;
    // Undeclared while their sessions are still open.
    drop((weft.subscribers, raw.subscribers));
    let _ = peers.a.close().await;
    let _ = peers.b.close().await;
    Ok(latency_figure(iters, &trips))
}

fn latency_figure(iters: u64, trips: &HalfTrips) -> Figure {
    let mut fig = Figure::new(
        "cross-node-port-latency",
        "Cross-node port latency vs raw Zenoh (RTT/2)",
        Unit::Nanoseconds,
        Summary::of(
            "weft: PortMessage encode → outbox task → Zenoh put → subscriber → decode → router → inbox, and back",
            &trips.weft,
        ),
        Summary::of(
            "raw Zenoh: put of the same 8 bytes → subscriber → put back from the callback",
            &trips.raw,
        ),
        Some(Goal::RatioAtMost {
            stat: Stat::Median,
            max: 1.3,
        }),
        "median ≤ 1.3× raw Zenoh",
    )
    .note(format!(
        "{iters} round trips each, interleaved, of an 8-byte payload between two Zenoh peer sessions in this process joined over TCP on \
         loopback (one listens, the other connects; default lease, no multicast). Half the round trip is reported, so no clocks need agree."
    ))
    .note(
        "The weft side is the node's real path without the guest: the sender encodes a fabric PortMessage and hands it to an outbox task that \
         puts on weft/<cluster>/port/app/p/o (as the agent's Outbox does); the receiver's subscriber callback decodes it and delivers it through \
         a Router route into an Inbox (what RemoteInlet::deliver_to does), pops it, and answers the \
         same way. No Wasm process is woken: a process being scheduled costs the same whichever node the message came from (see port-latency).",
    );
    if trips.lost > 0 {
        fig = fig.note(format!(
            "{} round trips got no answer within 200 ms and are not counted",
            trips.lost
        ));
    }
    fig
}
