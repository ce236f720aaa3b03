//! What crosses the fabric on behalf of running processes: outputs whose
//! receivers are elsewhere, messages from remote senders, checkpoints and
//! guest log lines.
//!
//! Processes publish from rt threads that must never block on the network,
//! so every outgoing item goes to an async task that owns the Zenoh calls:
//! port messages and log lines through a channel, at high priority;
//! checkpoints through a newest-wins slot, encoded and sent at background
//! priority by a task of their own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use weft_fabric::Keys;
use weft_fabric::codec::{self, PortMessage};
use weft_fabric::proto::{Blob, CheckpointMessage};
use weft_runtime::ports::RemoteSink;
use weft_runtime::{CheckpointSink, Checkpointing, RemoteInlet, Snapshot, Tag, process::LogSink};
use zenoh::qos::{CongestionControl, Priority};

/// One small item for the fabric (a port message or a log line).
struct Put {
    key: String,
    payload: Vec<u8>,
    priority: Priority,
    congestion: CongestionControl,
}

/// Checkpoints waiting to be sent, newest per key: if the link is slower
/// than the checkpoints come, older ones are replaced rather than queued.
#[derive(Default)]
struct PendingCheckpoints {
    latest: Mutex<BTreeMap<String, (Tag, Box<Snapshot>)>>,
    ready: Notify,
}

/// The sending half every sink of a node shares. Two lanes, each its own
/// task and its own Zenoh priority, so a port message never waits behind a
/// checkpoint of many megabytes being encoded or sent.
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Put>,
    checkpoints: Arc<PendingCheckpoints>,
    keys: Keys,
}

impl Outbox {
    /// Starts the tasks that perform the puts.
    pub(crate) fn start(session: zenoh::Session, keys: Keys) -> Outbox {
        let (tx, mut rx) = mpsc::unbounded_channel::<Put>();
        let small = session.clone();
        tokio::spawn(async move {
            while let Some(put) = rx.recv().await {
                let sent = small
                    .put(&put.key, put.payload)
                    .priority(put.priority)
                    .congestion_control(put.congestion)
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(key = %put.key, "cannot publish: {e}");
                }
            }
        });
        let checkpoints = Arc::new(PendingCheckpoints::default());
        tokio::spawn(send_checkpoints(session, checkpoints.clone()));
        Outbox {
            tx,
            checkpoints,
            keys,
        }
    }

    fn put(
        &self,
        key: String,
        payload: Vec<u8>,
        priority: Priority,
        congestion: CongestionControl,
    ) {
        let _ = self.tx.send(Put {
            key,
            payload,
            priority,
            congestion,
        });
    }

    pub(crate) fn remote_sink(&self, app: &str) -> Arc<dyn RemoteSink> {
        Arc::new(PortSink {
            outbox: self.clone(),
            app: app.to_string(),
        })
    }

    pub(crate) fn checkpointing(&self, app: &str, every: std::time::Duration) -> Checkpointing {
        let outbox = self.clone();
        let app = app.to_string();
        let sink: CheckpointSink = Arc::new(move |process: &str, tag: Tag, snapshot: Snapshot| {
            let key = outbox.keys.checkpoint(&app, process);
            let pending = &outbox.checkpoints;
            pending
                .latest
                .lock()
                .unwrap()
                .insert(key, (tag, Box::new(snapshot)));
            pending.ready.notify_one();
        });
        Checkpointing { every, sink }
    }

    pub(crate) fn log_sink(&self, app: &str) -> LogSink {
        let outbox = self.clone();
        let app = app.to_string();
        Arc::new(move |process: &str, level: i32, tag: Tag, text: &str| {
            let level = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .get(level as usize)
                .unwrap_or(&"TRACE");
            let line = format!("{tag} {level} {text}");
            let key = outbox.keys.log(&app, process);
            // Log lines may be dropped on a congested link; messages may not.
            outbox.put(
                key,
                line.into_bytes(),
                Priority::Data,
                CongestionControl::Drop,
            );
        })
    }
}

struct PortSink {
    outbox: Outbox,
    app: String,
}

impl RemoteSink for PortSink {
    fn publish(&self, sender: &str, port: &str, tag: Tag, seq: u64, payload: &[u8]) {
        let message = PortMessage {
            tag: tag.0,
            seq,
            source: sender.to_string(),
            payload: payload.to_vec(),
        };
        self.outbox.put(
            self.outbox.keys.port(&self.app, sender, port),
            message.encode(),
            Priority::DataHigh,
            CongestionControl::Block,
        );
    }
}

/// Where messages from remote senders go. Subscriptions are made before
/// the app's share starts (so a standby's starting checkpoint and the
/// messages after it leave no gap): until [`PortInlet::connect`], messages
/// wait here, in arrival order.
#[derive(Clone, Default)]
pub(crate) struct PortInlet(Arc<Mutex<InletState>>);

type Arrival = (String, String, Tag, u64, Vec<u8>);

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
            for (sender, port, tag, seq, payload) in buffered.drain(..) {
                if let Err(e) = inlet.deliver(&sender, &port, tag, seq, payload) {
                    tracing::warn!("dropping message: {e:#}");
                }
            }
        }
        *state = InletState::Connected(inlet);
    }

    fn deliver(&self, arrival: Arrival) -> anyhow::Result<()> {
        let mut state = self.0.lock().unwrap();
        match &mut *state {
            InletState::Buffering(buffered) => {
                buffered.push(arrival);
                Ok(())
            }
            InletState::Connected(inlet) => {
                let (sender, port, tag, seq, payload) = arrival;
                inlet.deliver(&sender, &port, tag, seq, payload)
            }
        }
    }
}

/// Encodes and sends the newest checkpoint of each process, one at a time,
/// at background priority.
async fn send_checkpoints(session: zenoh::Session, pending: Arc<PendingCheckpoints>) {
    loop {
        pending.ready.notified().await;
        let batch = std::mem::take(&mut *pending.latest.lock().unwrap());
        for (key, (tag, snapshot)) in batch {
            let message = CheckpointMessage {
                tag: tag.0,
                snapshot: Blob(snapshot.encode()),
            };
            let sent = session
                .put(&key, codec::encode(&message))
                .priority(Priority::Background)
                .congestion_control(CongestionControl::Block)
                .await;
            if let Err(e) = sent {
                tracing::warn!(key = %key, "cannot send checkpoint: {e}");
            }
        }
    }
}

/// Subscribes to a remote sender's output port and feeds it to `inlet`.
/// Malformed messages are logged and dropped.
pub(crate) async fn subscribe_port(
    session: &zenoh::Session,
    keys: &Keys,
    app: &str,
    sender: &str,
    port: &str,
    inlet: PortInlet,
) -> anyhow::Result<zenoh::pubsub::Subscriber<()>> {
    let key = keys.port(app, sender, port);
    let (sender, port) = (sender.to_string(), port.to_string());
    let log_key = key.clone();
    session
        .declare_subscriber(&key)
        .callback(move |sample| {
            let bytes = sample.payload().to_bytes();
            match PortMessage::decode(&bytes) {
                Ok(m) if m.source == sender => {
                    let arrival = (sender.clone(), port.clone(), Tag(m.tag), m.seq, m.payload);
                    if let Err(e) = inlet.deliver(arrival) {
                        tracing::warn!(key = %log_key, "dropping message: {e:#}");
                    }
                }
                Ok(m) => tracing::warn!(key = %log_key, source = %m.source, "dropping message with a foreign source"),
                Err(e) => tracing::warn!(key = %log_key, "dropping malformed port message: {e}"),
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {key}: {e}"))
}
