//! Ports and message delivery between processes on one node.
//!
//! Every message carries the tag at which it becomes visible to its
//! receiver, its source process and the source's sequence number. A
//! receiver's [`Inbox`] keeps messages ordered by exactly that triple, so
//! the order in which a process sees its inputs never depends on thread
//! timing. The [`Router`] holds the app's connections and applies each
//! connection's logical delay.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::{Event, ProcessRecorder};
use crate::tag::Tag;

/// Order of delivery: visible tag, then source process, then its sequence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageKey {
    pub tag: Tag,
    pub source: String,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub key: MessageKey,
    /// The receiver's port handle.
    pub port: i32,
    pub payload: Vec<u8>,
}

/// One output of a call, before routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The sender's port handle.
    pub port: i32,
    pub payload: Vec<u8>,
}

/// Why a message did not make it into an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MailboxFull,
}

/// The bounded, ordered mailbox of one process.
pub struct Inbox {
    queue: Mutex<Queue>,
    depth: usize,
    /// Woken whenever a message arrives (be processes wait on it).
    pub(crate) arrived: tokio::sync::Notify,
    pub(crate) dropped: AtomicU64,
    /// One past the last tag the receiver completed (0: none yet). A message
    /// visible before it arrived too late to be read at its tag.
    watermark: AtomicU64,
    pub(crate) tardy: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    /// Where late and refused arrivals are recorded, when the run is.
    recorder: OnceLock<ProcessRecorder>,
}

/// What the inbox's lock protects.
#[derive(Default)]
struct Queue {
    pending: BTreeMap<MessageKey, (i32, Vec<u8>)>,
    /// Per source, the (tag, sequence) of the last message handed to the
    /// process. A sender restored from a checkpoint re-sends what it had
    /// sent after that checkpoint; those copies are recognised here and
    /// dropped, so every message is delivered once.
    consumed: BTreeMap<String, (Tag, u64)>,
}

impl Queue {
    fn take(&mut self, key: &MessageKey) -> Option<Message> {
        let (port, payload) = self.pending.remove(key)?;
        let mark = (key.tag, key.seq);
        let last = self.consumed.entry(key.source.clone()).or_insert(mark);
        *last = (*last).max(mark);
        Some(Message {
            key: key.clone(),
            port,
            payload,
        })
    }
}

/// The delivery state of an inbox, as kept in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxState {
    pub pending: Vec<Message>,
    pub consumed: Vec<(String, Tag, u64)>,
}

impl Inbox {
    pub fn new(depth: usize) -> Inbox {
        Inbox {
            queue: Mutex::new(Queue::default()),
            depth: depth.max(1),
            arrived: tokio::sync::Notify::new(),
            dropped: AtomicU64::new(0),
            watermark: AtomicU64::new(0),
            tardy: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            recorder: OnceLock::new(),
        }
    }

    /// Records tardy and refused arrivals from now on (a replay must see
    /// them the same way).
    pub fn record_to(&self, recorder: ProcessRecorder) {
        let _ = self.recorder.set(recorder);
    }

    fn record(&self, tag: Tag, event: impl FnOnce() -> Event) {
        if let Some(recorder) = self.recorder.get() {
            recorder.record(tag, event());
        }
    }

