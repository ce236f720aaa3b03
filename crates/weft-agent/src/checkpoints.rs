//! Checkpoints on their way from this node's processes to the fabric.
//!
//! A process's thread hands over a base or an increment (the pages written
//! since its previous checkpoint: see `weft_runtime::snapshot`) and goes
//! on; it never encodes, waits or sends. A task of its own applies each
//! link, in order, to the node's copy of the process's latest checkpoint,
//! and publishes that copy whole at Zenoh's background priority, so a port
//! message never waits behind it. The controller thus still receives whole
//! checkpoints while the processes' threads copy only what they changed.
//!
//! Links wait per process until the task takes them; a base makes every
//! link before it moot, so what waits is at most one base and the
//! increments after it, which together carry no more than about two
//! memories' worth (a process starts a new base once its increments have
//! carried more than its base did). The copy of a process that stopped
//! checkpointing here (it moved away or ended) is dropped after
//! [`FORGET_AFTER`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use weft_fabric::codec::CheckpointFrame;
use weft_runtime::Snapshot;
use weft_types::Tag;
use zenoh::qos::{CongestionControl, Priority};

/// How long the node keeps the checkpoint of a process that sends no new
/// link (about a hundred checkpoint intervals).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Links waiting to be applied and sent, by checkpoint key.
#[derive(Default)]
pub(crate) struct PendingCheckpoints {
    links: Mutex<BTreeMap<String, Vec<(Tag, Snapshot)>>>,
    ready: Notify,
}

impl PendingCheckpoints {
    /// Queues the next link of the process checkpointed under `key`.
    pub(crate) fn push(&self, key: String, tag: Tag, snapshot: Snapshot) {
        let mut links = self.links.lock().unwrap();
        let waiting = links.entry(key).or_default();
        if snapshot.is_base() {
            waiting.clear();
        }
        waiting.push((tag, snapshot));
        drop(links);
        self.ready.notify_one();
    }

    fn take(&self) -> BTreeMap<String, Vec<(Tag, Snapshot)>> {
        std::mem::take(&mut *self.links.lock().unwrap())
    }
}

/// The node's copy of each process's latest checkpoint, whole.
#[derive(Default)]
struct Latest(HashMap<String, (Tag, Snapshot, Instant)>);

impl Latest {
    /// Applies `links` in order; returns the whole checkpoint they lead
    /// to, if any applied. A link that does not apply (the chain broke)
    /// leaves the last good checkpoint in place, and the links after it
    /// wait for the process's next base.
    fn apply(&mut self, key: &str, links: Vec<(Tag, Snapshot)>) -> Option<(Tag, &Snapshot)> {
        let mut changed = false;
        for (tag, link) in links {
            match self.0.get_mut(key) {
                Some((at, whole, touched)) => match whole.apply(link) {
                    Ok(()) => (*at, *touched, changed) = (tag, Instant::now(), true),
                    Err(e) => {
                        tracing::warn!(key, "checkpoint link refused until the next base: {e}")
                    }
                },
                None if link.is_base() => {
                    self.0.insert(key.to_owned(), (tag, link, Instant::now()));
                    changed = true;
                }
                None => tracing::debug!(
                    key,
                    "checkpoint increment without its base; waiting for the next base"
                ),
            }
        }
        let (tag, whole, _) = self.0.get(key).filter(|_| changed)?;
        Some((*tag, whole))
    }

    fn forget_idle(&mut self) {
        self.0.retain(|_, (_, _, at)| at.elapsed() < FORGET_AFTER);
    }
}

/// Applies and publishes checkpoints as they come, until the session ends.
pub(crate) async fn send(session: zenoh::Session, pending: Arc<PendingCheckpoints>) {
    let mut latest = Latest::default();
    loop {
        pending.ready.notified().await;
        latest.forget_idle();
        for (key, links) in pending.take() {
            let Some((tag, whole)) = latest.apply(&key, links) else {
                continue;
            };
            let frame = CheckpointFrame::encode_parts(tag, &whole.encode());
            if frame.len() as u64 > weft_types::limits::MAX_CHECKPOINT {
                tracing::warn!(key = %key, bytes = frame.len(), "checkpoint too large for the fabric; not sent");
                continue;
            }
            let sent = session
                .put(&key, frame)
                .priority(Priority::Background)
                .congestion_control(CongestionControl::Block)
                .await;
            if let Err(e) = sent {
                tracing::warn!(key = %key, "cannot send checkpoint: {e}");
            }
        }
    }
}
