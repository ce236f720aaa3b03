//! Payload codecs. Every payload on the fabric is versioned and bounded
//! (the bounds are `weft_types::limits`, which manifests are checked
//! against at deploy, so a process never produces what a hop refuses):
//!
//! * control messages (RPC, status) are JSON objects `{"v": 1, ...}`;
//! * port messages, checkpoints, modules and deploy bundles are binary
//!   frames with a small fixed header, little-endian, so any client can
//!   decode them and no blob is ever base64 inside JSON (see
//!   `docs/fabric.md` for every layout).
//!
//! Decoding never panics: a malformed, oversized or wrong-version payload
//! is a [`CodecError`], which receivers log and drop.

use std::collections::BTreeMap;

use serde::{Serialize, de::DeserializeOwned};
use weft_types::{ModuleDigest, ProcessRef, Tag, limits};

pub const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("unsupported payload version {found} (expected {VERSION})")]
    Version { found: u64 },
    #[error("malformed payload: {0}")]
    Malformed(String),
}

fn bounded(bytes: &[u8], limit: u64) -> Result<(), CodecError> {
    if bytes.len() as u64 > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(())
}

/// A control message with its version first, written in one pass (going
/// through a `serde_json::Value` cost a tree of allocations per message,
/// which at thousands of processes per status was most of the
/// controller's time).
#[derive(Serialize)]
struct Versioned<'a, T> {
    v: u8,
    #[serde(flatten)]
    message: &'a T,
}

/// Only the version of a control message; serde skips the rest without
/// building it.
#[derive(serde::Deserialize)]
struct VersionOnly {
    v: Option<serde_json::Value>,
}

/// Encodes a control message with its version.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(&Versioned {
        v: VERSION,
        message,
    })
    .expect("control messages serialise")
}

/// Decodes a control message, checking size and version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    bounded(bytes, limits::MAX_CONTROL)?;
    let malformed = |e: serde_json::Error| CodecError::Malformed(e.to_string());
    let version = serde_json::from_slice::<VersionOnly>(bytes).map_err(malformed)?;
    match version.v {
        Some(v) if v.as_u64() == Some(VERSION as u64) => {}
        Some(v) => match v.as_u64() {
            Some(found) => return Err(CodecError::Version { found }),
            None => return Err(CodecError::Malformed(format!("version field \"v\" is {v}"))),
        },
        None => return Err(CodecError::Malformed("missing version field \"v\"".into())),
    }
    serde_json::from_slice(bytes).map_err(malformed)
}

/// Reads a binary frame front to back, every read checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks the size bound and the version byte.
    fn open(bytes: &'a [u8], limit: u64, what: &'static str) -> Result<Reader<'a>, CodecError> {
        bounded(bytes, limit)?;
        let mut reader = Reader { bytes, at: 0, what };
        let version = reader.take(1)?[0];
        if version != VERSION {
            return Err(CodecError::Version {
                found: version as u64,
            });
        }
        Ok(reader)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(CodecError::Malformed(format!(
                "{} of {} bytes is shorter than its header says",
                self.what,
                self.bytes.len()
            )));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn rest(self) -> &'a [u8] {
        &self.bytes[self.at..]
    }
}

/// A tagged message on a port, as it travels between nodes:
/// `version u8 ‖ tag u64 ‖ seq u64 ‖ source length u16 ‖ source ‖ payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMessage {
    pub tag: u64,
    pub seq: u64,
    pub source: String,
    pub payload: Vec<u8>,
}

impl PortMessage {
    /// Encodes a message without building one first (the sender's payload
    /// is copied once, into the frame).
    pub fn encode_parts(tag: u64, seq: u64, source: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(19 + source.len() + payload.len());
        out.push(VERSION);
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(source.len() as u16).to_le_bytes());
        out.extend_from_slice(source.as_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.tag, self.seq, &self.source, &self.payload)
    }

    pub fn decode(bytes: &[u8]) -> Result<PortMessage, CodecError> {
        let mut r = Reader::open(bytes, limits::MAX_PORT_PAYLOAD, "port message")?;
        let (tag, seq, len) = (r.u64()?, r.u64()?, r.u16()?);
        let source = std::str::from_utf8(r.take(len as usize)?)
            .map_err(|_| CodecError::Malformed("source is not UTF-8".into()))?
            .to_string();
        Ok(PortMessage {
            tag,
            seq,
            source,
            payload: r.rest().to_vec(),
        })
    }
}

/// A checkpoint, on `checkpoint/<app>/<process>` (put by a node, and the
/// reply to a query there): `version u8 ‖ tag u64 ‖ snapshot`. The
/// snapshot carries its own format header and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFrame {
    /// Logical tag the snapshot was taken at.
    pub tag: Tag,
    pub snapshot: Vec<u8>,
}

