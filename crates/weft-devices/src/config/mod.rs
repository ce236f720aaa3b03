//! The node config (`weft node --config node.toml`): the devices a node
//! offers, one `[devices.<name>]` table each.
//!
//! A config is parsed and checked whole before the node starts: a typo, a
//! missing key or an impossible value is refused with the file, the device
//! and the key named, and nothing runs. The reference is `docs/devices.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use weft_types::{DeviceKind, DeviceName};

mod modbus;
mod mqtt;

pub use modbus::{
    DEFAULT_SCAN, DEFAULT_TIMEOUT, MIN_SCAN, ModbusConfig, STALE_SCANS, Signal, Table, ValueType,
    WordOrder,
};
pub use mqtt::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE, Format, MqttConfig, MqttInput, MqttOutput, Qos,
    Route, SparkplugConfig,
};

/// A node config: what `--config` points at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConfig {
    pub devices: BTreeMap<DeviceName, DeviceConfig>,
}

/// One device and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceConfig {
    /// The simulated thermal plant (`kind = "sim-thermal"`).
    SimThermal,
    ModbusTcp(ModbusConfig),
    Mqtt(MqttConfig),
}

impl DeviceConfig {
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceConfig::SimThermal => DeviceKind::SimThermal,
            DeviceConfig::ModbusTcp(_) => DeviceKind::ModbusTcp,
            DeviceConfig::Mqtt(_) => DeviceKind::Mqtt,
        }
    }
}

/// A config that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), device.as_ref().map(|d| format!("device `{d}`: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub device: Option<String>,
    pub message: String,
}

impl NodeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.into(),
            device: None,
            message: format!("cannot read the node config: {e}"),
        })?;
        NodeConfig::parse(&text, path)
    }

    /// Parses and checks `text`, naming `file` in errors.
    pub fn parse(text: &str, file: &Path) -> Result<NodeConfig, ConfigError> {
        let error = |device: Option<&str>, message: String| ConfigError {
            file: file.into(),
            device: device.map(str::to_string),
            message,
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| error(None, e.message().to_string()))?;
        let mut devices = BTreeMap::new();
        for (name, table) in raw.devices {
            let device: DeviceName = name
                .parse()
                .map_err(|e| error(Some(&name), format!("{e}")))?;
            let config = parse_device(table).map_err(|m| error(Some(&name), m))?;
            devices.insert(device, config);
        }
        Ok(NodeConfig { devices })
    }

    /// A config of simulated plants, one per name (`--device plant`).
    pub fn simulated<'a>(names: impl IntoIterator<Item = &'a DeviceName>) -> NodeConfig {
        NodeConfig {
            devices: names
                .into_iter()
                .map(|n| (n.clone(), DeviceConfig::SimThermal))
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    devices: BTreeMap<String, toml::Table>,
}

/// One `[devices.<name>]` table, its `kind` first.
fn parse_device(mut table: toml::Table) -> Result<DeviceConfig, String> {
    let kind = match table.remove("kind") {
        Some(toml::Value::String(kind)) => kind
            .parse::<DeviceKind>()
            .map_err(|e| format!("kind: {e}"))?,
        Some(other) => return Err(format!("kind: a string, not {}", other.type_str())),
        None => {
            return Err(format!(
                "missing key `kind` (one of: {})",
                DeviceKind::TEXTS.join(", ")
            ));
        }
    };
    match kind {
        DeviceKind::SimThermal => match table.keys().next() {
            Some(key) => Err(format!(
                "unknown key `{key}`: a sim-thermal device has none"
            )),
            None => Ok(DeviceConfig::SimThermal),
        },
        DeviceKind::ModbusTcp => modbus::modbus(typed(table)?).map(DeviceConfig::ModbusTcp),
        DeviceKind::Mqtt => mqtt::mqtt(typed(table)?).map(DeviceConfig::Mqtt),
    }
}

/// A device table as its kind's raw form (unknown keys refused).
fn typed<T: DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_string())
}

/// An optional duration key (`"5ms"`, `"2s"`), or its default.
fn duration(key: &str, text: &Option<String>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("{key}: {t:?}: {e}")),
    }
}

/// `host:port`, checked for shape (it is resolved at every connect).
fn check_address(key: &str, address: &str, example: &str) -> Result<(), String> {
    match host_port(address) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{key}: {address:?} is not host:port (e.g. \"{example}\")"
        )),
    }
}

/// `host:port` split, the port parsed; `None` when it is not that shape.
pub fn host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host, port.parse().ok()?)).filter(|_| !host.is_empty())
}

/// The names of one signal list (`read` or `write`), each checked as it
/// comes: not empty, not declared twice.
struct SignalNames<'a> {
    list: &'a str,
    seen: BTreeSet<String>,
}

impl<'a> SignalNames<'a> {
    fn new(list: &'a str) -> SignalNames<'a> {
        SignalNames {
            list,
            seen: BTreeSet::new(),
        }
    }

    /// Checks `name`; returns how errors about it start (``read `t` ``).
    fn check(&mut self, name: &str) -> Result<String, String> {
        let list = self.list;
        if name.is_empty() {
            return Err(format!("{list}: a signal without a name"));
        }
        let at = format!("{list} `{name}`");
        match self.seen.insert(name.to_string()) {
            true => Ok(at),
            false => Err(format!("{at}: declared twice")),
        }
    }
}

#[cfg(test)]
mod tests;
