//! Memory images and checkpoint chains: a snapshot whose memories are
//! whole (a *base*), or only the pages written since an earlier snapshot
//! of the same chain (an *increment*).
//!
//! Every snapshot names its place in a chain with a [`Link`]: the chain
//! (one per base a process took), its index, and for an increment the index
//! it applies to. Applying an increment to anything else — a gap left by a
//! lost or refused link, another chain — is refused, so a chain is either
//! restored exactly or not at all. Host state and globals are small and
//! travel whole in every link; only memories are split into pages.
//!
//! Two increments of a chain merge into one (the newer pages win): a sender
//! that could not send an increment before the next one was taken sends the
//! two as one, and the chain stays whole.

use serde::{Deserialize, Serialize};

use super::uffd::PAGE;
use super::{InstanceState, Snapshot};

/// The contents of one linear memory in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryImage {
    /// Every byte.
    Full(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The memory is `len` bytes long; the pages listed (4 KiB each, in
    /// ascending order, their bytes one after another in `data`) changed.
    Pages {
        len: u64,
        pages: Vec<u32>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Every byte too, kept sparse: the pages listed (laid out as in
    /// `Pages`) hold `data`, every other page is zero. What a holder keeps
    /// and sends: most of a small process's memory is zero pages, which a
    /// whole copy would hold in RAM and on the wire for nothing.
    Sparse {
        len: u64,
        pages: Vec<u32>,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

impl MemoryImage {
    /// The pages `written` of `memory`, copied.
    pub(crate) fn pages_of(memory: &[u8], written: &[u32]) -> MemoryImage {
        let mut data = Vec::with_capacity(written.len() * PAGE);
        for &page in written {
            let start = page as usize * PAGE;
            data.extend_from_slice(&memory[start..(start + PAGE).min(memory.len())]);
        }
        MemoryImage::Pages {
            len: memory.len() as u64,
            pages: written.to_vec(),
            data,
        }
    }

    /// Bytes of memory content carried.
    pub fn carried(&self) -> u64 {
        match self {
            MemoryImage::Full(bytes) => bytes.len() as u64,
            MemoryImage::Pages { data, .. } | MemoryImage::Sparse { data, .. } => data.len() as u64,
        }
    }

    /// The memory's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            MemoryImage::Full(bytes) => bytes.len() as u64,
            MemoryImage::Pages { len, .. } | MemoryImage::Sparse { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the image has the whole memory (every byte, or sparse).
    pub fn is_whole(&self) -> bool {
        !matches!(self, MemoryImage::Pages { .. })
    }

    /// The whole memory expanded into bytes, if this image has it.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        let mut bytes = vec![0; self.len() as usize];
        self.write_whole(&mut bytes).then_some(bytes)
    }

    /// Writes the whole memory over `memory` (exactly [`Self::len`] bytes
    /// long). A page is written only if its bytes differ, so restoring
    /// leaves the pages that are zero in both untouched (not resident). False,
    /// and nothing written, for an increment.
    pub fn write_whole(&self, memory: &mut [u8]) -> bool {
        match self {
            // Page by page, only where the bytes differ: a fresh memory
            // reads as zeros without being resident, and stays so where
            // the image is zero too.
            MemoryImage::Full(bytes) => {
                for (target, source) in memory.chunks_mut(PAGE).zip(bytes.chunks(PAGE)) {
                    if target != source {
                        target.copy_from_slice(source);
                    }
                }
            }
            MemoryImage::Pages { .. } => return false,
            MemoryImage::Sparse { .. } => {
                let mut listed = self.each_page().peekable();
                for (page, target) in memory.chunks_mut(PAGE).enumerate() {
                    match listed.next_if(|(p, _)| *p as usize == page) {
                        Some((_, bytes)) => target.copy_from_slice(bytes),
                        None if target.iter().any(|b| *b != 0) => target.fill(0),
                        None => {}
                    }
                }
            }
        }
        true
    }

    /// A whole image made sparse: its zero pages dropped. An increment is
    /// left as it is.
    pub fn compact(&mut self) {
        if let MemoryImage::Full(bytes) = self {
            *self = MemoryImage::sparse_of(bytes);
        }
    }

    /// `memory`, every byte of it, kept sparse.
    pub(crate) fn sparse_of(memory: &[u8]) -> MemoryImage {
        SparseCopy::default().finish(memory, &[])
    }

    /// Each listed page with its bytes (none for a `Full` image).
    fn each_page(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let (pages, data): (&[u32], &[u8]) = match self {
            MemoryImage::Pages { pages, data, .. } | MemoryImage::Sparse { pages, data, .. } => {
                (pages, data)
            }
            MemoryImage::Full(_) => (&[], &[]),
        };
        let mut offset = 0;
        pages.iter().map(move |&page| {
            let len = PAGE.min(data.len() - offset);
            let bytes = &data[offset..offset + len];
            offset += len;
            (page, bytes)
        })
    }

    /// Checks the layout an image's decoder cannot: pages in order,
    /// inside the memory, and exactly as many bytes as they need.
    pub(crate) fn check(&self) -> Result<(), ChainError> {
        let (MemoryImage::Pages { len, pages, data } | MemoryImage::Sparse { len, pages, data }) =
            self
        else {
            return Ok(());
        };
        let in_order = pages.windows(2).all(|w| w[0] < w[1]);
        let needed = pages.iter().try_fold(0u64, |sum, &page| {
            let left = len
                .checked_sub(page as u64 * PAGE as u64)
                .filter(|&l| l > 0)?;
            Some(sum + left.min(PAGE as u64))
        });
        if !in_order || needed != Some(data.len() as u64) {
            return Err(ChainError::Malformed);
        }
        Ok(())
    }

    /// Lays `newer` over this image: what `newer` says changed replaces
    /// what is here. A whole image on top of anything replaces it.
    pub(crate) fn overlay(&mut self, newer: &MemoryImage) {
        match (&mut *self, newer) {
            (_, MemoryImage::Full(_) | MemoryImage::Sparse { .. }) => *self = newer.clone(),
            (MemoryImage::Full(bytes), MemoryImage::Pages { len, .. }) => {
                bytes.resize(*len as usize, 0);
                for (page, data) in newer.each_page() {
                    let start = page as usize * PAGE;
                    bytes[start..start + data.len()].copy_from_slice(data);
                }
            }
            (MemoryImage::Sparse { .. }, MemoryImage::Pages { len, .. }) => {
                if !self.overwrite_listed(newer) {
                    let (pages, data) = self.merged(newer);
                    *self = MemoryImage::Sparse {
                        len: *len,
                        pages,
                        data,
                    };
                }
            }
            (MemoryImage::Pages { .. }, MemoryImage::Pages { len, .. }) => {
                let (pages, data) = self.merged(newer);
                *self = MemoryImage::Pages {
                    len: *len,
                    pages,
                    data,
                };
            }
        }
    }

    /// Overwrites in place the pages of `newer` (and takes its length), if
    /// this sparse image lists every one of them already (the usual case: a process keeps
    /// writing the pages it wrote before), so applying an increment costs
    /// its own size, not the holder's. False, and nothing changed,
    /// otherwise.
    fn overwrite_listed(&mut self, newer: &MemoryImage) -> bool {
        let MemoryImage::Sparse { len, pages, data } = self else {
            return false;
        };
        let spans: Option<Vec<usize>> = newer
            .each_page()
            .map(|(page, bytes)| {
                let at = pages.binary_search(&page).ok()?;
                let start = at * PAGE;
                (data.len().saturating_sub(start).min(PAGE) == bytes.len()).then_some(start)
            })
            .collect();
        let Some(spans) = spans else {
            return false;
        };
        for (start, (_, bytes)) in spans.into_iter().zip(newer.each_page()) {
            data[start..start + bytes.len()].copy_from_slice(bytes);
        }
        *len = newer.len();
        true
    }

    /// The pages listed in either image (the newer's bytes win where both
    /// list one), and their bytes one after another: one pass over both,
    /// as both list their pages in ascending order.
    fn merged(&self, newer: &MemoryImage) -> (Vec<u32>, Vec<u8>) {
        let mut pages = Vec::new();
        let mut data = Vec::with_capacity((self.carried() + newer.carried()) as usize);
        let mut older = self.each_page().peekable();
        let mut newer = newer.each_page().peekable();
        loop {
            let next = match (older.peek().map(|p| p.0), newer.peek().map(|p| p.0)) {
                (None, None) => break,
                (Some(old), Some(new)) if old < new => older.next(),
                (Some(old), Some(new)) => {
                    if old == new {
                        older.next();
                    }
                    newer.next()
                }
                (Some(_), None) => older.next(),
                (None, Some(_)) => newer.next(),
            };
            if let Some((page, bytes)) = next {
                pages.push(page);
                data.extend_from_slice(bytes);
            }
        }
        (pages, data)
    }
}

/// A whole memory copied into a sparse image a range at a time, its zero
/// pages skipped: copying a mostly untouched memory allocates what the
/// memory holds, not what it spans. (A node starting a thousand small
/// processes otherwise held a thousand memory-sized copies at once, and
/// its allocator kept that peak resident long after they were freed.)
#[derive(Debug, Default)]
pub(crate) struct SparseCopy {
    /// Bytes of the memory, from its start, copied so far.
    copied: usize,
    pages: Vec<u32>,
    data: Vec<u8>,
}

impl SparseCopy {
    /// Bytes of the memory, from its start, copied so far.
    pub(crate) fn copied(&self) -> usize {
        self.copied
    }

    /// Copies the pages of `memory` from where the copy stands up to `end`
    /// (a multiple of the page size, or the memory's end).
    pub(crate) fn copy_to(&mut self, memory: &[u8], end: usize) {
        let end = end.min(memory.len());
        for start in (self.copied..end).step_by(PAGE) {
            let page = &memory[start..(start + PAGE).min(memory.len())];
            if !is_zero(page) {
                self.pages.push((start / PAGE) as u32);
                self.data.extend_from_slice(page);
            }
        }
        self.copied = self.copied.max(end);
    }

    /// The image of `memory`: what was copied, the rest of it, and the
    /// pages `written` since they were copied, copied again.
    pub(crate) fn finish(mut self, memory: &[u8], written: &[u32]) -> MemoryImage {
        self.copy_to(memory, memory.len());
        let mut image = MemoryImage::Sparse {
            len: memory.len() as u64,
            pages: self.pages,
            data: self.data,
        };
        if !written.is_empty() {
            image.overlay(&MemoryImage::pages_of(memory, written));
        }
        image
    }
}

/// True when `bytes` are all zero. An OR over every byte, not a search
/// for the first non-zero one, so the compiler can do it a vector at a
/// time.
fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0, |acc, b| acc | b) == 0
}

/// A snapshot's place in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The chain: a fresh id for every base.
    pub chain: u64,
    /// 0 for the base, then one more per checkpoint.
    pub index: u32,
    /// For an increment: the index of the snapshot it applies to. `None`:
    /// every memory is whole, and the snapshot stands alone.
    pub parent: Option<u32>,
}

impl Link {
    /// A snapshot outside any chain (a final snapshot, a test's).
    pub const ALONE: Link = Link {
        chain: 0,
        index: 0,
        parent: None,
    };
}

/// Why an increment cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "checkpoint chain broken: have link {have} of chain {have_chain:016x}, got link {got} (for link {wants}) of chain {got_chain:016x}"
    )]
    Gap {
        have_chain: u64,
        have: u32,
        got_chain: u64,
        got: u32,
        wants: u32,
    },
    #[error("checkpoint increment does not fit its base: {0}")]
    Mismatch(String),
    #[error("checkpoint pages are malformed (out of order, outside memory, or of the wrong size)")]
    Malformed,
}

