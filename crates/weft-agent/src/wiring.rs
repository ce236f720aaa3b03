//! What crosses the fabric on behalf of running processes: outputs whose
//! receivers are elsewhere, messages from remote senders, checkpoints and
//! guest log lines.
//!
//! Processes publish from rt threads that must never wait on the network
//! itself, so every outgoing item goes through a queue to a thread that
//! owns the Zenoh calls, and each kind of item has its own lane and its own
//! Zenoh priority, so a port message never waits behind a checkpoint:
//!
//! * port messages: a bounded queue ([`PORT_QUEUE_BYTES`]). When a link is
//!   slower than its senders, the queue fills and a sender waits for room:
//!   a slow link slows the processes that use it (their deadline misses
//!   show it) instead of memory growing without end, and nothing is
//!   dropped, so receivers still see every message once. That holds while
//!   the link is up: a peer that reads nothing for longer than the fabric
//!   lease (a frozen node) has its link closed by Zenoh, and what Zenoh
//!   held in flight on that link is lost with it.
//! * log lines: a bounded queue ([`LOG_QUEUE_BYTES`]); when it is full a
//!   line is dropped and counted, never waited for.
//! * checkpoints: applied to the node's copies and sent to each process's
//!   checkpoint peer at background priority by a task of their own
//!   (`checkpoints`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use weft_fabric::Keys;

use crate::checkpoints::Checkpoints;
use weft_fabric::codec::PortMessage;
use weft_manifest::{AppManifest, PortRef};
use weft_runtime::router::{RemotePort, RemoteSink};
use weft_runtime::{CheckpointSink, Checkpointing, InletPort, LogSink, RemoteInlet, Snapshot, Tag};
use weft_types::{AppName, NodeName, PortName, ProcessName, ProcessRef};
use zenoh::Wait;
use zenoh::qos::{CongestionControl, Priority};

/// Bytes of port messages queued for the fabric at most; then senders wait.
pub(crate) const PORT_QUEUE_BYTES: usize = 32 << 20;
/// Bytes of log lines queued at most; then lines are dropped.
pub(crate) const LOG_QUEUE_BYTES: usize = 1 << 20;

/// One small item for the fabric (a port message or a log line).
struct Put {
    key: Arc<str>,
    payload: Vec<u8>,
}

/// A bounded queue of puts, with one thread performing them at its
/// priority. The bound is in bytes; one item is always admitted, however
/// large, so a message over the budget still goes (alone).
struct Lane {
    state: Mutex<LaneState>,
    changed: Condvar,
    budget: usize,
    /// Items refused by `try_push`.
    dropped: AtomicU64,
    /// What is queued, mirrored from `state` for readers (a metrics
    /// scrape) that must not take the lock senders take.
    queued_items: AtomicU64,
    queued_bytes: AtomicU64,
}

#[derive(Default)]
struct LaneState {
    items: VecDeque<Put>,
    bytes: usize,
    closed: bool,
}

impl Lane {
    fn start(
        name: &str,
        session: zenoh::Session,
        budget: usize,
        priority: Priority,
        congestion: CongestionControl,
    ) -> Arc<Lane> {
        let lane = Arc::new(Lane {
            state: Mutex::default(),
            changed: Condvar::new(),
            budget,
            dropped: AtomicU64::new(0),
            queued_items: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
        });
        let worker = lane.clone();
        std::thread::Builder::new()
            .name(format!("weft-out-{name}"))
            .spawn(move || {
                while let Some(put) = worker.pop() {
                    let sent = session
                        .put(&*put.key, put.payload)
                        .priority(priority)
                        .congestion_control(congestion)
                        .wait();
                    if let Err(e) = sent {
                        tracing::warn!(key = %put.key, "cannot publish: {e}");
                    }
                }
            })
            .expect("spawn an outbox thread");
        lane
    }

    fn fits(&self, state: &LaneState, len: usize) -> bool {
        state.items.is_empty() || state.bytes + len <= self.budget
    }

