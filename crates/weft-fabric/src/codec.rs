//! Payload codecs. Every payload on the fabric is versioned and bounded:
//!
//! * control messages (RPC, status) are JSON objects `{"v": 1, ...}`, at
//!   most [`MAX_CONTROL_BYTES`];
//! * port messages use a small fixed binary header so any Zenoh client can
//!   decode them (see `docs/fabric.md`): version `u8` = 1, tag `u64` LE,
//!   sequence `u64` LE, source length `u16` LE, source (UTF-8), payload.
//!
//! Decoding never panics: a malformed, oversized or wrong-version payload
//! is a [`CodecError`], which receivers log and drop.

use serde::{Serialize, de::DeserializeOwned};

pub const VERSION: u8 = 1;
/// Largest control payload: module bytes and snapshots travel in these.
pub const MAX_CONTROL_BYTES: usize = 256 << 20;
/// Largest port message (header included).
pub const MAX_PORT_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("payload of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported payload version {found} (expected {VERSION})")]
    Version { found: u64 },
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Encodes a control message with its version.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut value = serde_json::to_value(message).expect("control messages serialise");
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("v".into(), VERSION.into());
    }
    serde_json::to_vec(&value).expect("JSON serialises")
}

/// Decodes a control message, checking size and version first.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_CONTROL_BYTES {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit: MAX_CONTROL_BYTES,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    match value.get("v").and_then(|v| v.as_u64()) {
        Some(v) if v == VERSION as u64 => {}
        Some(v) => return Err(CodecError::Version { found: v }),
        None => return Err(CodecError::Malformed("missing version field \"v\"".into())),
    }
    serde_json::from_value(value).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// A tagged message on a port, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMessage {
    pub tag: u64,
    pub seq: u64,
    pub source: String,
    pub payload: Vec<u8>,
}

impl PortMessage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19 + self.source.len() + self.payload.len());
        out.push(VERSION);
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&(self.source.len() as u16).to_le_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PortMessage, CodecError> {
        if bytes.len() > MAX_PORT_BYTES {
            return Err(CodecError::TooLarge {
                size: bytes.len(),
                limit: MAX_PORT_BYTES,
            });
        }
        let short = || {
            CodecError::Malformed(format!(
                "port message of {} bytes is shorter than its header",
                bytes.len()
            ))
        };
        let version = *bytes.first().ok_or_else(short)?;
        if version != VERSION {
            return Err(CodecError::Version {
                found: version as u64,
            });
        }
        if bytes.len() < 19 {
            return Err(short());
        }
        let tag = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
        let seq = u64::from_le_bytes(bytes[9..17].try_into().unwrap());
        let len = u16::from_le_bytes(bytes[17..19].try_into().unwrap()) as usize;
        let source = bytes.get(19..19 + len).ok_or_else(short)?;
        let source = std::str::from_utf8(source)
            .map_err(|_| CodecError::Malformed("source is not UTF-8".into()))?;
        Ok(PortMessage {
            tag,
            seq,
            source: source.to_string(),
            payload: bytes[19 + len..].to_vec(),
        })
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
}
