//! The bounded, ordered mailbox of one process.
//!
//! Every message carries the tag at which it becomes visible to its
//! receiver, its source process and the source's sequence number. An inbox
//! keeps messages ordered by exactly that triple, so the order in which a
//! process sees its inputs never depends on thread timing.
//!
//! An inbox also decides what is late: once its process starts reading a
//! tag ([`Inbox::reading`]), a message visible at or before that tag
//! arrives *tardy*. Tardy and refused arrivals are counted and reported to
//! an [`InboxObserver`] (a recording listens); a replay instead gives the
//! inbox an [`Admission`] that repeats what the live run saw.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_types::{PortHandle, ProcessName, Tag};

use crate::throttle::Throttle;
use crate::types::{Message, MessageKey, ProcessId, Roster};

/// Why a message did not make it into an inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MailboxFull,
}

/// Hears about arrivals that missed their tag or found the mailbox full.
pub trait InboxObserver: Send + Sync {
    /// `key` arrived while (or after) its receiver read tag `reading`.
    fn tardy(&self, reading: Tag, key: &MessageKey);
    /// `key` was refused: the mailbox was full.
    fn dropped(&self, key: &MessageKey);
}

/// How a replay admits an arrival: the way the live run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Now,
    /// The live mailbox refused it: drop it again.
    Refuse,
    /// It arrived live after its receiver read this tag: hold it until the
    /// receiver has completed it.
    AfterReading(Tag),
}

/// Decides admission in a replay.
pub trait Admission: Send + Sync {
    fn admit(&self, key: &MessageKey) -> Admit;
}

/// The counters of an inbox.
#[derive(Debug, Default)]
pub struct InboxCounters {
    pub dropped: AtomicU64,
    pub tardy: AtomicU64,
    pub duplicates: AtomicU64,
}

pub struct Inbox {
    queue: Mutex<Queue>,
    depth: usize,
    roster: Roster,
    /// Woken whenever a message arrives, once someone [`Inbox::watch`]es
    /// (a message-driven be process waits on it; nobody else does, and
    /// they need not pay for the wake-up).
    pub(crate) arrived: tokio::sync::Notify,
    watched: AtomicBool,
    pub counters: InboxCounters,
    /// One past the tag the receiver is reading or last read (0: none yet).
    /// A message visible before it arrived too late to be read at its tag.
    watermark: AtomicU64,
    observer: OnceLock<Arc<dyn InboxObserver>>,
    admission: OnceLock<Arc<dyn Admission>>,
    tardy_warning: Throttle,
    full_warning: Throttle,
}

/// What the inbox's lock protects.
struct Queue {
    pending: Pending,
    /// Per source, the (tag, sequence) of the last message handed to the
    /// process. A sender restored from a checkpoint re-sends what it had
    /// sent after that checkpoint; those copies are recognised here and
    /// dropped, so every message is delivered once. Indexed by source id,
    /// grown to the highest source seen: a process of an app of 10,000
    /// that hears from two of them does not hold 10,000 entries.
    consumed: Vec<Option<(Tag, u64)>>,
    /// Replays only: arrivals held until their receiver reads past a tag.
    held: Vec<(Tag, Message)>,
}

/// The queued messages in key order: a deque kept sorted. A mailbox is
/// small and messages mostly arrive in order, so an arrival is a push at
/// the back and a take is a pop at the front, and once the deque has grown
/// nothing allocates (a map would allocate a node per message).
#[derive(Default)]
struct Pending(VecDeque<(MessageKey, (PortHandle, Bytes))>);

impl Pending {
    fn position(&self, key: &MessageKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    fn contains_key(&self, key: &MessageKey) -> bool {
        self.position(key).is_ok()
    }

    /// Queues `message` under `key` unless a message has that key.
    fn insert(&mut self, key: MessageKey, message: (PortHandle, Bytes)) {
        if let Err(at) = self.position(&key) {
            self.0.insert(at, (key, message));
        }
    }

    /// The position of the first message visible at `tag` (on `port`).
    fn first_visible(&self, tag: Tag, port: Option<PortHandle>) -> Option<usize> {
        self.0
            .iter()
            .take_while(|(k, _)| k.tag <= tag)
            .position(|(_, (p, _))| port.is_none_or(|want| *p == want))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&MessageKey, &(PortHandle, Bytes))> {
        self.0.iter().map(|(k, m)| (k, m))
    }
}

impl Queue {
    fn seen(&self, key: &MessageKey) -> bool {
        let last = self.consumed.get(key.source.0 as usize).copied().flatten();
        last.is_some_and(|last| (key.tag, key.seq) <= last)
    }

    fn take(&mut self, key: &MessageKey) -> Option<Message> {
        let at = self.pending.position(key).ok()?;
        self.take_at(at)
    }

