//! The `mqtt` device table: a broker, the topics (or Sparkplug B metrics)
//! whose latest payloads a sample carries, and the topics (or metrics) a
//! write publishes to.
//!
//! A signal names either a `topic` or, when the device is a Sparkplug B
//! edge node (a `[devices.<name>.sparkplug]` table), a `metric`: a read
//! metric is set by the host's `DCMD` commands, a write metric goes out in
//! `DDATA`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::{SignalNames, check_address, duration};

/// An MQTT broker the node subscribes to and publishes on.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// `host:port`, resolved at every (re)connect.
    pub broker: String,
    /// The client id; unique per broker (a second client with the same id
    /// throws the first off).
    pub client_id: Option<String>,
    /// How often the client pings an idle broker; a broker silent for
    /// twice this long counts as gone.
    pub keep_alive: Duration,
    /// How long connecting (up to the broker's answer) may take.
    pub timeout: Duration,
    /// How old the newest payload may be before samples say `stale`
    /// (`None`: never; topics that change rarely are not stale).
    pub stale_after: Option<Duration>,
    /// The values of a sample, in this order.
    pub read: Vec<MqttInput>,
    /// The values a write carries, in this order.
    pub write: Vec<MqttOutput>,
    pub sparkplug: Option<SparkplugConfig>,
}

/// A value of a sample: the latest payload of a topic, or the latest
/// `DCMD` value of a Sparkplug metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttInput {
    pub name: String,
    pub route: Route,
    /// Its value until the first message (`None`: samples are
    /// `unavailable` until one arrives).
    pub initial: Option<f64>,
}

/// A value of a write: published to a topic, or as a `DDATA` metric.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttOutput {
    pub name: String,
    pub route: Route,
    /// Plain topics: the broker keeps the last value for late subscribers.
    pub retain: bool,
}

/// Where a signal's value travels.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Topic {
        topic: String,
        qos: Qos,
        format: Format,
    },
    /// A Sparkplug B metric of the device's edge node (`Double`).
    Metric(String),
}

/// MQTT's delivery guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// How a plain topic's payload holds its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// A decimal number as UTF-8 text (`21.5`; `true`/`false` read 1/0).
    Text,
    /// A number or boolean inside a JSON document, at an RFC 6901 pointer
    /// (`"/value"`); a write publishes a document with only that member.
    Json { pointer: String },
    /// 8 bytes, an IEEE 754 double, little-endian.
    F64Le,
    /// 4 bytes, an IEEE 754 float, little-endian.
    F32Le,
}

/// The device as a Sparkplug B edge node: `spBv1.0/<group>/…/<edge_node>`
/// for the node's births, deaths and commands, `…/<device>` for the
/// device's.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugConfig {
    pub group: String,
    pub edge_node: String,
    pub device: String,
}

pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(2);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMqtt {
    broker: String,
    client_id: Option<String>,
    keep_alive: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    #[serde(default)]
    read: Vec<RawSignal>,
    #[serde(default)]
    write: Vec<RawSignal>,
    sparkplug: Option<RawSparkplug>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignal {
    name: String,
    topic: Option<String>,
    metric: Option<String>,
    format: Option<String>,
    pointer: Option<String>,
    qos: Option<u8>,
    retain: Option<bool>,
    initial: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplug {
    group: String,
    edge_node: String,
    device: String,
}

pub(super) fn mqtt(raw: RawMqtt) -> Result<MqttConfig, String> {
    check_address("broker", &raw.broker, "127.0.0.1:1883")?;
    let keep_alive = duration("keep_alive", &raw.keep_alive, DEFAULT_KEEP_ALIVE)?;
    if keep_alive < Duration::from_secs(1) || keep_alive.subsec_nanos() != 0 {
        return Err(format!(
            "keep_alive: {keep_alive:?}: MQTT counts it in whole seconds, at least 1s"
        ));
    }
    let timeout = duration("timeout", &raw.timeout, DEFAULT_CONNECT_TIMEOUT)?;
    if timeout.is_zero() {
        return Err("timeout: must be more than 0".into());
    }
    let stale_after = match &raw.stale_after {
        None => None,
        Some(_) => Some(duration("stale_after", &raw.stale_after, Duration::ZERO)?),
    };
    if let Some(id) = &raw.client_id
        && (id.is_empty() || id.len() > 256)
    {
        return Err("client_id: 1 to 256 characters".into());
    }
    let sparkplug = raw.sparkplug.map(sparkplug).transpose()?;
    let read = signals("read", raw.read, sparkplug.is_some())?;
    let write = signals("write", raw.write, sparkplug.is_some())?;
    if read.is_empty() && write.is_empty() && sparkplug.is_none() {
        return Err(
            "declares no signals: add [[devices.<name>.read]] or [[devices.<name>.write]] tables"
                .into(),
        );
    }
    Ok(MqttConfig {
        broker: raw.broker,
        client_id: raw.client_id,
        keep_alive,
        timeout,
        stale_after,
        read: read
            .into_iter()
            .map(|s| MqttInput {
                name: s.name,
                route: s.route,
                initial: s.initial,
            })
            .collect(),
        write: write
            .into_iter()
            .map(|s| MqttOutput {
                name: s.name,
                route: s.route,
                retain: s.retain,
            })
            .collect(),
        sparkplug,
    })
}

fn sparkplug(raw: RawSparkplug) -> Result<SparkplugConfig, String> {
    for (key, value) in [
        ("group", &raw.group),
        ("edge_node", &raw.edge_node),
        ("device", &raw.device),
    ] {
        if value.is_empty() || value.contains(['/', '+', '#']) {
            return Err(format!(
                "sparkplug.{key}: {value:?} must be non-empty, without `/`, `+` or `#`"
            ));
        }
    }
    Ok(SparkplugConfig {
        group: raw.group,
        edge_node: raw.edge_node,
        device: raw.device,
    })
}

/// A signal of either list, checked.
struct Checked {
    name: String,
    route: Route,
    retain: bool,
    initial: Option<f64>,
}

fn signals(list: &str, raw: Vec<RawSignal>, sparkplug: bool) -> Result<Vec<Checked>, String> {
    let mut names = SignalNames::new(list);
    let mut routes = BTreeSet::new();
    raw.into_iter()
        .map(|s| {
            let at = names.check(&s.name)?;
            let route = route(&s, sparkplug).map_err(|e| format!("{at}: {e}"))?;
            if !routes.insert(route_key(&route, list)) {
                return Err(format!(
                    "{at}: another {list} signal has the same topic or metric"
                ));
            }
            if list == "read" && s.retain.is_some() {
                return Err(format!("{at}: retain is for write signals"));
            }
            if list == "write" && s.initial.is_some() {
                return Err(format!("{at}: initial is for read signals"));
            }
            if s.initial.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{at}: initial must be a finite number"));
            }
            Ok(Checked {
                name: s.name,
                route,
                retain: s.retain.unwrap_or(false),
                initial: s.initial,
            })
        })
        .collect()
}

/// What two signals of one list may not share: a metric; a topic to write;
/// a topic read the same way (reads of one JSON topic may take different
/// pointers).
fn route_key(route: &Route, list: &str) -> String {
    match route {
        Route::Metric(name) => format!("metric {name}"),
        Route::Topic { topic, .. } if list == "write" => format!("topic {topic}"),
        Route::Topic { topic, format, .. } => format!("topic {topic} {format:?}"),
    }
}

fn route(s: &RawSignal, sparkplug: bool) -> Result<Route, String> {
    match (&s.topic, &s.metric) {
        (Some(_), Some(_)) => Err("a topic or a metric, not both".into()),
        (None, None) => Err("needs a `topic` (or, for a Sparkplug device, a `metric`)".into()),
        (None, Some(metric)) => {
            if !sparkplug {
                return Err("a metric needs the device's [devices.<name>.sparkplug] table".into());
            }
            if metric.is_empty() {
                return Err("metric: must not be empty".into());
            }
            if let Some(key) = [
                ("format", s.format.is_some()),
                ("pointer", s.pointer.is_some()),
                ("qos", s.qos.is_some()),
                ("retain", s.retain.is_some()),
            ]
            .iter()
            .find_map(|(key, set)| set.then_some(key))
            {
                return Err(format!(
                    "{key}: Sparkplug fixes it for metrics (Double values in DCMD/DDATA)"
                ));
            }
            Ok(Route::Metric(metric.clone()))
        }
        (Some(topic), None) => {
            if topic.is_empty() || topic.contains(['+', '#', '\0']) {
                return Err(format!(
                    "topic: {topic:?} must be one topic (non-empty, no `+` or `#` wildcard)"
                ));
            }
            if sparkplug && topic.starts_with("spBv1.0/") {
                return Err(format!(
                    "topic: {topic:?} is in the Sparkplug namespace: use a `metric`"
                ));
            }
            let qos = match s.qos.unwrap_or(1) {
                0 => Qos::AtMostOnce,
                1 => Qos::AtLeastOnce,
                2 => Qos::ExactlyOnce,
                n => return Err(format!("qos: {n} is not 0, 1 or 2")),
            };
            Ok(Route::Topic {
                topic: topic.clone(),
                qos,
                format: format(s.format.as_deref(), s.pointer.as_deref())?,
            })
        }
    }
}

fn format(format: Option<&str>, pointer: Option<&str>) -> Result<Format, String> {
    let format = match (format.unwrap_or("text"), pointer) {
        ("json", Some(pointer)) => {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "pointer: {pointer:?} is not a JSON pointer (it starts with `/`, e.g. \"/value\")"
                ));
            }
            Format::Json {
                pointer: pointer.to_string(),
            }
        }
        ("json", None) => {
            return Err("format json needs a `pointer` to the value (e.g. \"/value\")".into());
        }
        (_, Some(_)) => return Err("pointer: only for format json".into()),
        ("text", None) => Format::Text,
        ("f64-le", None) => Format::F64Le,
        ("f32-le", None) => Format::F32Le,
        (other, None) => {
            return Err(format!(
                "format: {other:?} is not one of text, json, f64-le, f32-le"
            ));
        }
    };
    Ok(format)
}
