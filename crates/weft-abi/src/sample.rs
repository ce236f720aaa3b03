//! The bytes `device_read` returns: a device sample.
//!
//! A sample is a fixed 24-byte header and then the device's values, each
//! an `f64` little-endian, in the order the device declares them (the
//! node config's `read` list for a real device; `docs/devices.md`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | quality: 0 good, 1 stale, 2 disconnected, 3 exception, 4 unavailable |
//! | 1 | 1 | exception code (Modbus: 2 = illegal data address), else 0 |
//! | 2 | 2 | reserved, 0 |
//! | 4 | 4 | sequence number of the scan the values come from (`u32` LE) |
//! | 8 | 8 | age: the tag's release minus the scan's arrival, ns (`u64` LE) |
//! | 16 | 8 | source time: ns since the Unix epoch when the values were read (`u64` LE) |
//! | 24 | 8·n | the values |
//!
//! The header is part of what a recording keeps, so a replay sees the same
//! qualities and ages the live run saw.

use std::fmt;
use std::str::FromStr;

/// Bytes before the values.
pub const SAMPLE_HEADER: usize = 24;

/// How much a sample's values can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Quality {
    /// Read from the device within its `stale_after`.
    Good = 0,
    /// The newest values are older than the device's `stale_after`.
    Stale = 1,
    /// The link to the device is down; the values are the last ones read.
    Disconnected = 2,
    /// The device answered with an exception (its code is in the header).
    Exception = 3,
    /// Nothing was latched for this tag (it is older than the node keeps,
    /// or the device never answered).
    Unavailable = 4,
}

impl Quality {
    pub const ALL: [Quality; 5] = [
        Quality::Good,
        Quality::Stale,
        Quality::Disconnected,
        Quality::Exception,
        Quality::Unavailable,
    ];

    pub fn from_u8(byte: u8) -> Option<Quality> {
        Quality::ALL.into_iter().find(|q| *q as u8 == byte)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Stale => "stale",
            Quality::Disconnected => "disconnected",
            Quality::Exception => "exception",
            Quality::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quality {
    type Err = String;
    fn from_str(text: &str) -> Result<Quality, String> {
        Quality::ALL
            .into_iter()
            .find(|q| q.as_str() == text)
            .ok_or_else(|| format!("unknown quality {text:?}"))
    }
}

/// One sample, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub quality: Quality,
    pub code: u8,
    pub seq: u32,
    pub age_ns: u64,
    pub source_ns: u64,
    pub values: Vec<f64>,
}

impl Sample {
    /// A fresh, good sample of `values` (what a simulated device returns).
    pub fn good(values: &[f64]) -> Sample {
        Sample {
            quality: Quality::Good,
            code: 0,
            seq: 0,
            age_ns: 0,
            source_ns: 0,
            values: values.to_vec(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(&self.values)
    }

    /// Encodes this sample's header with `values` instead of its own, in
    /// one allocation (a latch encodes a scan's values without copying
    /// them into a `Sample` first).
    pub fn encode_with(&self, values: &[f64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(SAMPLE_HEADER + 8 * values.len());
        out.push(self.quality as u8);
        out.push(self.code);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.age_ns.to_le_bytes());
        out.extend_from_slice(&self.source_ns.to_le_bytes());
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Sample, String> {
        if bytes.len() < SAMPLE_HEADER || !(bytes.len() - SAMPLE_HEADER).is_multiple_of(8) {
            return Err(format!(
                "a sample is {SAMPLE_HEADER} header bytes and 8 per value, not {}",
                bytes.len()
            ));
        }
        let quality = Quality::from_u8(bytes[0])
            .ok_or_else(|| format!("unknown sample quality {}", bytes[0]))?;
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        Ok(Sample {
            quality,
            code: bytes[1],
            seq: u32::from_le_bytes(bytes[4..8].try_into().unwrap()),
            age_ns: u64_at(8),
            source_ns: u64_at(16),
            values: bytes[SAMPLE_HEADER..]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_round_trips_and_bad_bytes_are_refused() {
        let sample = Sample {
            quality: Quality::Exception,
            code: 2,
            seq: 7,
            age_ns: 1_500,
            source_ns: 42,
            values: vec![1.5, -3.0],
        };
        let bytes = sample.encode();
        assert_eq!(bytes.len(), SAMPLE_HEADER + 16);
        assert_eq!(Sample::decode(&bytes).unwrap(), sample);
        assert!(
            Sample::decode(&bytes[..30])
                .unwrap_err()
                .contains("8 per value")
        );
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(Sample::decode(&bad).unwrap_err().contains("quality 9"));
        for q in Quality::ALL {
            assert_eq!(q.as_str().parse::<Quality>().unwrap(), q);
        }
    }
}
