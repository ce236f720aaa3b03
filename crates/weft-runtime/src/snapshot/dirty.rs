//! Which pages of a linear memory were written since the last checkpoint.
//!
//! Two ways, picked at run time per memory: the kernel's write-protection
//! (`uffd.rs`), which costs a minor fault on the first write of a page and
//! a ~0.1 ms scan per checkpoint, or hashing every page at each checkpoint
//! and comparing with the hashes of the previous one, which works anywhere
//! and costs time in proportion to the memory's size. Either way a page
//! reported clean is one whose bytes did not change; a page reported
//! written may not have (hashes see a write of the same bytes as none, the
//! kernel sees it as a write), which costs bytes, never correctness.

use std::sync::OnceLock;

pub use weft_types::DirtyTracking;
use xxhash_rust::xxh3::xxh3_64;

use super::uffd::{PAGE, Protected};

/// What this machine's kernel allows, found once by protecting a scratch
/// page and scanning it.
pub fn dirty_tracking() -> DirtyTracking {
    static FOUND: OnceLock<DirtyTracking> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let mut scratch = vec![0u8; 2 * PAGE];
        let offset = scratch.as_ptr().align_offset(PAGE);
        let page = &mut scratch[offset..offset + PAGE];
        let works = Protected::new(page.as_ptr(), PAGE).and_then(|mut p| {
            page[0] = 1;
            p.take_written()
        });
        match works {
            Ok(written) if written == [0] => DirtyTracking::WriteProtect,
            _ => DirtyTracking::PageHash,
        }
    })
}

/// Tracks one linear memory.
pub(crate) struct PageTracker {
    /// Where the memory was when tracking began: a memory that moved (an
    /// engine without the pooling allocator may move one as it grows) is
    /// reported written in full, and tracked afresh.
    base: usize,
    way: Way,
}

enum Way {
    Kernel(Protected),
    /// Per page, the hash of its bytes at the last checkpoint.
    Hashes(Vec<u64>),
}

#[cfg(test)]
fn hashes(memory: &[u8]) -> Vec<u64> {
    memory.chunks(PAGE).map(xxh3_64).collect()
}

fn pages_in(len: usize) -> u32 {
    len.div_ceil(PAGE) as u32
}

impl PageTracker {
    /// Starts tracking `memory` as it is now: every page counts as clean.
    pub(crate) fn start(memory: &[u8]) -> PageTracker {
        let mut tracker = PageTracker::begin(memory);
        tracker.clean(memory, 0..memory.len());
        tracker
    }

    /// Starts tracking `memory` with every page counted as written until
    /// [`PageTracker::clean`] covers it (a base copied in slices cleans
    /// each slice as it copies it).
    pub(crate) fn begin(memory: &[u8]) -> PageTracker {
        let aligned =
            (memory.as_ptr() as usize).is_multiple_of(PAGE) && memory.len().is_multiple_of(PAGE);
        let kernel =
            (aligned && !memory.is_empty() && dirty_tracking() == DirtyTracking::WriteProtect)
                .then(|| Protected::new(memory.as_ptr(), memory.len()).ok())
                .flatten();
        PageTracker {
            base: memory.as_ptr() as usize,
            way: kernel.map_or_else(
                || Way::Hashes(vec![0; pages_in(memory.len()) as usize]),
                Way::Kernel,
            ),
        }
    }

    /// Counts the pages of `range` (page-aligned, within `memory`) as clean
    /// from here on.
    pub(crate) fn clean(&mut self, memory: &[u8], range: std::ops::Range<usize>) {
        match &mut self.way {
            Way::Kernel(protected) => {
                if let Err(e) = protected.protect(range.start, range.len()) {
                    tracing::warn!(
                        "kernel dirty-page tracking failed ({e}); hashing pages from now on"
                    );
                    self.way = Way::Hashes(vec![0; pages_in(memory.len()) as usize]);
                    self.clean(memory, range);
                }
            }
            Way::Hashes(hashes) => {
                hashes.resize(hashes.len().max(pages_in(memory.len()) as usize), 0);
                let first = range.start / PAGE;
                for (i, page) in memory[range].chunks(PAGE).enumerate() {
                    hashes[first + i] = xxh3_64(page);
                }
            }
        }
    }

    pub(crate) fn way(&self) -> DirtyTracking {
        match self.way {
            Way::Kernel(_) => DirtyTracking::WriteProtect,
            Way::Hashes(_) => DirtyTracking::PageHash,
        }
    }

    /// The pages of `memory` (the tracked memory as it is now, perhaps
    /// grown) written since tracking began or since the last call, in
    /// ascending order. From here on every page counts as clean again.
    pub(crate) fn take_written(&mut self, memory: &[u8]) -> Vec<u32> {
        if memory.as_ptr() as usize != self.base {
            *self = PageTracker::start(memory);
            return (0..pages_in(memory.len())).collect();
        }
        match &mut self.way {
            Way::Kernel(protected) => match kernel_written(protected, memory.len()) {
                Ok(written) => written,
                Err(e) => {
                    tracing::warn!(
                        "kernel dirty-page tracking failed ({e}); hashing pages from now on"
                    );
                    self.way = Way::Hashes(vec![0; pages_in(memory.len()) as usize]);
                    self.clean(memory, 0..memory.len());
                    (0..pages_in(memory.len())).collect()
                }
            },
            Way::Hashes(previous) => hashed_written(previous, memory),
        }
    }
}