impl CheckpointFrame {
    pub fn encode_parts(tag: Tag, snapshot: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + snapshot.len());
        out.push(VERSION);
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(snapshot);
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(self.tag, &self.snapshot)
    }

    pub fn decode(bytes: &[u8]) -> Result<CheckpointFrame, CodecError> {
        let mut r = Reader::open(bytes, limits::MAX_CHECKPOINT, "checkpoint")?;
        let tag = Tag(r.u64()?);
        Ok(CheckpointFrame {
            tag,
            snapshot: r.rest().to_vec(),
        })
    }
}

/// The checkpoint links one node sends a peer to keep, in one query on
/// `replica/<peer>`: `version u8 ‖ count u32 ‖ per link: app length u16 ‖
/// app ‖ process length u16 ‖ process ‖ frame length u64 ‖ frame`, each
/// frame a [`CheckpointFrame`]. One query per batch, not per process: at
/// thousands of processes per node, a round trip per link could not keep
/// up with two checkpoints a second each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaBatch {
    pub links: Vec<(ProcessRef, Vec<u8>)>,
}

impl ReplicaBatch {
    /// Bytes a link adds to a batch besides its frame, at most.
    pub const PER_LINK: usize = 2 + 2 + 8 + 2 * 255;

    pub fn encode(&self) -> Vec<u8> {
        Self::encode_links(
            self.links
                .iter()
                .map(|(who, frame)| (who, frame.as_slice())),
        )
    }

    /// Encodes links without gathering them into a batch first.
    pub fn encode_links<'a>(
        links: impl ExactSizeIterator<Item = (&'a ProcessRef, &'a [u8])> + Clone,
    ) -> Vec<u8> {
        let size: usize = links.clone().map(|(_, f)| Self::PER_LINK + f.len()).sum();
        let mut out = Vec::with_capacity(5 + size);
        out.push(VERSION);
        out.extend_from_slice(&(links.len() as u32).to_le_bytes());
        for (who, frame) in links {
            for name in [who.app.as_str(), who.process.as_str()] {
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            out.extend_from_slice(&(frame.len() as u64).to_le_bytes());
            out.extend_from_slice(frame);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ReplicaBatch, CodecError> {
        let mut r = Reader::open(bytes, limits::MAX_CHECKPOINT, "checkpoint batch")?;
        let count = r.u32()?;
        let mut links = Vec::new();
        for _ in 0..count {
            let mut name = || -> Result<String, CodecError> {
                let len = r.u16()? as usize;
                let text = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| CodecError::Malformed("a name is not UTF-8".into()))?;
                Ok(text.to_string())
            };
            let (app, process) = (name()?, name()?);
            let who: ProcessRef = format!("{app}/{process}")
                .parse()
                .map_err(|e| CodecError::Malformed(format!("checkpoint batch: {e}")))?;
            let len = r.u64()?;
            let frame = usize::try_from(len)
                .map_err(|_| CodecError::Malformed("checkpoint batch: link too long".into()))?;
            links.push((who, r.take(frame)?.to_vec()));
        }
        if !r.rest().is_empty() {
            return Err(CodecError::Malformed(
                "checkpoint batch has bytes after its last link".into(),
            ));
        }
        Ok(ReplicaBatch { links })
    }
}

/// A module, the reply to a query on `module/<digest>`:
/// `version u8 ‖ module binary`. The key names it; receivers check that
/// the bytes have that digest.
pub fn encode_module(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(VERSION);
    out.extend_from_slice(bytes);
    out
}

pub fn decode_module(bytes: &[u8]) -> Result<&[u8], CodecError> {
    Ok(Reader::open(bytes, limits::MAX_MODULE + 1, "module")?.rest())
}

/// An app to deploy, the payload of a query on `controller/deploy`:
/// `version u8 ‖ manifest length u32 ‖ manifest (UTF-8 TOML) ‖ module
/// count u32 ‖ per module: digest (32 bytes) ‖ length u64 ‖ bytes`. The
/// manifest names its modules by digest (`sha256:<hex>`); a module the
/// controller already has may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployBundle {
    pub manifest: String,
    pub modules: BTreeMap<ModuleDigest, Vec<u8>>,
}

