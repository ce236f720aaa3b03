//! Sparkplug B, the edge-node side: topic names, the payload (Eclipse
//! Tahu's `sparkplug_b.proto`, the part weft uses, as prost messages), and
//! the session rules (`bdSeq` per connection, `seq` per message).
//!
//! A device with a `sparkplug` table is an edge node with one device. At
//! every connection it registers `NDEATH` (with the connection's `bdSeq`)
//! as its will, then publishes `NBIRTH` (seq 0, the same `bdSeq`) and
//! `DBIRTH`; every write after that is one `DDATA` of the metrics written,
//! `seq` counting on mod 256. The host's `DCMD` sets read metrics; its
//! `NCMD` `Node Control/Rebirth` asks for the births again.
//!
//! The messages are declared here rather than generated from the .proto:
//! prost's derive needs no `protoc` at build time, and the six fields weft
//! reads and writes are stable since Sparkplug 2.2.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;

use crate::config::SparkplugConfig;

/// The Sparkplug B topic namespace.
pub const NAMESPACE: &str = "spBv1.0";
pub const BD_SEQ: &str = "bdSeq";
pub const REBIRTH: &str = "Node Control/Rebirth";

/// Metric datatypes (Tahu's `DataType`) weft uses.
pub mod datatype {
    pub const UINT64: u32 = 8;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// ms since the Unix epoch.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(uint32, tag = "10")]
    Int(u32),
    #[prost(uint64, tag = "11")]
    Long(u64),
    #[prost(float, tag = "12")]
    Float(f32),
    #[prost(double, tag = "13")]
    Double(f64),
    #[prost(bool, tag = "14")]
    Boolean(bool),
    #[prost(string, tag = "15")]
    String(String),
}

impl Metric {
    fn new(name: &str, datatype: u32, value: Option<Value>) -> Metric {
        Metric {
            name: Some(name.to_string()),
            alias: None,
            timestamp: Some(now_ms()),
            datatype: Some(datatype),
            is_null: value.is_none().then_some(true),
            value,
        }
    }

    /// A `Double` metric; NaN (never written) is sent as null.
    pub fn double(name: &str, value: f64) -> Metric {
        Metric::new(
            name,
            datatype::DOUBLE,
            (!value.is_nan()).then_some(Value::Double(value)),
        )
    }

    /// The metric's value as a number, whatever its type.
    pub fn number(&self) -> Option<f64> {
        match self.value.as_ref()? {
            // Tahu sends Int8..Int32 in the uint32 field and Int64 in the
            // uint64 one as two's complement.
            Value::Int(v) if self.datatype.is_some_and(|t| t <= 3) => Some(f64::from(*v as i32)),
            Value::Int(v) => Some(f64::from(*v)),
            Value::Long(v) if self.datatype == Some(4) => Some(*v as i64 as f64),
            Value::Long(v) => Some(*v as f64),
            Value::Float(v) => Some(f64::from(*v)),
            Value::Double(v) => Some(*v),
            Value::Boolean(v) => Some(f64::from(u8::from(*v))),
            Value::String(s) => s.trim().parse().ok(),
        }
    }
}

/// The topics of one edge node and its device.
#[derive(Debug, Clone)]
pub struct Topics {
    pub nbirth: String,
    pub ndeath: String,
    pub ncmd: String,
    pub dbirth: String,
    pub ddata: String,
    pub ddeath: String,
    pub dcmd: String,
}

impl Topics {
    pub fn new(c: &SparkplugConfig) -> Topics {
        let node = |kind: &str| format!("{NAMESPACE}/{}/{kind}/{}", c.group, c.edge_node);
        let device = |kind: &str| format!("{}/{}", node(kind), c.device);
        Topics {
            nbirth: node("NBIRTH"),
            ndeath: node("NDEATH"),
            ncmd: node("NCMD"),
            dbirth: device("DBIRTH"),
            ddata: device("DDATA"),
            ddeath: device("DDEATH"),
            dcmd: device("DCMD"),
        }
    }
}

/// An edge node's session counters.
#[derive(Debug, Default)]
pub struct EdgeNode {
    /// The birth/death sequence of the current (or next) connection.
    bd_seq: u8,
    /// Whether a broker accepted a connection with `bd_seq` (its births
    /// went out): the next connection then takes the next one.
    used: bool,
    /// The next message's sequence number.
    seq: u8,
}

