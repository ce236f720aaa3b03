//! Snapshots of a reactor process at a tick or message boundary, and
//! restoring them into a fresh instance.
//!
//! A snapshot holds all the state that decides what a process does next:
//! every linear memory and mutable global of every module in its store
//! (reachable because the loader exported them), and the host state: kv,
//! PRNG position, mailbox, sequence number, hash chain, opened devices (with
//! the model state of simulated ones) and the last completed tag.
//!
//! On disk and on the wire a snapshot is a small header (magic, format
//! version, body length, CRC-32 of the body) followed by the body in
//! postcard. Decoding checks each of these in turn, so a truncated,
//! corrupted or newer snapshot is refused with a reason instead of being
//! restored into a process that would then misbehave.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use wasmtime::{Extern, Instance, Store, Val};
use weft_abi::exports;

use weft_types::{ModuleDigest, ProcessName, Tag};

use crate::host::Host;
use crate::inbox::InboxState;
use crate::process::{Process, ProcessEnv};
use crate::program::Program;
use crate::types::HashChain;

mod checkpoint;
mod dirty;
mod image;
mod uffd;

pub(crate) use checkpoint::Tracking;
pub use dirty::{DirtyTracking, dirty_tracking};
pub use image::{ChainError, Link, MemoryImage};

const MAGIC: &[u8; 8] = b"WEFTSNAP";
pub const FORMAT_VERSION: u32 = 4;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    V128(u128),
}

/// The state of one module instance of the process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub digest: ModuleDigest,
    /// Memories by index (`weft:memory:<i>`).
    pub memories: BTreeMap<u32, MemoryImage>,
    /// Mutable globals by index (`weft:global:<i>`).
    pub globals: BTreeMap<u32, GlobalValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub process: ProcessName,
    /// Where this snapshot sits in its chain of checkpoints.
    pub link: Link,
    pub last_tag: Option<Tag>,
    pub instances: Vec<InstanceState>,
    pub kv: BTreeMap<Vec<u8>, Vec<u8>>,
    pub rng_seed: [u8; 32],
    pub rng_stream: u64,
    pub rng_word_pos: u128,
    pub inbox: InboxState,
    pub seq: u64,
    pub chain: HashChain,
    /// Devices the guest opened, in handle order.
    pub opened_devices: Vec<OpenedDevice>,
}

/// A device a process opened, and the model state of a simulated one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedDevice {
    pub name: String,
    pub model: Option<Vec<u8>>,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a weft snapshot (bad magic bytes)")]
    BadMagic,
    #[error(
        "snapshot format version {found} is not supported (this weft reads version {FORMAT_VERSION})"
    )]
    Version { found: u32 },
    #[error("snapshot is truncated: header says {expected} bytes of body, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error(
        "snapshot is corrupt: checksum mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot is corrupt: {0}")]
    Body(String),
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("snapshot serialisation cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(SnapshotError::Version { found: version });
        }
        let expected = u64::from_le_bytes(bytes[12..20].try_into().unwrap());
        let stored = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
        let body = &bytes[HEADER_LEN..];
        if body.len() as u64 != expected {
            return Err(SnapshotError::Truncated {
                expected,
                found: body.len() as u64,
            });
        }
        let computed = crc32fast::hash(body);
        if computed != stored {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        postcard::from_bytes(body).map_err(|e| SnapshotError::Body(e.to_string()))
    }

    /// Total bytes of linear memory of the process the snapshot is of.
    pub fn memory_bytes(&self) -> u64 {
        self.instances
            .iter()
            .flat_map(|i| i.memories.values())
            .map(MemoryImage::len)
            .sum()
    }

    /// Bytes of memory content the snapshot carries (all of it for a base,
    /// the written pages for an increment).
    pub fn carried_bytes(&self) -> u64 {
        self.instances.iter().map(InstanceState::carried).sum()
    }

    /// Makes every whole memory sparse (see [`MemoryImage::Sparse`]): what
    /// a holder of checkpoints does before it keeps one.
    pub fn compact(&mut self) {
        for instance in &mut self.instances {
            instance
                .memories
                .values_mut()
                .for_each(MemoryImage::compact);
        }
    }
}

