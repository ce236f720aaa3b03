//! A plain topic's payload and the number it carries, in each of the
//! formats a signal may declare (`config::Format`).

use crate::config::Format;

/// A plain topic's payload as a number.
pub fn decode(format: &Format, payload: &[u8]) -> Result<f64, String> {
    let shown = || String::from_utf8_lossy(&payload[..payload.len().min(40)]).into_owned();
    match format {
        Format::Text => {
            let text =
                std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
            match text.trim() {
                "true" => Ok(1.0),
                "false" => Ok(0.0),
                t => t
                    .parse::<f64>()
                    .map_err(|_| format!("payload {:?} is not a number", shown())),
            }
        }
        Format::Json { pointer } => {
            let document: serde_json::Value =
                serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
            match document.pointer(pointer) {
                Some(serde_json::Value::Number(n)) => n.as_f64().ok_or("not an f64".into()),
                Some(serde_json::Value::Bool(b)) => Ok(f64::from(u8::from(*b))),
                Some(other) => Err(format!("{pointer} is {other}, not a number")),
                None => Err(format!("the document has no {pointer}")),
            }
        }
        Format::F64Le => <[u8; 8]>::try_from(payload)
            .map(f64::from_le_bytes)
            .map_err(|_| format!("payload is {} bytes, not 8 (f64-le)", payload.len())),
        Format::F32Le => <[u8; 4]>::try_from(payload)
            .map(|b| f64::from(f32::from_le_bytes(b)))
            .map_err(|_| format!("payload is {} bytes, not 4 (f32-le)", payload.len())),
    }
}

/// A value as a plain topic's payload.
pub fn encode(format: &Format, value: f64) -> Vec<u8> {
    match format {
        Format::Text => value.to_string().into_bytes(),
        Format::Json { pointer } => {
            // "/a/b" → {"a":{"b":value}}; RFC 6901 escapes ~1 and ~0.
            let document = pointer[1..].rsplit('/').fold(
                serde_json::json!(value),
                |inner, key| serde_json::json!({ key.replace("~1", "/").replace("~0", "~"): inner }),
            );
            document.to_string().into_bytes()
        }
        Format::F64Le => value.to_le_bytes().to_vec(),
        Format::F32Le => (value as f32).to_le_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_per_format_and_say_what_is_wrong() {
        let json = Format::Json {
            pointer: "/plant/temp".into(),
        };
        assert_eq!(decode(&Format::Text, b" 21.5\n"), Ok(21.5));
        assert_eq!(decode(&Format::Text, b"true"), Ok(1.0));
        assert_eq!(
            decode(&Format::Text, b"hot"),
            Err("payload \"hot\" is not a number".into())
        );
        assert_eq!(decode(&json, br#"{"plant":{"temp":60}}"#), Ok(60.0));
        assert_eq!(
            decode(&json, br#"{"plant":{}}"#),
            Err("the document has no /plant/temp".into())
        );
        assert_eq!(decode(&Format::F64Le, &2.5f64.to_le_bytes()), Ok(2.5));
        assert!(
            decode(&Format::F32Le, b"abc")
                .unwrap_err()
                .contains("3 bytes")
        );
        for format in [Format::Text, json, Format::F64Le, Format::F32Le] {
            assert_eq!(
                decode(&format, &encode(&format, 0.25)),
                Ok(0.25),
                "{format:?}"
            );
        }
    }
}