impl DeployBundle {
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.modules.values().map(|m| 40 + m.len()).sum();
        let mut out = Vec::with_capacity(9 + self.manifest.len() + size);
        out.push(VERSION);
        out.extend_from_slice(&(self.manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(self.manifest.as_bytes());
        out.extend_from_slice(&(self.modules.len() as u32).to_le_bytes());
        for (digest, bytes) in &self.modules {
            out.extend_from_slice(&digest.0);
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<DeployBundle, CodecError> {
        let mut r = Reader::open(bytes, limits::MAX_BUNDLE, "deploy bundle")?;
        let len = r.u32()? as usize;
        let manifest = std::str::from_utf8(r.take(len)?)
            .map_err(|_| CodecError::Malformed("the manifest is not UTF-8".into()))?
            .to_string();
        let count = r.u32()?;
        let mut modules = BTreeMap::new();
        for _ in 0..count {
            let digest = ModuleDigest(r.take(32)?.try_into().unwrap());
            let len = r.u64()?;
            if len > limits::MAX_MODULE {
                return Err(CodecError::TooLarge {
                    size: len,
                    limit: limits::MAX_MODULE,
                });
            }
            modules.insert(digest, r.take(len as usize)?.to_vec());
        }
        if !r.rest().is_empty() {
            return Err(CodecError::Malformed(
                "deploy bundle has bytes after its last module".into(),
            ));
        }
        Ok(DeployBundle { manifest, modules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Ping {
        n: u32,
    }

    #[test]
    fn control_round_trip_and_rejections() {
        let bytes = encode(&Ping { n: 3 });
        assert_eq!(decode::<Ping>(&bytes).unwrap(), Ping { n: 3 });
        assert!(matches!(
            decode::<Ping>(b"{\"n\":3}"),
            Err(CodecError::Malformed(_))
        ));
        assert_eq!(
            decode::<Ping>(b"{\"v\":9,\"n\":3}"),
            Err(CodecError::Version { found: 9 })
        );
        assert!(matches!(
            decode::<Ping>(b"\xff\x00garbage"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Ping>(b"{\"v\":1,\"x\":1}"),
            Err(CodecError::Malformed(_))
        ));
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Op {
        Stop { app: String },
        Nothing,
    }

    #[test]
    fn tagged_messages_carry_their_version_first() {
        let bytes = encode(&Op::Stop { app: "cell".into() });
        assert_eq!(bytes, br#"{"v":1,"op":"stop","app":"cell"}"#);
        assert_eq!(
            decode::<Op>(&bytes).unwrap(),
            Op::Stop { app: "cell".into() }
        );
        assert_eq!(decode::<Op>(&encode(&Op::Nothing)).unwrap(), Op::Nothing);
        assert!(matches!(
            decode::<Op>(br#"{"v":"one","op":"nothing"}"#),
            Err(CodecError::Malformed(m)) if m.contains("\"one\"")
        ));
        assert!(matches!(
            decode::<Op>(b"[1]"),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn port_round_trip_and_rejections() {
        let m = PortMessage {
            tag: 10,
            seq: 2,
            source: "pid".into(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(PortMessage::decode(&m.encode()).unwrap(), m);
        assert!(PortMessage::decode(&[]).is_err());
        assert!(PortMessage::decode(&[1, 2, 3]).is_err());
        assert_eq!(
            PortMessage::decode(&[7; 40]),
            Err(CodecError::Version { found: 7 })
        );
        let mut bad = m.encode();
        bad[17] = 200; // source length beyond the end
        assert!(PortMessage::decode(&bad).is_err());
    }

    #[test]
    fn replica_batches_round_trip_and_truncation_is_refused() {
        let batch = ReplicaBatch {
            links: vec![
                ("app/p1".parse().unwrap(), vec![1, 2, 3]),
                ("app/p2".parse().unwrap(), Vec::new()),
            ],
        };
        let bytes = batch.encode();
        assert_eq!(ReplicaBatch::decode(&bytes).unwrap(), batch);
        for cut in [1, 6, bytes.len() - 1] {
            assert!(
                ReplicaBatch::decode(&bytes[..cut]).is_err(),
                "{cut} bytes decoded"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ReplicaBatch::decode(&trailing).is_err());
        let mut bad_name = bytes;
        bad_name[7] = b'/';
        assert!(ReplicaBatch::decode(&bad_name).is_err());
    }

    #[test]
    fn checkpoint_and_module_frames_round_trip() {
        let c = CheckpointFrame {
            tag: Tag(77),
            snapshot: b"snap".to_vec(),
        };
        assert_eq!(CheckpointFrame::decode(&c.encode()).unwrap(), c);
        assert!(CheckpointFrame::decode(&[1, 2, 3]).is_err());
        assert!(matches!(
            CheckpointFrame::decode(b"{\"v\":1}"),
            Err(CodecError::Version { .. })
        ));
        assert_eq!(decode_module(&encode_module(b"\0asm")).unwrap(), b"\0asm");
        assert!(decode_module(&[]).is_err());
    }

    #[test]
    fn deploy_bundles_round_trip_and_truncation_is_refused() {
        let bundle = DeployBundle {
            manifest: "name = \"a\"\n".into(),
            modules: BTreeMap::from([
                (ModuleDigest([1; 32]), vec![0, 1, 2]),
                (ModuleDigest([2; 32]), vec![]),
            ]),
        };
        let bytes = bundle.encode();
        assert_eq!(DeployBundle::decode(&bytes).unwrap(), bundle);
        for cut in [1, 5, bytes.len() - 1] {
            assert!(
                matches!(
                    DeployBundle::decode(&bytes[..cut]),
                    Err(CodecError::Malformed(_))
                ),
                "cut at {cut}"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(DeployBundle::decode(&extra).is_err());
    }
}