    pub fn push(&self, message: Message) -> Result<(), Refused> {
        let mut queue = self.queue.lock().unwrap();
        let seen = queue
            .consumed
            .get(&message.key.source)
            .is_some_and(|&last| (message.key.tag, message.key.seq) <= last);
        if seen || queue.pending.contains_key(&message.key) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %message.key.source, tag = %message.key.tag, seq = message.key.seq, "duplicate message dropped");
            return Ok(());
        }
        let key = &message.key;
        if queue.pending.len() >= self.depth {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.record(key.tag, || Event::Dropped {
                source: key.source.clone(),
                seq: key.seq,
            });
            return Err(Refused::MailboxFull);
        }
        let watermark = self.watermark.load(Ordering::Relaxed);
        if key.tag.0 < watermark {
            // Tardy: its tag has already been processed. It is still
            // delivered (at the receiver's next tag), and counted.
            self.tardy.fetch_add(1, Ordering::Relaxed);
            self.record(Tag(watermark - 1), || Event::Tardy {
                source: key.source.clone(),
                visible: key.tag,
                seq: key.seq,
            });
            tracing::warn!(source = %message.key.source, tag = %message.key.tag, "tardy message: arrived after its tag was processed");
        }
        queue
            .pending
            .insert(message.key, (message.port, message.payload));
        drop(queue);
        self.arrived.notify_one();
        Ok(())
    }

    /// Takes the first message visible at `tag` (on `port`, if given).
    pub fn pop_visible(&self, tag: Tag, port: Option<i32>) -> Option<Message> {
        let mut queue = self.queue.lock().unwrap();
        let key = queue
            .pending
            .iter()
            .take_while(|(k, _)| k.tag <= tag)
            .find(|(_, (p, _))| port.is_none_or(|want| *p == want))
            .map(|(k, _)| k.clone())?;
        queue.take(&key)
    }

    /// Length of the first message visible at `tag` on `port`.
    pub fn peek_len(&self, tag: Tag, port: i32) -> Option<usize> {
        let queue = self.queue.lock().unwrap();
        queue
            .pending
            .iter()
            .take_while(|(k, _)| k.tag <= tag)
            .find(|(_, (p, _))| *p == port)
            .map(|(_, (_, payload))| payload.len())
    }

    /// Takes the message with exactly this key, if it is here (a replay
    /// follows the order the live run took messages in).
    pub(crate) fn take(&self, key: &MessageKey) -> Option<Message> {
        self.queue.lock().unwrap().take(key)
    }

    pub(crate) fn contains(&self, key: &MessageKey) -> bool {
        self.queue.lock().unwrap().pending.contains_key(key)
    }

    /// Takes the earliest message regardless of its tag (message-driven processes).
    pub fn pop_next(&self) -> Option<Message> {
        let mut queue = self.queue.lock().unwrap();
        let key = queue.pending.keys().next()?.clone();
        queue.take(&key)
    }

    /// Records that the receiver completed `tag`.
    pub fn completed(&self, tag: Tag) {
        self.watermark.store(tag.0 + 1, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pending messages in delivery order and the per-source delivery marks.
    pub fn state(&self) -> InboxState {
        let queue = self.queue.lock().unwrap();
        InboxState {
            pending: queue
                .pending
                .iter()
                .map(|(k, (p, d))| Message {
                    key: k.clone(),
                    port: *p,
                    payload: d.clone(),
                })
                .collect(),
            consumed: queue
                .consumed
                .iter()
                .map(|(s, (t, q))| (s.clone(), *t, *q))
                .collect(),
        }
    }

    /// Puts back a snapshot's delivery state. Messages that arrived before
    /// the restore (a process starts a moment after its inputs are wired)
    /// stay, unless the snapshot says they were already taken.
    pub fn restore(&self, state: InboxState) {
        let mut queue = self.queue.lock().unwrap();
        let arrived = std::mem::replace(
            &mut queue.pending,
            state
                .pending
                .into_iter()
                .map(|m| (m.key, (m.port, m.payload)))
                .collect(),
        );
        queue.consumed = state
            .consumed
            .into_iter()
            .map(|(s, t, q)| (s, (t, q)))
            .collect();
        for (key, message) in arrived {
            let taken = queue
                .consumed
                .get(&key.source)
                .is_some_and(|&last| (key.tag, key.seq) <= last);
            if !taken {
                queue.pending.entry(key).or_insert(message);
            }
        }
    }
}

/// A destination of one output port.
#[derive(Clone)]
struct Route {
    inbox: Arc<Inbox>,
    port: i32,
    delay: Duration,
    receiver: String,
}

/// Where outputs with receivers on other nodes go (the fabric).
pub trait RemoteSink: Send + Sync {
    fn publish(&self, sender: &str, port: &str, tag: Tag, seq: u64, payload: &[u8]);
}

/// All connections of the processes on this node.
#[derive(Default, Clone)]
pub struct Router {
    /// sender -> output port handle -> destinations. Nested so a lookup by
    /// `&str` allocates nothing on the hot path.
    routes: HashMap<String, HashMap<i32, Vec<Route>>>,
    /// Output ports (sender, handle) with receivers elsewhere, by port name.
    exported: HashMap<String, HashMap<i32, String>>,
    remote: Option<Arc<dyn RemoteSink>>,
}

/// What happened to one published message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivery {
    pub delivered: u64,
    pub refused: u64,
}

impl Router {
    pub fn connect(
        &mut self,
        sender: &str,
        out_port: i32,
        receiver: &str,
        inbox: Arc<Inbox>,
        in_port: i32,
        delay: Duration,
    ) {
        self.routes
            .entry(sender.to_string())
            .or_default()
            .entry(out_port)
            .or_default()
            .push(Route {
                inbox,
                port: in_port,
                delay,
                receiver: receiver.to_string(),
            });
    }

    /// Sends `sender`'s output port `port` (named `name`) to the fabric too.
    pub fn export(&mut self, sender: &str, port: i32, name: &str, sink: Arc<dyn RemoteSink>) {
        self.exported
            .entry(sender.to_string())
            .or_default()
            .insert(port, name.to_string());
        self.remote = Some(sink);
    }