    /// Queues `put`, waiting for room.
    fn push(&self, put: Put) {
        let mut state = self.state.lock().unwrap();
        while !state.closed && !self.fits(&state, put.payload.len()) {
            state = self.changed.wait(state).unwrap();
        }
        self.admit(&mut state, put);
    }

    /// Queues `put` if there is room; drops (and counts) it if not.
    fn try_push(&self, put: Put) -> bool {
        let mut state = self.state.lock().unwrap();
        if !self.fits(&state, put.payload.len()) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, key = %put.key, "the link is congested: items dropped so far");
            }
            return false;
        }
        self.admit(&mut state, put);
        true
    }

    fn admit(&self, state: &mut LaneState, put: Put) {
        if state.closed {
            return;
        }
        state.bytes += put.payload.len();
        state.items.push_back(put);
        self.mirror(state);
        self.changed.notify_all();
    }

    fn mirror(&self, state: &LaneState) {
        self.queued_items
            .store(state.items.len() as u64, Ordering::Relaxed);
        self.queued_bytes
            .store(state.bytes as u64, Ordering::Relaxed);
    }

    fn depth(&self) -> QueueDepth {
        QueueDepth {
            items: self.queued_items.load(Ordering::Relaxed),
            bytes: self.queued_bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The next item, waiting for one; `None` once closed.
    fn pop(&self) -> Option<Put> {
        let mut state = self.state.lock().unwrap();
        loop {
            if let Some(put) = state.items.pop_front() {
                state.bytes -= put.payload.len();
                self.mirror(&state);
                self.changed.notify_all();
                return Some(put);
            }
            if state.closed {
                return None;
            }
            state = self.changed.wait(state).unwrap();
        }
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_all();
    }
}

/// What one lane holds, and what it dropped since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueDepth {
    pub items: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// The lanes of one node; closing them (when the last [`Outbox`] goes)
/// ends their threads.
struct Lanes {
    ports: Arc<Lane>,
    logs: Arc<Lane>,
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.ports.close();
        self.logs.close();
    }
}

/// The sending half every sink of a node shares.
#[derive(Clone)]
pub(crate) struct Outbox {
    lanes: Arc<Lanes>,
    checkpoints: Arc<Checkpoints>,
    keys: Keys,
}

impl Outbox {
    /// Starts the threads and the tasks that perform the puts, and this
    /// node's checkpoint store.
    pub(crate) fn start(session: zenoh::Session, keys: Keys, node: NodeName) -> Outbox {
        let lanes = Lanes {
            ports: Lane::start(
                "ports",
                session.clone(),
                PORT_QUEUE_BYTES,
                Priority::DataHigh,
                CongestionControl::Block,
            ),
            // Log lines may be dropped on a congested link; messages may not.
            logs: Lane::start(
                "logs",
                session.clone(),
                LOG_QUEUE_BYTES,
                Priority::Data,
                CongestionControl::Drop,
            ),
        };
        let checkpoints = Checkpoints::start(session, keys.clone(), node);
        Outbox {
            lanes: Arc::new(lanes),
            checkpoints,
            keys,
        }
    }