impl EdgeNode {
    /// Starts a connection attempt: its `NDEATH` payload, to register as
    /// the will. `bdSeq` counts connections a broker accepted: an attempt
    /// that never got that far keeps its number for the next.
    pub fn connect(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.used) {
            self.bd_seq = self.bd_seq.wrapping_add(1);
        }
        self.death()
    }

    /// The `NDEATH` of this connection.
    pub fn death(&self) -> Vec<u8> {
        Payload {
            timestamp: Some(now_ms()),
            metrics: vec![self.bd_seq_metric()],
            seq: None,
        }
        .encode_to_vec()
    }

    /// `NBIRTH` (seq 0) and then `DBIRTH` with `metrics`.
    pub fn births(&mut self, metrics: Vec<Metric>) -> (Vec<u8>, Vec<u8>) {
        self.used = true;
        self.seq = 0;
        let nbirth = self.payload(vec![
            self.bd_seq_metric(),
            Metric::new(REBIRTH, datatype::BOOLEAN, Some(Value::Boolean(false))),
        ]);
        (nbirth, self.payload(metrics))
    }

    /// A `DDATA` (or any message after the births) carrying `metrics`.
    pub fn payload(&mut self, metrics: Vec<Metric>) -> Vec<u8> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Payload {
            timestamp: Some(now_ms()),
            metrics,
            seq: Some(u64::from(seq)),
        }
        .encode_to_vec()
    }

    fn bd_seq_metric(&self) -> Metric {
        Metric::new(
            BD_SEQ,
            datatype::UINT64,
            Some(Value::Long(u64::from(self.bd_seq))),
        )
    }
}

/// Decodes a command (`NCMD`/`DCMD`) payload.
pub fn decode(payload: &[u8]) -> Result<Payload, prost::DecodeError> {
    Payload::decode(payload)
}

/// Whether an `NCMD` asks for the births again.
pub fn asks_rebirth(command: &Payload) -> bool {
    command.metrics.iter().any(|m| {
        m.name.as_deref() == Some(REBIRTH) && matches!(m.value, Some(Value::Boolean(true)))
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bd_seq_counts_connections_and_seq_restarts_at_each_birth() {
        let mut node = EdgeNode::default();
        let will = decode(&node.connect()).unwrap();
        assert_eq!(will.seq, None, "NDEATH has no seq");
        assert_eq!(will.metrics[0].number(), Some(0.0));
        let (nbirth, dbirth) = node.births(vec![Metric::double("heater", f64::NAN)]);
        let (nbirth, dbirth) = (decode(&nbirth).unwrap(), decode(&dbirth).unwrap());
        assert_eq!((nbirth.seq, dbirth.seq), (Some(0), Some(1)));
        assert_eq!(nbirth.metrics[0].name.as_deref(), Some(BD_SEQ));
        assert_eq!(dbirth.metrics[0].is_null, Some(true), "never written");
        let seqs: Vec<_> = (0..300)
            .map(|i| decode(&node.payload(vec![Metric::double("heater", f64::from(i))])).unwrap())
            .map(|p| p.seq.unwrap())
            .collect();
        assert_eq!(&seqs[..3], &[2, 3, 4]);
        assert_eq!(seqs[253..256], [255, 0, 1], "wraps after 255");
        let will = decode(&node.connect()).unwrap();
        assert_eq!(will.metrics[0].number(), Some(1.0), "the next connection");
        let again = decode(&node.connect()).unwrap();
        assert_eq!(
            again.metrics[0].number(),
            Some(1.0),
            "an attempt the broker never accepted keeps its number"
        );
        let (nbirth, _) = node.births(vec![]);
        assert_eq!(decode(&nbirth).unwrap().seq, Some(0));
    }

    #[test]
    fn command_values_read_as_numbers_whatever_their_type() {
        let metric = |datatype, value| Metric {
            datatype: Some(datatype),
            ..Metric::new("m", datatype, Some(value))
        };
        assert_eq!(metric(10, Value::Double(2.5)).number(), Some(2.5));
        assert_eq!(metric(3, Value::Int(-4i32 as u32)).number(), Some(-4.0));
        assert_eq!(metric(7, Value::Int(4_000_000_000)).number(), Some(4e9));
        assert_eq!(metric(4, Value::Long(-9i64 as u64)).number(), Some(-9.0));
        assert_eq!(metric(11, Value::Boolean(true)).number(), Some(1.0));
        assert_eq!(metric(12, Value::String("x".into())).number(), None);
        let rebirth = Payload {
            timestamp: None,
            metrics: vec![Metric::new(REBIRTH, 11, Some(Value::Boolean(true)))],
            seq: None,
        };
        assert!(asks_rebirth(&decode(&rebirth.encode_to_vec()).unwrap()));
    }
}