    /// Takes the message at `at` in delivery order, marking it consumed.
    fn take_at(&mut self, at: usize) -> Option<Message> {
        let (key, (port, payload)) = self.pending.0.remove(at)?;
        let index = key.source.0 as usize;
        if self.consumed.len() <= index {
            self.consumed.resize(index + 1, None);
        }
        let mark = (key.tag, key.seq);
        let last = self.consumed[index].get_or_insert(mark);
        *last = (*last).max(mark);
        Some(Message { key, port, payload })
    }
}

/// A message as kept in a snapshot, its source by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub tag: Tag,
    pub source: ProcessName,
    pub seq: u64,
    pub port: PortHandle,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The delivery state of an inbox, as kept in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxState {
    pub pending: Vec<StoredMessage>,
    pub consumed: Vec<(ProcessName, Tag, u64)>,
}

impl Inbox {
    pub fn new(depth: usize, roster: Roster) -> Inbox {
        Inbox {
            queue: Mutex::new(Queue {
                pending: Pending::default(),
                consumed: Vec::new(),
                held: Vec::new(),
            }),
            depth: depth.max(1),
            roster,
            arrived: tokio::sync::Notify::new(),
            watched: AtomicBool::new(false),
            counters: InboxCounters::default(),
            watermark: AtomicU64::new(0),
            observer: OnceLock::new(),
            admission: OnceLock::new(),
            tardy_warning: Throttle::default(),
            full_warning: Throttle::default(),
        }
    }

    /// Wakes `arrived` on every arrival from now on. Call it before looking
    /// for a message: one that arrives after that look wakes the waiter.
    pub(crate) fn watch(&self) {
        self.watched.store(true, Ordering::SeqCst);
    }

