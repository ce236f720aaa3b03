//! Incremental checkpoints: a base, then only the pages written since the
//! previous checkpoint, applied in order to give back the process exactly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tempfile::tempdir;
use weft_manifest::ProcessSpec;
use weft_manifest::module::Files;
use weft_runtime::process::run_sync;
use weft_runtime::router::Router;
use weft_runtime::{
    ChainError, Link, MemoryImage, Node, Process, RuntimeConfig, Snapshot, SnapshotError, Tag,
    dirty_tracking,
};

/// Writes `WRITES` random words per tick anywhere in its memory (an LCG
/// in a global picks where), and grows its memory by a page every 7th
/// tick until it reaches its maximum. The data segment makes wasmtime map
/// the memory from an image, the case write-protection finds hardest.
const SCRIBBLER: &str = r#"(module
  (memory PAGES MAXPAGES)
  (data (i32.const 0) "scribble")
  (global $x (mut i64) (i64.const 88172645463325252))
  (global $ticks (mut i32) (i32.const 0))
  (func (export "weft_tick") (param i64) (local $i i32) (local $bytes i64)
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (if (i32.eqz (i32.rem_u (global.get $ticks) (i32.const 7)))
      (then (drop (memory.grow (i32.const 1)))))
    (local.set $bytes (i64.extend_i32_u (i32.mul (memory.size) (i32.const 65536))))
    (loop $l
      (global.set $x (i64.add (i64.mul (global.get $x) (i64.const 6364136223846793005))
                              (i64.const 1442695040888963407)))
      (i64.store
        (i32.wrap_i64 (i64.and (i64.rem_u (i64.shr_u (global.get $x) (i64.const 17))
                                          (i64.sub (local.get $bytes) (i64.const 8)))
                               (i64.const -8)))
        (global.get $x))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const WRITES))))))"#;

struct Scribbler {
    node: Node,
    spec: ProcessSpec,
    next: u64,
}

impl Scribbler {
    fn new(dir: &std::path::Path, pages: u32, writes: u32) -> Scribbler {
        let text = SCRIBBLER
            .replace("MAXPAGES", &(pages + 4).to_string())
            .replace("PAGES", &pages.to_string())
            .replace("WRITES", &writes.to_string());
        let path = write(dir, &format!("scribbler{pages}.wat"), &text);
        let mut spec = rt_spec("scribbler", &path, Duration::from_millis(1), u64::MAX / 4);
        spec.memory = (pages as u64 + 16) * 65536;
        let config = RuntimeConfig::default()
            .max_processes(4)
            .max_memory(spec.memory)
            .cache_dir(None);
        Scribbler {
            node: Node::new(&config).unwrap(),
            spec,
            next: 0,
        }
    }