fn index_after(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

impl Process {
    /// Captures the whole process between two calls, its memories sparse
    /// (a stopping share of small processes would otherwise copy every
    /// zero page of every one of them).
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.capture(Link::ALONE, |_, memory| MemoryImage::sparse_of(memory))
    }

    /// Captures the process with each memory as `image` makes it from the
    /// memory's (instance, index) and bytes.
    pub(crate) fn capture(
        &mut self,
        link: Link,
        mut image: impl FnMut((usize, u32), &[u8]) -> MemoryImage,
    ) -> Result<Snapshot> {
        if self.spec().grants(&weft_abi::Capability::Wasi) {
            bail!(
                "process {:?} uses WASI; WASI host state (open files, streams) cannot be snapshotted",
                self.name()
            );
        }
        let mut instances = Vec::with_capacity(self.instances.len());
        for (i, instance) in self.instances.clone().into_iter().enumerate() {
            let mut state = InstanceState {
                digest: self.program.module_digest(i),
                memories: BTreeMap::new(),
                globals: BTreeMap::new(),
            };
            let exports: Vec<(String, Extern)> = instance
                .exports(&mut self.store)
                .map(|e| (e.name().to_string(), e.into_extern()))
                .collect();
            for (name, ext) in exports {
                if let (Some(index), Extern::Memory(m)) =
                    (index_after(&name, exports::SNAPSHOT_MEMORY_PREFIX), &ext)
                {
                    let captured = image((i, index), m.data(&self.store));
                    state.memories.insert(index, captured);
                } else if let (Some(index), Extern::Global(g)) =
                    (index_after(&name, exports::SNAPSHOT_GLOBAL_PREFIX), &ext)
                {
                    state.globals.insert(index, self.global_value(index, g)?);
                }
            }
            instances.push(state);
        }
        let host = self.store.data();
        Ok(Snapshot {
            process: self.name().clone(),
            link,
            last_tag: self.last_tag,
            instances,
            kv: host.kv.clone(),
            rng_seed: host.rng.get_seed(),
            rng_stream: host.rng.get_stream(),
            rng_word_pos: host.rng.get_word_pos(),
            inbox: host.inbox.state(),
            seq: self.seq,
            chain: self.chain,
            opened_devices: host
                .opened
                .iter()
                .map(|name| OpenedDevice {
                    name: name.clone(),
                    model: host.devices.get(name).and_then(|d| d.save()),
                })
                .collect(),
        })
    }

    fn global_value(&mut self, index: u32, global: &wasmtime::Global) -> Result<GlobalValue> {
        Ok(match global.get(&mut self.store) {
            Val::I32(v) => GlobalValue::I32(v),
            Val::I64(v) => GlobalValue::I64(v),
            Val::F32(v) => GlobalValue::F32(v),
            Val::F64(v) => GlobalValue::F64(v),
            Val::V128(v) => GlobalValue::V128(v.as_u128()),
            _ => bail!(
                "process {:?}: mutable reference global {index} cannot be snapshotted",
                self.name()
            ),
        })
    }

    /// Instantiates `program` afresh and puts the snapshot's state into it.
    /// `weft_init` is not called: the state already is initialised.
    pub async fn restore(
        program: std::sync::Arc<Program>,
        env: ProcessEnv,
        snapshot: &Snapshot,
    ) -> Result<Process> {
        check_same_modules(&program, snapshot)?;
        if !snapshot.is_base() {
            bail!(
                "snapshot of {:?} is an increment (link {} of its chain): apply it to its base before restoring",
                snapshot.process,
                snapshot.link.index
            );
        }
        let mut process = Process::instantiate(program, env)
            .await
            .map_err(|f| anyhow::anyhow!(f))?;
        for (i, state) in snapshot.instances.iter().enumerate() {
            let instance = process.instances[i];
            restore_memories(&mut process.store, instance, state)?;
            restore_globals(&mut process.store, instance, state)?;
        }
        restore_host(process.store.data_mut(), snapshot)?;
        process.seq = snapshot.seq;
        process.chain = snapshot.chain;
        process.last_tag = snapshot.last_tag;
        Ok(process)
    }
}

/// State only fits the modules it was taken from: refuses a snapshot of
/// another program before anything is instantiated.
fn check_same_modules(program: &Program, snapshot: &Snapshot) -> Result<()> {
    let count = program.module_count();
    if snapshot.instances.len() != count {
        bail!(
            "snapshot of {:?} has {} module instances but process {:?} has {count}",
            snapshot.process,
            snapshot.instances.len(),
            program.spec.name
        );
    }
    for (i, state) in snapshot.instances.iter().enumerate() {
        let digest = program.module_digest(i);
        if state.digest != digest {
            bail!(
                "snapshot of {:?} was taken from module {} but process {:?} runs module {digest}; refusing to restore state into a different module",
                snapshot.process,
                state.digest,
                program.spec.name
            );
        }
    }
    Ok(())
}