/// What the kernel saw written, plus every page the memory grew by (they
/// were written, if at all, before the kernel was told to watch them).
fn kernel_written(protected: &mut Protected, len: usize) -> std::io::Result<Vec<u32>> {
    let mut written = protected.take_written()?;
    let tracked = protected.len();
    if len > tracked {
        protected.grow(len)?;
        written.extend(pages_in(tracked)..pages_in(len));
    }
    Ok(written)
}

fn hashed_written(previous: &mut Vec<u64>, memory: &[u8]) -> Vec<u32> {
    let mut written = Vec::new();
    for (i, page) in memory.chunks(PAGE).enumerate() {
        let hash = xxh3_64(page);
        match previous.get_mut(i) {
            Some(old) if *old == hash => {}
            Some(old) => {
                *old = hash;
                written.push(i as u32);
            }
            None => {
                previous.push(hash);
                written.push(i as u32);
            }
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page-aligned buffer standing in for a linear memory.
    struct Aligned(Vec<u8>, usize);

    impl Aligned {
        fn new(pages: usize) -> Aligned {
            let buf = vec![0u8; (pages + 1) * PAGE];
            let offset = buf.as_ptr().align_offset(PAGE);
            Aligned(buf, offset)
        }
        fn memory(&mut self, pages: usize) -> &mut [u8] {
            &mut self.0[self.1..self.1 + pages * PAGE]
        }
    }

    fn check(tracker: &mut PageTracker, memory: &mut [u8]) {
        assert!(
            tracker.take_written(memory).is_empty(),
            "nothing written yet"
        );
        memory[3 * PAGE + 17] = 9;
        memory[7 * PAGE] = 1;
        assert_eq!(tracker.take_written(memory), vec![3, 7]);
        assert!(tracker.take_written(memory).is_empty(), "clean again");
        memory[0] = 4;
        assert_eq!(tracker.take_written(memory), vec![0]);
    }

    #[test]
    fn hashes_find_exactly_the_changed_pages_and_the_grown_ones() {
        let mut buf = Aligned::new(16);
        let mut tracker = PageTracker {
            base: buf.memory(8).as_ptr() as usize,
            way: Way::Hashes(hashes(buf.memory(8))),
        };
        check(&mut tracker, buf.memory(8));
        let grown = buf.memory(10);
        grown[9 * PAGE] = 2;
        assert_eq!(tracker.take_written(grown), vec![8, 9]);
    }

    /// Where the kernel allows it (Linux ≥ 6.7 with userfaultfd), the
    /// kernel's way is picked and finds exactly the written pages; where it
    /// does not, the node says it hashes instead.
    #[test]
    fn the_kernel_s_way_is_picked_where_it_works_and_is_exact() {
        let mut buf = Aligned::new(16);
        let mut tracker = PageTracker::start(buf.memory(8));
        assert_eq!(tracker.way(), dirty_tracking());
        eprintln!("dirty-page tracking here: {}", dirty_tracking());
        check(&mut tracker, buf.memory(8));
        let grown = buf.memory(10);
        assert_eq!(tracker.take_written(grown), vec![8, 9]);
        grown[9 * PAGE + 1] = 1;
        assert_eq!(tracker.take_written(grown), vec![9]);
    }

    /// A tracker begun with every page written counts a page clean once
    /// its slice is cleaned, and sees writes to it from then on.
    #[test]
    fn pages_cleaned_slice_by_slice_are_tracked_from_then_on() {
        let mut buf = Aligned::new(16);
        let memory = buf.memory(8);
        let mut tracker = PageTracker::begin(memory);
        tracker.clean(memory, 0..4 * PAGE);
        memory[PAGE] = 1;
        tracker.clean(memory, 4 * PAGE..8 * PAGE);
        memory[6 * PAGE] = 1;
        // A base copied to its end cleans an empty slice last.
        tracker.clean(memory, 8 * PAGE..8 * PAGE);
        assert_eq!(tracker.way(), dirty_tracking());
        assert_eq!(tracker.take_written(memory), vec![1, 6]);
        assert!(tracker.take_written(memory).is_empty());
    }

    #[test]
    fn a_moved_memory_is_written_in_full() {
        let mut a = Aligned::new(4);
        let mut b = Aligned::new(4);
        let mut tracker = PageTracker::start(a.memory(4));
        assert_eq!(tracker.take_written(b.memory(4)), vec![0, 1, 2, 3]);
        assert!(tracker.take_written(b.memory(4)).is_empty());
    }
}