    /// Reports tardy and refused arrivals to `observer` from now on.
    pub fn observe(&self, observer: Arc<dyn InboxObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Admits arrivals as `admission` says (replays).
    pub fn admit_with(&self, admission: Arc<dyn Admission>) {
        let _ = self.admission.set(admission);
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn push(&self, message: Message) -> Result<(), Refused> {
        let admit = self
            .admission
            .get()
            .map_or(Admit::Now, |a| a.admit(&message.key));
        let mut queue = self.queue.lock().unwrap();
        let key = message.key;
        let at = match queue.pending.position(&key) {
            Err(at) if !queue.seen(&key) => at,
            _ => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        match admit {
            Admit::Now => {}
            // Refused live, dropped here too: as expected, not an overflow.
            Admit::Refuse => return Ok(()),
            Admit::AfterReading(tag) => {
                queue.held.push((tag, message));
                return Ok(());
            }
        }
        if queue.pending.len() >= self.depth {
            drop(queue);
            self.refuse(&key);
            return Err(Refused::MailboxFull);
        }
        let watermark = self.watermark.load(Ordering::Relaxed);
        if key.tag.0 < watermark {
            self.tardy(Tag(watermark - 1), &key);
        }
        queue
            .pending
            .0
            .insert(at, (key, (message.port, message.payload)));
        drop(queue);
        if self.watched.load(Ordering::SeqCst) {
            self.arrived.notify_one();
        }
        Ok(())
    }

    fn refuse(&self, key: &MessageKey) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.full_warning.allow() {
            tracing::warn!(source = %self.roster.name(key.source), depth = self.depth, suppressed, "mailbox full, message dropped");
        }
        if let Some(observer) = self.observer.get() {
            observer.dropped(key);
        }
    }

    /// A message that missed its tag: still delivered (at the receiver's
    /// next tag), and counted.
    fn tardy(&self, reading: Tag, key: &MessageKey) {
        self.counters.tardy.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.tardy_warning.allow() {
            tracing::warn!(source = %self.roster.name(key.source), tag = %key.tag, suppressed, "tardy message: arrived after its tag was read");
        }
        if let Some(observer) = self.observer.get() {
            observer.tardy(reading, key);
        }
    }

    /// The receiver reads its inputs for `tag` now. A message visible at or
    /// before `tag` that arrives from here on missed its tag: it is tardy.
    /// Called before the first message is taken, so a message that arrives
    /// while the call runs is counted, not quietly read one tag late.
    pub fn reading(&self, tag: Tag) {
        self.watermark.store(tag.0 + 1, Ordering::Relaxed);
    }

    /// Replays: the receiver completed `tag`, so what arrived live after it
    /// read `tag` (or earlier) is admitted now.
    pub(crate) fn completed(&self, tag: Tag) {
        let mut queue = self.queue.lock().unwrap();
        if queue.held.is_empty() {
            return;
        }
        let (ready, held) = std::mem::take(&mut queue.held)
            .into_iter()
            .partition(|(after, _)| *after <= tag);
        queue.held = held;
        for (_, m) in ready {
            queue.pending.insert(m.key, (m.port, m.payload));
        }
    }

    /// Takes the first message visible at `tag` (on `port`, if given).
    pub fn pop_visible(&self, tag: Tag, port: Option<PortHandle>) -> Option<Message> {
        let mut queue = self.queue.lock().unwrap();
        let at = queue.pending.first_visible(tag, port)?;
        queue.take_at(at)
    }

    /// Takes the first message visible at `tag` on `port` if its payload
    /// fits in `cap` bytes. One lock covers the look and the take, so a
    /// message that arrives in between cannot be taken in its place.
    /// `Err(len)`: the first message has `len` bytes and stays queued.
    pub fn pop_visible_if_fits(
        &self,
        tag: Tag,
        port: PortHandle,
        cap: usize,
    ) -> Result<Option<Message>, usize> {
        let mut queue = self.queue.lock().unwrap();
        let Some(at) = queue.pending.first_visible(tag, Some(port)) else {
            return Ok(None);
        };
        let len = queue.pending.0[at].1.1.len();
        if len > cap {
            return Err(len);
        }
        Ok(queue.take_at(at))
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
        self.queue.lock().unwrap().take_at(0)
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
                .map(|(k, (port, payload))| StoredMessage {
                    tag: k.tag,
                    source: self.roster.name(k.source).clone(),
                    seq: k.seq,
                    port: *port,
                    payload: payload.to_vec(),
                })
                .collect(),
            consumed: queue
                .consumed
                .iter()
                .enumerate()
                .filter_map(|(i, mark)| {
                    let (tag, seq) = (*mark)?;
                    Some((self.roster.name(ProcessId(i as u32)).clone(), tag, seq))
                })
                .collect(),
        }
    }

    /// Puts back a snapshot's delivery state. Messages that arrived before
    /// the restore (a process starts a moment after its inputs are wired)
    /// stay, unless the snapshot says they were already taken. A source the
    /// app no longer has is forgotten.
    pub fn restore(&self, state: InboxState) {
        let mut queue = self.queue.lock().unwrap();
        let id = |name: &ProcessName| self.roster.id(name.as_str());
        let arrived = std::mem::take(&mut queue.pending);
        for m in state.pending {
            if let Some(source) = id(&m.source) {
                let key = MessageKey {
                    tag: m.tag,
                    source,
                    seq: m.seq,
                };
                queue.pending.insert(key, (m.port, Bytes::from(m.payload)));
            }
        }
        queue.consumed.clear();
        for (name, tag, seq) in state.consumed {
            if let Some(source) = id(&name) {
                let index = source.0 as usize;
                if queue.consumed.len() <= index {
                    queue.consumed.resize(index + 1, None);
                }
                queue.consumed[index] = Some((tag, seq));
            }
        }
        for (key, message) in arrived.0 {
            if !queue.seen(&key) {
                queue.pending.insert(key, message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roster() -> Roster {
        Roster::new(["a", "b"].map(|n| n.parse().unwrap()))
    }

    fn msg(tag: u64, source: u32, seq: u64, port: i32) -> Message {
        Message {
            key: MessageKey {
                tag: Tag(tag),
                source: ProcessId(source),
                seq,
            },
            port: PortHandle(port),
            payload: Bytes::from(vec![seq as u8]),
        }
    }

    const A: u32 = 0;
    const B: u32 = 1;

    #[test]
    fn delivery_order_is_tag_source_sequence() {
        let inbox = Inbox::new(16, roster());
        for m in [
            msg(20, A, 3, 0),
            msg(10, B, 1, 0),
            msg(10, A, 2, 0),
            msg(10, A, 1, 0),
        ] {
            inbox.push(m).unwrap();
        }
        let order: Vec<_> = std::iter::from_fn(|| inbox.pop_next())
            .map(|m| (m.key.tag.0, m.key.source.0, m.key.seq))
            .collect();
        assert_eq!(order, [(10, A, 1), (10, A, 2), (10, B, 1), (20, A, 3)]);
    }

    #[test]
    fn only_visible_messages_are_taken() {
        let inbox = Inbox::new(16, roster());
        inbox.push(msg(10, A, 1, 0)).unwrap();
        inbox.push(msg(30, A, 2, 1)).unwrap();
        assert!(inbox.pop_visible(Tag(5), None).is_none());
        assert!(inbox.pop_visible(Tag(40), Some(PortHandle(0))).is_some());
        assert!(inbox.pop_visible(Tag(20), Some(PortHandle(1))).is_none());
        assert_eq!(
            inbox
                .pop_visible(Tag(30), Some(PortHandle(1)))
                .unwrap()
                .key
                .seq,
            2
        );
    }

    #[test]
    fn a_message_too_large_for_the_buffer_stays() {
        let inbox = Inbox::new(16, roster());
        let mut big = msg(10, A, 1, 0);
        big.payload = Bytes::from(vec![0; 100]);
        inbox.push(big).unwrap();
        assert_eq!(
            inbox.pop_visible_if_fits(Tag(10), PortHandle(0), 16),
            Err(100)
        );
        assert_eq!(inbox.len(), 1);
        assert!(
            inbox
                .pop_visible_if_fits(Tag(10), PortHandle(0), 100)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            inbox.pop_visible_if_fits(Tag(10), PortHandle(0), 100),
            Ok(None)
        );
    }

    #[test]
    fn copies_of_consumed_or_queued_messages_are_dropped() {
        let inbox = Inbox::new(16, roster());
        inbox.push(msg(10, A, 1, 0)).unwrap();
        inbox.push(msg(10, A, 1, 0)).unwrap();
        assert_eq!(inbox.len(), 1);
        inbox.pop_next().unwrap();
        inbox.push(msg(10, A, 1, 0)).unwrap(); // a restored sender re-sends it
        inbox.push(msg(20, A, 2, 0)).unwrap();
        inbox.push(msg(10, B, 1, 0)).unwrap(); // another source is independent
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.counters.duplicates.load(Ordering::Relaxed), 2);
        let state = inbox.state();
        let copy = Inbox::new(16, roster());
        copy.restore(state.clone());
        assert_eq!(copy.state(), state);
        copy.push(msg(10, A, 1, 0)).unwrap();
        assert_eq!(copy.len(), 2, "the delivery marks survive a snapshot");
    }

    /// Messages wired in before the restore stay, unless already taken.
    #[test]
    fn restore_keeps_what_arrived_before_it() {
        let source = Inbox::new(16, roster());
        source.push(msg(10, A, 1, 0)).unwrap();
        source.pop_next().unwrap();
        source.push(msg(20, A, 2, 0)).unwrap();
        let target = Inbox::new(16, roster());
        target.push(msg(10, A, 1, 0)).unwrap(); // taken before the snapshot
        target.push(msg(30, A, 3, 0)).unwrap(); // new
        target.restore(source.state());
        let keys: Vec<u64> = std::iter::from_fn(|| target.pop_next())
            .map(|m| m.key.seq)
            .collect();
        assert_eq!(keys, vec![2, 3]);
    }

    #[test]
    fn full_mailbox_refuses() {
        let inbox = Inbox::new(1, roster());
        inbox.push(msg(1, A, 1, 0)).unwrap();
        assert_eq!(inbox.push(msg(1, A, 2, 0)), Err(Refused::MailboxFull));
        assert_eq!(inbox.counters.dropped.load(Ordering::Relaxed), 1);
    }

    #[derive(Default)]
    struct Heard(Mutex<Vec<(&'static str, Tag, MessageKey)>>);

    impl InboxObserver for Heard {
        fn tardy(&self, reading: Tag, key: &MessageKey) {
            self.0.lock().unwrap().push(("tardy", reading, *key));
        }
        fn dropped(&self, key: &MessageKey) {
            self.0.lock().unwrap().push(("dropped", key.tag, *key));
        }
    }

    #[test]
    fn late_and_refused_arrivals_are_reported() {
        let inbox = Inbox::new(1, roster());
        let heard = Arc::new(Heard::default());
        inbox.observe(heard.clone());
        inbox.reading(Tag(20));
        inbox.push(msg(20, A, 1, 0)).unwrap(); // during the tick at 20
        inbox.push(msg(30, A, 2, 0)).unwrap_err(); // the mailbox holds one
        let heard = heard.0.lock().unwrap();
        assert_eq!(heard[0].0, "tardy");
        assert_eq!(heard[0].1, Tag(20));
        assert_eq!(heard[1].0, "dropped");
        assert_eq!(inbox.counters.tardy.load(Ordering::Relaxed), 1);
    }

    struct Hold;

    impl Admission for Hold {
        fn admit(&self, key: &MessageKey) -> Admit {
            match key.seq {
                1 => Admit::AfterReading(Tag(20)),
                2 => Admit::Refuse,
                _ => Admit::Now,
            }
        }
    }

    #[test]
    fn a_replay_admits_arrivals_as_the_live_run_did() {
        let inbox = Inbox::new(16, roster());
        inbox.admit_with(Arc::new(Hold));
        inbox.push(msg(10, A, 1, 0)).unwrap();
        inbox.push(msg(10, A, 2, 0)).unwrap();
        inbox.push(msg(10, A, 3, 0)).unwrap();
        assert_eq!(inbox.len(), 1, "1 held, 2 refused as it was live");
        assert_eq!(inbox.pop_visible(Tag(20), None).unwrap().key.seq, 3);
        assert!(
            inbox.pop_visible(Tag(20), None).is_none(),
            "held until 20 is done"
        );
        inbox.completed(Tag(20));
        assert_eq!(inbox.pop_visible(Tag(30), None).unwrap().key.seq, 1);
    }
}