impl Snapshot {
    /// True when every memory is whole: the snapshot restores on its own.
    pub fn is_base(&self) -> bool {
        self.link.parent.is_none()
    }

    /// Applies `next`, the following link of this snapshot's chain (or a
    /// base, which replaces it). Applied to a base, the result is the base
    /// of `next`'s place in the chain; applied to an increment, it is one
    /// increment doing the work of both (what a sender sends when it could
    /// not send the first before the second was taken). On error nothing
    /// changed.
    pub fn apply(&mut self, next: Snapshot) -> Result<(), ChainError> {
        let Some(wants) = next.link.parent else {
            *self = next;
            return Ok(());
        };
        if self.link.chain != next.link.chain || self.link.index != wants {
            return Err(ChainError::Gap {
                have_chain: self.link.chain,
                have: self.link.index,
                got_chain: next.link.chain,
                got: next.link.index,
                wants,
            });
        }
        self.check_fits(&next)?;
        let mut instances = std::mem::take(&mut self.instances);
        for (mine, theirs) in instances.iter_mut().zip(&next.instances) {
            for (index, image) in &theirs.memories {
                if let Some(memory) = mine.memories.get_mut(index) {
                    memory.overlay(image);
                }
            }
            mine.globals = theirs.globals.clone();
        }
        let parent = self.link.parent;
        *self = Snapshot {
            instances,
            link: Link {
                parent,
                ..next.link
            },
            ..next
        };
        Ok(())
    }