    fn start(&self) -> Process {
        instantiate(&self.node, self.spec.clone()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn restore(&self, snapshot: &Snapshot) -> anyhow::Result<Process> {
        let spec = Arc::new(self.spec.clone());
        let program = Arc::new(self.node.prepare(spec.clone(), &Files)?);
        run_sync(Process::restore(program, self.node.env(&spec, 1), snapshot))
    }

    /// Runs `n` more ticks of `p` from where the last call left off.
    fn ticks(&mut self, p: &mut Process, n: u64) {
        let router = Router::default();
        for k in self.next..self.next + n {
            let tag = Tag(k * 1_000_000);
            let report = run_sync(p.tick(tag)).unwrap();
            p.publish(&router, tag, report.outputs);
        }
        self.next += n;
    }
}

/// The same state, wherever it sits in a chain and however its memories
/// are kept (every byte, or sparse).
fn same_state(a: &Snapshot, b: &Snapshot) -> bool {
    let unlinked = |s: &Snapshot| {
        let mut s = Snapshot {
            link: Link::ALONE,
            ..s.clone()
        };
        for instance in &mut s.instances {
            for image in instance.memories.values_mut() {
                *image = MemoryImage::Full(image.to_bytes().expect("a whole memory"));
            }
        }
        s
    };
    unlinked(a) == unlinked(b)
}

/// How many 4 KiB pages of a whole snapshot's memories hold a non-zero
/// byte.
fn nonzero_pages(s: &Snapshot) -> u64 {
    let page_count = |image: &MemoryImage| {
        let bytes = image.to_bytes().expect("a whole memory");
        bytes
            .chunks(4096)
            .filter(|p| p.iter().any(|b| *b != 0))
            .count() as u64
    };
    s.instances
        .iter()
        .flat_map(|i| i.memories.values())
        .map(page_count)
        .sum()
}

/// Over a dozen checkpoints with random writes and growing memory, the base
/// plus every increment, each sent encoded, equals the process's full
/// snapshot at every step, and a process restored from the chain goes on
/// exactly as the original does.
#[test]
fn base_plus_increments_restores_bit_identically_at_64k_1m_and_64m() {
    let dir = tempdir().unwrap();
    eprintln!("dirty-page tracking here: {}", dirty_tracking());
    for (pages, writes) in [(1u32, 20u32), (16, 50), (1024, 200)] {
        let mut s = Scribbler::new(dir.path(), pages, writes);
        let mut original = s.start();
        s.ticks(&mut original, 3);
        let base = original.checkpoint().unwrap();
        assert!(base.is_base());
        // The base comes sparse: it carries the pages written, not the
        // memory (the scribbler leaves most pages zero).
        let mut sparse = Snapshot::decode(&base.encode()).unwrap();
        let written = nonzero_pages(&original.snapshot().unwrap());
        assert_eq!(
            sparse.carried_bytes(),
            written * 4096,
            "{pages} pages: the base carries exactly its non-zero pages"
        );
        if pages > 1 {
            assert!(
                written < pages as u64 * 16,
                "{pages} pages: most pages are zero"
            );
        }
        // The same chain with every byte of its memories, as a holder of a
        // base taken whole would keep it.
        let mut chain = sparse.clone();
        for instance in &mut chain.instances {
            for image in instance.memories.values_mut() {
                *image = MemoryImage::Full(image.to_bytes().expect("a whole memory"));
            }
        }
        let mut carried = 0;
        for step in 1..=12 {
            s.ticks(&mut original, 3);
            let increment = original.checkpoint().unwrap();
            assert_eq!(increment.link.parent, Some(step - 1), "{pages} pages");
            carried += increment.carried_bytes();
            chain
                .apply(Snapshot::decode(&increment.encode()).unwrap())
                .unwrap();
            sparse
                .apply(Snapshot::decode(&increment.encode()).unwrap())
                .unwrap();
            let now = original.snapshot().unwrap();
            assert!(
                same_state(&chain, &now),
                "{pages} pages, step {step}: base + increments differ from the process"
            );
            assert!(
                same_state(&sparse, &now),
                "{pages} pages, step {step}: the sparse chain differs from the process"
            );
        }
        let memory = chain.memory_bytes();
        assert!(memory > pages as u64 * 65536, "the memory grew");
        // Each increment carries at most the pages its 3 ticks wrote, and
        // the 16 a growth adds: the tracking misses nothing and adds
        // nothing beyond them.
        let bound = 12 * (3 * writes as u64 + 16) * 4096;
        assert!(
            carried <= bound,
            "{pages} pages: increments carried {carried} bytes, more than the {bound} written"
        );
        eprintln!(
            "{pages} pages: 12 increments carried {carried} bytes; memory {memory}; tracked by {:?}",
            original.dirty_tracking()
        );

        let mut restored = s.restore(&chain).unwrap();
        let mut from_sparse = s
            .restore(&Snapshot::decode(&sparse.encode()).unwrap())
            .unwrap();
        let at = s.next;
        s.ticks(&mut original, 5);
        s.next = at;
        s.ticks(&mut restored, 5);
        s.next = at;
        s.ticks(&mut from_sparse, 5);
        assert_eq!(
            restored.chain(),
            original.chain(),
            "{pages} pages: continuation differs"
        );
        assert_eq!(
            from_sparse.chain(),
            original.chain(),
            "{pages} pages: continuation from the sparse chain differs"
        );
    }
}

/// Two increments not sent in time merge into one that does the work of
/// both; a link applied out of turn is refused and changes nothing.
#[test]
fn increments_merge_and_a_gap_is_refused() {
    let dir = tempdir().unwrap();
    let mut s = Scribbler::new(dir.path(), 4, 30);
    let mut p = s.start();
    s.ticks(&mut p, 2);
    let base = p.checkpoint().unwrap();
    s.ticks(&mut p, 2);
    let first = p.checkpoint().unwrap();
    s.ticks(&mut p, 2);
    let second = p.checkpoint().unwrap();

    let mut stepwise = base.clone();
    stepwise.apply(first.clone()).unwrap();
    stepwise.apply(second.clone()).unwrap();
    let mut merged = first.clone();
    merged.apply(second.clone()).unwrap();
    assert_eq!(
        merged.link.parent,
        Some(0),
        "the merge applies where the first did"
    );
    let mut at_once = base.clone();
    at_once.apply(merged).unwrap();
    assert_eq!(at_once, stepwise);
    assert!(same_state(&stepwise, &p.snapshot().unwrap()));

    let mut gapped = base.clone();
    let refused = gapped.apply(second);
    assert!(
        matches!(
            refused,
            Err(ChainError::Gap {
                have: 0,
                got: 2,
                wants: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(gapped, base, "a refused link changes nothing");
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("chain broken"), "{message}");
}

/// A corrupt increment is refused when decoded; the chain up to it is
/// still good, and restores.
#[test]
fn a_corrupt_increment_is_refused_and_the_previous_chain_restores() {
    let dir = tempdir().unwrap();
    let mut s = Scribbler::new(dir.path(), 4, 30);
    let mut p = s.start();
    s.ticks(&mut p, 2);
    let mut chain = p.checkpoint().unwrap();
    s.ticks(&mut p, 2);
    chain.apply(p.checkpoint().unwrap()).unwrap();
    let good = p.snapshot().unwrap();
    s.ticks(&mut p, 2);
    let mut bytes = p.checkpoint().unwrap().encode();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    assert!(matches!(
        Snapshot::decode(&bytes),
        Err(SnapshotError::Checksum { .. })
    ));
    assert!(same_state(&chain, &good));
    let restored = s.restore(&chain);
    assert!(restored.is_ok(), "{:?}", restored.err());
}

/// An increment alone is not a process: restoring one is refused with a
/// reason, before anything runs.
#[test]
fn an_increment_alone_is_not_restored() {
    let dir = tempdir().unwrap();
    let mut s = Scribbler::new(dir.path(), 2, 5);
    let mut p = s.start();
    p.checkpoint().unwrap();
    s.ticks(&mut p, 1);
    let increment = p.checkpoint().unwrap();
    let refused = s.restore(&increment).err().expect("refused");
    assert!(
        refused.to_string().contains("is an increment"),
        "{refused:#}"
    );
}

/// A base copied a slice at a time while the process keeps running (and
/// writing, and growing) is exactly its state when the last slice is
/// done, and the chain goes on from it.
#[test]
fn a_base_copied_in_slices_between_ticks_is_exact() {
    let dir = tempdir().unwrap();
    let mut s = Scribbler::new(dir.path(), 64, 40);
    let mut p = s.start();
    s.ticks(&mut p, 2);
    p.start_base();
    let mut slices = 0;
    while !p.copy_base(256 << 10) {
        slices += 1;
        s.ticks(&mut p, 1);
    }
    assert!(slices >= 15, "4 MiB in 256 KiB slices took {slices} slices");
    assert!(p.copying_base());
    let mut chain = p.checkpoint().unwrap();
    assert!(chain.is_base() && !p.copying_base());
    assert!(
        same_state(&chain, &p.snapshot().unwrap()),
        "the base is the state now"
    );
    s.ticks(&mut p, 3);
    chain.apply(p.checkpoint().unwrap()).unwrap();
    assert!(same_state(&chain, &p.snapshot().unwrap()));
}
