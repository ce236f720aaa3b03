//! The identity of a module.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The SHA-256 of the module bytes weft runs: the binary form (a module
/// given as WebAssembly text is converted first). It names a module
/// everywhere: in deploy bundles, on the fabric, in the controller's store,
/// in the compiled-artefact cache, in snapshots and in recordings.
///
/// Its text form is 64 lowercase hex digits. Human-readable formats (JSON,
/// TOML) carry that text; binary formats (postcard) the 32 bytes.
/// Computing one is `weft_manifest::module::digest`, the only place that
/// hashes module bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleDigest(pub [u8; 32]);

/// Why a text is not a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestError(pub String);

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a module digest (64 lowercase hex digits of a SHA-256)",
            self.0
        )
    }
}

impl std::error::Error for DigestError {}

impl ModuleDigest {
    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl fmt::Display for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModuleDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleDigest({})", self.short())
    }
}

impl FromStr for ModuleDigest {
    type Err = DigestError;
    fn from_str(text: &str) -> Result<ModuleDigest, DigestError> {
        let fail = || DigestError(text.to_string());
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(fail());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            out[i] = (nibble(pair[0]).ok_or_else(fail)? << 4) | nibble(pair[1]).ok_or_else(fail)?;
        }
        Ok(ModuleDigest(out))
    }
}

impl Serialize for ModuleDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ModuleDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ModuleDigest, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(ModuleDigest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_rejections() {
        let d = ModuleDigest([0xab; 32]);
        let text = d.to_string();
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(text.parse::<ModuleDigest>().unwrap(), d);
        for bad in [
            "",
            "../etc/passwd",
            &"A".repeat(64),
            &"a".repeat(63),
            &"g".repeat(64),
        ] {
            assert!(bad.parse::<ModuleDigest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_carries_text_postcard_carries_bytes() {
        let d = ModuleDigest([7; 32]);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        assert_eq!(
            serde_json::from_str::<ModuleDigest>(&format!("\"{d}\"")).unwrap(),
            d
        );
        let bytes = postcard::to_stdvec(&d).unwrap();
        assert_eq!(bytes, [7u8; 32], "the same bytes as a plain [u8; 32]");
        assert_eq!(postcard::from_bytes::<ModuleDigest>(&bytes).unwrap(), d);
    }
}