    /// Delivers one output of a local `sender` produced at `tag` with
    /// sequence `seq`: to local receivers, and to the fabric if exported.
    pub fn publish(&self, sender: &str, tag: Tag, seq: u64, output: &Output) -> Delivery {
        let result = self.deliver_local(sender, tag, seq, output);
        if let (Some(remote), Some(name)) = (
            &self.remote,
            self.exported
                .get(sender)
                .and_then(|ports| ports.get(&output.port)),
        ) {
            remote.publish(sender, name, tag, seq, &output.payload);
        }
        result
    }

    /// Delivers to the receivers on this node only (also used for
    /// messages that arrive from other nodes).
    pub fn deliver_local(&self, sender: &str, tag: Tag, seq: u64, output: &Output) -> Delivery {
        let mut result = Delivery::default();
        let Some(routes) = self
            .routes
            .get(sender)
            .and_then(|ports| ports.get(&output.port))
        else {
            return result;
        };
        for route in routes {
            let message = Message {
                key: MessageKey {
                    tag: tag.after(route.delay),
                    source: sender.to_string(),
                    seq,
                },
                port: route.port,
                payload: output.payload.clone(),
            };
            match route.inbox.push(message) {
                Ok(()) => result.delivered += 1,
                Err(Refused::MailboxFull) => {
                    result.refused += 1;
                    tracing::warn!(from = sender, to = %route.receiver, "mailbox full, message dropped");
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u64, source: &str, seq: u64, port: i32) -> Message {
        Message {
            key: MessageKey {
                tag: Tag(tag),
                source: source.into(),
                seq,
            },
            port,
            payload: vec![seq as u8],
        }
    }

    #[test]
    fn delivery_order_is_tag_source_sequence() {
        let inbox = Inbox::new(16);
        for m in [
            msg(20, "a", 3, 0),
            msg(10, "b", 1, 0),
            msg(10, "a", 2, 0),
            msg(10, "a", 1, 0),
        ] {
            inbox.push(m).unwrap();
        }
        let order: Vec<_> = std::iter::from_fn(|| inbox.pop_next())
            .map(|m| (m.key.tag.0, m.key.source, m.key.seq))
            .collect();
        assert_eq!(
            order,
            [
                (10, "a".into(), 1),
                (10, "a".into(), 2),
                (10, "b".into(), 1),
                (20, "a".into(), 3)
            ]
        );
    }

    #[test]
    fn only_visible_messages_are_taken() {
        let inbox = Inbox::new(16);
        inbox.push(msg(10, "a", 1, 0)).unwrap();
        inbox.push(msg(30, "a", 2, 1)).unwrap();
        assert!(inbox.pop_visible(Tag(5), None).is_none());
        assert!(inbox.pop_visible(Tag(40), Some(0)).is_some());
        assert!(inbox.pop_visible(Tag(20), Some(1)).is_none());
        assert_eq!(inbox.pop_visible(Tag(30), Some(1)).unwrap().key.seq, 2);
    }

    #[test]
    fn copies_of_consumed_or_queued_messages_are_dropped() {
        let inbox = Inbox::new(16);
        inbox.push(msg(10, "a", 1, 0)).unwrap();
        inbox.push(msg(10, "a", 1, 0)).unwrap();
        assert_eq!(inbox.len(), 1);
        inbox.pop_next().unwrap();
        inbox.push(msg(10, "a", 1, 0)).unwrap(); // a restored sender re-sends it
        inbox.push(msg(20, "a", 2, 0)).unwrap();
        inbox.push(msg(10, "b", 1, 0)).unwrap(); // another source is independent
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.duplicates.load(Ordering::Relaxed), 2);
        let state = inbox.state();
        let copy = Inbox::new(16);
        copy.restore(state.clone());
        assert_eq!(copy.state(), state);
        copy.push(msg(10, "a", 1, 0)).unwrap();
        assert_eq!(copy.len(), 2, "the delivery marks survive a snapshot");
    }

    /// Messages wired in before the restore stay, unless already taken.
    #[test]
    fn restore_keeps_what_arrived_before_it() {
        let source = Inbox::new(16);
        source.push(msg(10, "a", 1, 0)).unwrap();
        source.pop_next().unwrap();
        source.push(msg(20, "a", 2, 0)).unwrap();
        let target = Inbox::new(16);
        target.push(msg(10, "a", 1, 0)).unwrap(); // taken before the snapshot
        target.push(msg(30, "a", 3, 0)).unwrap(); // new
        target.restore(source.state());
        let keys: Vec<u64> = std::iter::from_fn(|| target.pop_next())
            .map(|m| m.key.seq)
            .collect();
        assert_eq!(keys, vec![2, 3]);
    }

    #[test]
    fn full_mailbox_refuses() {
        let inbox = Inbox::new(1);
        inbox.push(msg(1, "a", 1, 0)).unwrap();
        assert_eq!(inbox.push(msg(1, "a", 2, 0)), Err(Refused::MailboxFull));
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
    }
}