    /// What each lane to the fabric holds now: `ports`, then `logs`.
    pub(crate) fn depths(&self) -> [(&'static str, QueueDepth); 2] {
        [
            ("ports", self.lanes.ports.depth()),
            ("logs", self.lanes.logs.depth()),
        ]
    }

    pub(crate) fn remote_sink(&self, app: &AppName) -> Arc<dyn RemoteSink> {
        Arc::new(PortSink {
            outbox: self.clone(),
            app: app.clone(),
        })
    }

    /// Queues the next checkpoint link of `who`.
    pub(crate) fn checkpoint(&self, who: &ProcessRef, snapshot: Snapshot) {
        self.checkpoints.push(who.clone(), snapshot);
    }

    /// This node's checkpoint store.
    pub(crate) fn checkpoints(&self) -> &Checkpoints {
        &self.checkpoints
    }

    pub(crate) fn checkpointing(&self, app: &AppName, every: std::time::Duration) -> Checkpointing {
        let outbox = self.clone();
        let app = app.clone();
        let sink: CheckpointSink =
            Arc::new(move |process: &ProcessName, _: Tag, snapshot: Snapshot| {
                outbox.checkpoint(&ProcessRef::new(app.clone(), process.clone()), snapshot);
            });
        Checkpointing { every, sink }
    }

    pub(crate) fn log_sink(&self, app: &AppName) -> LogSink {
        let outbox = self.clone();
        let app = app.clone();
        Arc::new(
            move |process: &ProcessName, level: i32, tag: Tag, text: &str| {
                let level = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .get(level as usize)
                    .unwrap_or(&"TRACE");
                let line = format!("{tag} {level} {text}");
                outbox.lanes.logs.try_push(Put {
                    key: outbox.keys.log(&app, process).into(),
                    payload: line.into_bytes(),
                });
            },
        )
    }
}

/// Hands an app's outputs with receivers elsewhere to the port lane.
struct PortSink {
    outbox: Outbox,
    app: AppName,
}

impl RemoteSink for PortSink {
    fn port(&self, sender: &ProcessName, port: &PortName) -> Arc<dyn RemotePort> {
        Arc::new(PortPublisher {
            lane: self.outbox.lanes.ports.clone(),
            key: self.outbox.keys.port(&self.app, sender, port).into(),
            source: sender.to_string(),
        })
    }
}

/// One output port's way onto the fabric: its key, made once.
struct PortPublisher {
    lane: Arc<Lane>,
    key: Arc<str>,
    source: String,
}

impl RemotePort for PortPublisher {
    fn publish(&self, tag: Tag, seq: u64, payload: &[u8]) {
        self.lane.push(Put {
            key: self.key.clone(),
            payload: PortMessage::encode_parts(tag.0, seq, &self.source, payload),
        });
    }
}

/// Where messages from remote senders go. Subscriptions are made before
/// the app's share starts (so a standby's starting checkpoint and the
/// messages after it leave no gap): until [`PortInlet::connect`], messages
/// wait here, in arrival order.
#[derive(Clone, Default)]
pub(crate) struct PortInlet(Arc<Mutex<InletState>>);

/// A message from a remote sender: its port, tag, sequence and payload.
type Arrival = (InletPort, Tag, u64, Bytes);

enum InletState {
    Buffering(Vec<Arrival>),
    Connected(RemoteInlet),
}

impl Default for InletState {
    fn default() -> Self {
        InletState::Buffering(Vec::new())
    }
}

impl PortInlet {
    /// Delivers everything buffered to `inlet`, and from now on directly.
    pub(crate) fn connect(&self, inlet: RemoteInlet) {
        let mut state = self.0.lock().unwrap();
        if let InletState::Buffering(buffered) = &mut *state {
            for (from, tag, seq, payload) in buffered.drain(..) {
                inlet.deliver_to(from, tag, seq, payload);
            }
        }
        *state = InletState::Connected(inlet);
    }