/// Grows each memory to the snapshot's size, then overwrites it.
fn restore_memories(
    store: &mut Store<Host>,
    instance: Instance,
    state: &InstanceState,
) -> Result<()> {
    for (index, image) in &state.memories {
        if !image.is_whole() {
            bail!("snapshot memory {index} is not whole");
        }
        image
            .check()
            .with_context(|| format!("snapshot memory {index} cannot be restored"))?;
        let len = image.len() as usize;
        let name = format!("{}{index}", exports::SNAPSHOT_MEMORY_PREFIX);
        let memory = instance
            .get_memory(&mut *store, &name)
            .with_context(|| format!("snapshot has memory {index} but the module has none"))?;
        let current = memory.data_size(&*store);
        if len < current || !len.is_multiple_of(65536) {
            bail!("snapshot memory {index} has {len} bytes; the module starts with {current}");
        }
        let grow = ((len - current) / 65536) as u64;
        if grow > 0 {
            memory
                .grow(&mut *store, grow)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("cannot grow memory {index} to the snapshot's {len} bytes")
                })?;
        }
        image.write_whole(memory.data_mut(&mut *store));
    }
    Ok(())
}

fn restore_globals(
    store: &mut Store<Host>,
    instance: Instance,
    state: &InstanceState,
) -> Result<()> {
    for (index, value) in &state.globals {
        let name = format!("{}{index}", exports::SNAPSHOT_GLOBAL_PREFIX);
        let global = instance
            .get_global(&mut *store, &name)
            .with_context(|| format!("snapshot has global {index} but the module has none"))?;
        let value = match value {
            GlobalValue::I32(v) => Val::I32(*v),
            GlobalValue::I64(v) => Val::I64(*v),
            GlobalValue::F32(v) => Val::F32(*v),
            GlobalValue::F64(v) => Val::F64(*v),
            GlobalValue::V128(v) => Val::V128((*v).into()),
        };
        global
            .set(&mut *store, value)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("snapshot global {index} does not fit the module's global"))?;
    }
    Ok(())
}

/// The host state: kv, PRNG position, mailbox, and the opened devices with
/// the model state of simulated ones.
fn restore_host(host: &mut Host, snapshot: &Snapshot) -> Result<()> {
    host.kv = snapshot.kv.clone();
    host.rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::from_seed(snapshot.rng_seed);
    host.rng.set_stream(snapshot.rng_stream);
    host.rng.set_word_pos(snapshot.rng_word_pos);
    host.inbox.restore(snapshot.inbox.clone());
    host.opened = Vec::with_capacity(snapshot.opened_devices.len());
    for opened in &snapshot.opened_devices {
        let device = host.devices.get(&opened.name).with_context(|| {
            format!(
                "snapshot of {:?} uses device {:?}, which this node does not have",
                snapshot.process, opened.name
            )
        })?;
        if let Some(model) = &opened.model {
            device
                .load(model)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("cannot restore the state of device {:?}", opened.name))?;
        }
        host.opened.push(opened.name.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            process: "p".parse().unwrap(),
            link: Link::ALONE,
            last_tag: Some(Tag(10)),
            instances: vec![],
            kv: BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]),
            rng_seed: [1; 32],
            rng_stream: 0,
            rng_word_pos: 5,
            inbox: InboxState::default(),
            seq: 3,
            chain: HashChain([9; 16]),
            opened_devices: vec![],
        }
    }

    /// A whole memory encodes as one byte string, not byte by byte (a
    /// 64 MiB memory encodes in milliseconds rather than hundreds of them).
    #[test]
    fn a_whole_memory_is_one_byte_string() {
        let image = MemoryImage::Full(vec![1, 2, 255]);
        let bytes = postcard::to_stdvec(&image).unwrap();
        assert_eq!(bytes, [0, 3, 1, 2, 255]);
        assert_eq!(postcard::from_bytes::<MemoryImage>(&bytes).unwrap(), image);
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = sample().encode();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(
            Snapshot::decode(&flipped),
            Err(SnapshotError::Checksum { .. })
        ));
        assert!(matches!(
            Snapshot::decode(&bytes[..bytes.len() - 3]),
            Err(SnapshotError::Truncated { .. })
        ));
        assert_eq!(
            Snapshot::decode(b"nonsense nonsense nonsense"),
            Err(SnapshotError::BadMagic)
        );
        let mut newer = bytes.clone();
        newer[8] = 99;
        assert_eq!(
            Snapshot::decode(&newer),
            Err(SnapshotError::Version { found: 99 })
        );
    }
}