    fn check_fits(&self, next: &Snapshot) -> Result<(), ChainError> {
        let mismatch = |why: String| Err(ChainError::Mismatch(why));
        if self.instances.len() != next.instances.len() {
            return mismatch(format!(
                "{} module instances, the base has {}",
                next.instances.len(),
                self.instances.len()
            ));
        }
        for (mine, theirs) in self.instances.iter().zip(&next.instances) {
            if mine.digest != theirs.digest {
                return mismatch(format!(
                    "module {} where the base has {}",
                    theirs.digest, mine.digest
                ));
            }
            for (index, image) in &theirs.memories {
                image.check()?;
                let Some(before) = mine.memories.get(index).map(MemoryImage::len) else {
                    return mismatch(format!("memory {index}, which the base does not have"));
                };
                if image.len() < before {
                    return mismatch(format!(
                        "memory {index} shrank from {before} to {} bytes",
                        image.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl InstanceState {
    /// Bytes of memory content carried.
    pub fn carried(&self) -> u64 {
        self.memories.values().map(MemoryImage::carried).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory of `n` pages, page `i` filled with `fill(i)`.
    fn memory(n: usize, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        (0..n).flat_map(|i| vec![fill(i); PAGE]).collect()
    }

    #[test]
    fn a_sparse_copy_skips_zero_pages_and_restores_every_byte() {
        let bytes = memory(8, |i| if i % 3 == 0 { i as u8 + 1 } else { 0 });
        let mut copy = SparseCopy::default();
        copy.copy_to(&bytes, 2 * PAGE);
        copy.copy_to(&bytes, 5 * PAGE);
        assert_eq!(copy.copied(), 5 * PAGE);
        let image = copy.finish(&bytes, &[]);
        assert_eq!(image.carried(), 3 * PAGE as u64, "pages 0, 3 and 6");
        assert_eq!(image.to_bytes().unwrap(), bytes);
    }

    /// Pages written after they were copied, listed or not, before, between
    /// and after the listed ones, end up with their new bytes.
    #[test]
    fn pages_written_during_a_copy_are_merged_in_order() {
        let before = memory(8, |i| if i == 2 || i == 5 { 9 } else { 0 });
        let mut copy = SparseCopy::default();
        copy.copy_to(&before, 8 * PAGE);
        let after = memory(8, |i| match i {
            0 | 3 | 5 | 7 => i as u8 + 10,
            2 => 9,
            _ => 0,
        });
        let image = copy.finish(&after, &[0, 3, 5, 7]);
        image.check().unwrap();
        assert_eq!(image.to_bytes().unwrap(), after);
    }
}