    fn deliver(&self, arrival: Arrival) {
        let mut state = self.0.lock().unwrap();
        match &mut *state {
            InletState::Buffering(buffered) => buffered.push(arrival),
            InletState::Connected(inlet) => {
                let (from, tag, seq, payload) = arrival;
                inlet.deliver_to(from, tag, seq, payload);
            }
        }
    }
}

/// Subscribes to a remote sender's output port of `app` and feeds it to
/// `inlet`. Malformed messages, and messages naming another source than
/// their key, are logged and dropped.
pub(crate) async fn subscribe_port(
    session: &zenoh::Session,
    keys: &Keys,
    app: &AppManifest,
    from: &PortRef,
    inlet: PortInlet,
) -> anyhow::Result<zenoh::pubsub::Subscriber<()>> {
    let resolved = InletPort::resolve(app, from.process.as_str(), from.port.as_str())?;
    let key = keys.port(&app.name, &from.process, &from.port);
    let sender = from.process.clone();
    let log_key = key.clone();
    session
        .declare_subscriber(&key)
        .callback(move |sample| {
            let bytes = sample.payload().to_bytes();
            match PortMessage::decode(&bytes) {
                Ok(m) if m.source == sender.as_str() => {
                    inlet.deliver((resolved, Tag(m.tag), m.seq, Bytes::from(m.payload)));
                }
                Ok(m) => tracing::warn!(key = %log_key, source = %m.source, "dropping message with a foreign source"),
                Err(e) => tracing::warn!(key = %log_key, "dropping malformed port message: {e}"),
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {key}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use weft_fabric::{FabricConfig, Mode};

    use super::*;

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Port messages to a node that reads slower than they come wait in a
    /// bounded queue, then hold their senders back: memory does not grow
    /// without end, and every message arrives once the reader catches up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_link_holds_senders_back() {
        const MESSAGES: u64 = 20_000;
        let endpoint = format!("tcp/127.0.0.1:{}", free_port());
        let receiver = FabricConfig::default()
            .listen([endpoint.clone()])
            .open()
            .await
            .unwrap();
        let sender = FabricConfig::default()
            .mode(Mode::Peer)
            .connect([endpoint])
            .open()
            .await
            .unwrap();
        let keys = Keys::new("stall");
        let (app, p, o): (AppName, ProcessName, PortName) = (
            "app".parse().unwrap(),
            "p".parse().unwrap(),
            "o".parse().unwrap(),
        );
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Mutex::new(blocked);
        let received = Arc::new(AtomicU64::new(0));
        let seen = received.clone();
        let key = keys.port(&app, &p, &o);
        let _subscriber = receiver
            .declare_subscriber(key.clone())
            .callback(move |_| {
                seen.fetch_add(1, Ordering::Relaxed);
                // A slow reader, not a dead one: the link stays busy, so
                // neither side's lease closes it while senders are held.
                let _ = blocked
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_millis(5));
            })
            .await
            .unwrap();
        wait_until_subscribed(&sender, &key).await;

        let outbox = Outbox::start(sender.clone(), keys, "sender".parse().unwrap());
        let sink = outbox.remote_sink(&app).port(&p, &o);
        let published = Arc::new(AtomicU64::new(0));
        let counter = published.clone();
        let producer = std::thread::spawn(move || {
            let payload = vec![0u8; 8 << 10];
            for seq in 1..=MESSAGES {
                sink.publish(Tag(seq), seq, &payload);
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let queued = wait_until_full(&outbox, &producer).await;
        let held_at = published.load(Ordering::Relaxed);
        assert!(
            queued <= PORT_QUEUE_BYTES && held_at < MESSAGES,
            "{held_at} of {MESSAGES} messages published, {queued} bytes queued \
             (bound {PORT_QUEUE_BYTES}) for a node that reads slowly"
        );
        eprintln!("{held_at} of {MESSAGES} published while the link was slow");

        drop(release);
        tokio::task::spawn_blocking(move || producer.join().unwrap())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < MESSAGES {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {MESSAGES} messages arrived after the link resumed",
                received.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `session` sees a subscriber on `key`, so the first
    /// message is not published into a route that does not exist yet.
    async fn wait_until_subscribed(session: &zenoh::Session, key: &str) {
        let probe = session.declare_publisher(key.to_owned()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !probe.matching_status().await.unwrap().matching() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the subscriber on {key} never became visible to the sender"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the port lane is full and returns the bytes it holds;
    /// panics if the producer finished first, which means the queue in
    /// front of the slow link never filled.
    async fn wait_until_full(outbox: &Outbox, producer: &std::thread::JoinHandle<()>) -> usize {
        const MESSAGE: usize = 8 << 10;
        loop {
            // Read as a metrics scrape reads it, without the lane's lock.
            let (lane, depth) = outbox.depths()[0];
            assert_eq!(lane, "ports");
            let queued = depth.bytes as usize;
            if queued + MESSAGE > PORT_QUEUE_BYTES {
                return queued;
            }
            assert!(
                !producer.is_finished(),
                "the producer published every message to a node that reads slowly"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
