//! Incremental checkpoints of a running process.
//!
//! The first checkpoint of a process incarnation is a base (every memory
//! whole, kept sparse: its zero pages are skipped as it is copied, so a
//! small process's base costs the pages it wrote); each later one carries only the pages written since the one
//! before, found by `dirty.rs`, plus the small state that travels whole.
//! The process never takes a second base: whoever keeps its checkpoints
//! applies each increment to the whole copy it holds (see the agent's
//! `checkpoints`), so a long chain costs a holder nothing at restore.
//!
//! A base of a large memory can be copied a slice at a time between calls
//! ([`Process::start_base`], [`Process::copy_base`]), so a process's own
//! thread never copies more than a slice inside one tick window. The pages
//! are tracked from the first slice on; when the last slice is copied, the
//! pages written meanwhile are copied again, which makes the base exactly
//! the process's state at that call boundary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use wasmtime::{Extern, Memory};
use weft_abi::exports;
use xxhash_rust::xxh3::Xxh3;

use super::dirty::{DirtyTracking, PageTracker};
use super::image::SparseCopy;
use super::uffd::PAGE;
use super::{Link, MemoryImage, Snapshot, index_after};
use crate::process::Process;

/// Where a memory sits in a process: (instance, memory index).
type MemoryAt = (usize, u32);

/// Where a process's checkpoints stand.
pub(crate) enum Tracking {
    /// A base being copied slice by slice.
    Copying {
        link: Link,
        /// The memories, found once (each slice is copied on the
        /// process's own thread, between two calls).
        memories: Vec<(MemoryAt, Memory)>,
        trackers: BTreeMap<MemoryAt, PageTracker>,
        copies: BTreeMap<MemoryAt, SparseCopy>,
    },
    /// The base was taken; checkpoints are increments of this chain.
    Chained {
        link: Link,
        trackers: BTreeMap<MemoryAt, PageTracker>,
    },
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
    /// The next checkpoint of this process: its base (copied whole now, or
    /// finished if [`Process::start_base`] began copying it), or the pages
    /// written since the previous checkpoint.
    pub fn checkpoint(&mut self) -> Result<Snapshot> {
        if self.tracking.is_none() {
            self.start_base();
        }
        if self.copying_base() {
            self.copy_base(usize::MAX);
        }
        match self.tracking.take() {
            Some(Tracking::Copying {
                link,
                trackers,
                copies,
                ..
            }) => self.finish_base(link, trackers, copies),
            Some(Tracking::Chained { link, trackers }) => self.increment(link, trackers),
            None => unreachable!("start_base began a base"),
        }
    }

    /// Begins a base: from here on, writes are tracked, and
    /// [`Process::copy_base`] copies the memories a slice at a time.
    pub fn start_base(&mut self) {
        let chain = new_chain(self.name().as_str(), self.last_tag.map_or(0, |t| t.0));
        let link = Link {
            chain,
            index: 0,
            parent: None,
        };
        let memories = self.memories();
        let mut trackers = BTreeMap::new();
        let mut copies = BTreeMap::new();
        for (at, memory) in &memories {
            let data = memory.data(&self.store);
            trackers.insert(*at, PageTracker::begin(data));
            copies.insert(*at, SparseCopy::default());
        }
        self.tracking = Some(Tracking::Copying {
            link,
            memories,
            trackers,
            copies,
        });
    }

    /// Copies up to `budget` more bytes of a base begun with
    /// [`Process::start_base`]. True once the base is ready for
    /// [`Process::checkpoint`] to finish (or when none is being copied).
    pub fn copy_base(&mut self, budget: usize) -> bool {
        let Some(Tracking::Copying {
            memories,
            copies,
            trackers,
            ..
        }) = &mut self.tracking
        else {
            return true;
        };
        // Whole pages, so each slice can be marked clean as it is copied.
        let mut left = budget.checked_next_multiple_of(PAGE).unwrap_or(usize::MAX);
        for (at, memory) in memories.iter() {
            let data = memory.data(&self.store);
            let copy = copies.entry(*at).or_default();
            let start = copy.copied().min(data.len());
            let slice = start..start + left.min(data.len() - start);
            if let Some(tracker) = trackers.get_mut(at) {
                tracker.clean(data, slice.clone());
            }
            copy.copy_to(data, slice.end);
            left -= slice.len();
            if copy.copied() < data.len() {
                return false;
            }
        }
        true
    }

    /// True while a base is being copied slice by slice.
    pub fn copying_base(&self) -> bool {
        matches!(self.tracking, Some(Tracking::Copying { .. }))
    }

    /// True once this incarnation's base was taken: its next checkpoint is
    /// an increment.
    pub fn chained(&self) -> bool {
        matches!(self.tracking, Some(Tracking::Chained { .. }))
    }

    /// The base: the slices as copied, with every page written since the
    /// first slice copied again, so it is the state at this call boundary.
    fn finish_base(
        &mut self,
        link: Link,
        mut trackers: BTreeMap<MemoryAt, PageTracker>,
        mut copies: BTreeMap<MemoryAt, SparseCopy>,
    ) -> Result<Snapshot> {
        let snapshot = self.capture(link, |at, memory| {
            match (trackers.get_mut(&at), copies.remove(&at)) {
                (Some(tracker), Some(copy)) => copy.finish(memory, &tracker.take_written(memory)),
                _ => {
                    trackers.insert(at, PageTracker::start(memory));
                    MemoryImage::sparse_of(memory)
                }
            }
        })?;
        self.tracking = Some(Tracking::Chained { link, trackers });
        Ok(snapshot)
    }

    fn increment(
        &mut self,
        base: Link,
        mut trackers: BTreeMap<MemoryAt, PageTracker>,
    ) -> Result<Snapshot> {
        let link = Link {
            chain: base.chain,
            index: base.index + 1,
            parent: Some(base.index),
        };
        let snapshot = self.capture(link, |at, memory| match trackers.get_mut(&at) {
            Some(tracker) => MemoryImage::pages_of(memory, &tracker.take_written(memory)),
            None => {
                trackers.insert(at, PageTracker::start(memory));
                MemoryImage::sparse_of(memory)
            }
        })?;
        self.tracking = Some(Tracking::Chained { link, trackers });
        Ok(snapshot)
    }

    /// Every linear memory of the process, where it sits.
    fn memories(&mut self) -> Vec<(MemoryAt, Memory)> {
        let mut found = Vec::new();
        for (i, instance) in self.instances.clone().into_iter().enumerate() {
            for export in instance.exports(&mut self.store) {
                let index = index_after(export.name(), exports::SNAPSHOT_MEMORY_PREFIX);
                if let (Some(index), Extern::Memory(m)) = (index, export.into_extern()) {
                    found.push(((i, index), m));
                }
            }
        }
        found
    }

    /// How this process's writes are found, once it has been checkpointed.
    pub fn dirty_tracking(&self) -> Option<DirtyTracking> {
        let trackers = match self.tracking.as_ref()? {
            Tracking::Copying { trackers, .. } | Tracking::Chained { trackers, .. } => trackers,
        };
        trackers.values().next().map(PageTracker::way)
    }
}
