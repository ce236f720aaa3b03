//! Incremental checkpoints of a running process.
//!
//! The first checkpoint of a process incarnation is a base (every memory
//! whole); each later one carries only the pages written since the one
//! before, found by `dirty.rs`, plus the small state that travels whole.
//! A new base starts a new chain once the chain is [`REBASE_EVERY`] links
//! long or its increments together carried more than the base did, so a
//! restore never replays much more than one memory's worth of pages, and a
//! holder that lost a link is whole again at the next base.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use xxhash_rust::xxh3::Xxh3;

use super::dirty::{DirtyTracking, PageTracker};
use super::{Link, MemoryImage, Snapshot};
use crate::process::Process;

/// Increments after which the next checkpoint is a base again.
pub const REBASE_EVERY: u32 = 20;

/// Where a process's chain stands, and the trackers of its memories.
pub(crate) struct Tracking {
    link: Link,
    increments: u32,
    /// Bytes the increments since the base carried, and the base's size.
    carried: u64,
    base_bytes: u64,
    memories: BTreeMap<(usize, u32), PageTracker>,
}

impl Tracking {
    fn base_due(&self) -> bool {
        self.increments >= REBASE_EVERY || self.carried > self.base_bytes
    }
}

/// A chain id no other base of any process has: a hash of the process,
/// its tag, the wall clock and a counter.
fn new_chain(process: &str, tag: u64) -> u64 {
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    let mut h = Xxh3::new();
    h.update(process.as_bytes());
    h.update(&tag.to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&TAKEN.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.digest()
}

impl Process {
    /// The next checkpoint of this process: a base, or the pages written
    /// since the previous checkpoint (see the module docs).
    pub fn checkpoint(&mut self) -> Result<Snapshot> {
        let Some(mut tracking) = self.tracking.take().filter(|t| !t.base_due()) else {
            return self.checkpoint_base();
        };
        let link = Link {
            chain: tracking.link.chain,
            index: tracking.link.index + 1,
            parent: Some(tracking.link.index),
        };
        let snapshot = self.capture(link, |at, memory| match tracking.memories.get_mut(&at) {
            Some(tracker) => MemoryImage::pages_of(memory, &tracker.take_written(memory)),
            None => {
                tracking.memories.insert(at, PageTracker::start(memory));
                MemoryImage::Full(memory.to_vec())
            }
        })?;
        tracking.link = link;
        tracking.increments += 1;
        tracking.carried += snapshot.carried_bytes();
        self.tracking = Some(tracking);
        Ok(snapshot)
    }

    fn checkpoint_base(&mut self) -> Result<Snapshot> {
        let chain = new_chain(self.name().as_str(), self.last_tag.map_or(0, |t| t.0));
        let link = Link {
            chain,
            index: 0,
            parent: None,
        };
        let mut memories = BTreeMap::new();
        let snapshot = self.capture(link, |at, memory| {
            memories.insert(at, PageTracker::start(memory));
            MemoryImage::Full(memory.to_vec())
        })?;
        self.tracking = Some(Tracking {
            link,
            increments: 0,
            carried: 0,
            base_bytes: snapshot.memory_bytes(),
            memories,
        });
        Ok(snapshot)
    }

    /// How this process's writes are found, once it has been checkpointed.
    pub fn dirty_tracking(&self) -> Option<DirtyTracking> {
        let tracking = self.tracking.as_ref()?;
        tracking.memories.values().next().map(PageTracker::way)
    }
}
