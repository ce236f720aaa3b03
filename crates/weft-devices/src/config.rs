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
use weft_types::{DeviceKind, DeviceName};

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
}

impl DeviceConfig {
    pub fn kind(&self) -> DeviceKind {
        match self {
            DeviceConfig::SimThermal => DeviceKind::SimThermal,
            DeviceConfig::ModbusTcp(_) => DeviceKind::ModbusTcp,
        }
    }
}

/// A Modbus TCP server the node polls.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusConfig {
    /// `host:port`, resolved at every (re)connect.
    pub address: String,
    /// The unit (slave) id requests carry.
    pub unit: u8,
    /// How often every `read` signal is read.
    pub scan: Duration,
    /// How long one request may take before the link counts as down.
    pub timeout: Duration,
    /// How old the newest values may be before samples say `stale`.
    pub stale_after: Duration,
    /// The values of a sample, in this order.
    pub read: Vec<Signal>,
    /// The values a write carries, in this order.
    pub write: Vec<Signal>,
}

/// One named value on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub name: String,
    pub table: Table,
    /// 0-based wire address of its first register or bit.
    pub addr: u16,
    pub value: ValueType,
    /// value = raw · scale (reads); raw = round(value / scale) (writes).
    pub scale: f64,
    pub word_order: WordOrder,
}

impl Signal {
    /// Registers or bits it spans.
    pub fn width(&self) -> u16 {
        match self.value {
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 2,
            _ => 1,
        }
    }
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Input registers (read only, 16 bits).
    Input,
    /// Holding registers (read and write, 16 bits).
    Holding,
    /// Coils (read and write, 1 bit).
    Coil,
    /// Discrete inputs (read only, 1 bit).
    Discrete,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Most items one request may read (Modbus' PDU limit).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }
}

/// How a signal's registers encode its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
}

/// Which register of a 32-bit value comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordOrder {
    /// The high word at the lower address (the common Modbus convention).
    #[default]
    HighFirst,
    LowFirst,
}

/// A config that cannot be used, and where.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{message}", file.display(), device.as_ref().map(|d| format!("device `{d}`: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub device: Option<String>,
    pub message: String,
}

/// The defaults of a Modbus device, and the least a scan period may be.
pub const DEFAULT_SCAN: Duration = Duration::from_millis(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
pub const MIN_SCAN: Duration = Duration::from_millis(1);
/// `stale_after` defaults to this many scan periods.
pub const STALE_SCANS: u32 = 5;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    address: String,
    #[serde(default = "one")]
    unit: u8,
    scan: Option<String>,
    timeout: Option<String>,
    stale_after: Option<String>,
    #[serde(default)]
    read: Vec<RawSignal>,
    #[serde(default)]
    write: Vec<RawSignal>,
}

fn one() -> u8 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignal {
    name: String,
    table: Table,
    addr: u32,
    #[serde(rename = "type")]
    value: Option<ValueType>,
    #[serde(default = "unit_scale")]
    scale: f64,
    #[serde(default)]
    word_order: WordOrder,
}

fn unit_scale() -> f64 {
    1.0
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
        DeviceKind::ModbusTcp => {
            let raw: RawModbus = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| e.message().to_string())?;
            modbus(raw).map(DeviceConfig::ModbusTcp)
        }
    }
}

fn modbus(raw: RawModbus) -> Result<ModbusConfig, String> {
    match raw.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => {
            return Err(format!(
                "address: {:?} is not host:port (e.g. \"127.0.0.1:502\")",
                raw.address
            ));
        }
    }
    let duration = |key: &str, text: &Option<String>, default: Duration| match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|e| format!("{key}: {t:?}: {e}")),
    };
    let scan = duration("scan", &raw.scan, DEFAULT_SCAN)?;
    if scan < MIN_SCAN {
        return Err(format!(
            "scan: {scan:?} is too often: at least {MIN_SCAN:?}"
        ));
    }
    let timeout = duration("timeout", &raw.timeout, DEFAULT_TIMEOUT)?;
    if timeout.is_zero() {
        return Err("timeout: must be more than 0".into());
    }
    let stale_after = duration("stale_after", &raw.stale_after, scan * STALE_SCANS)?;
    if stale_after < scan {
        return Err(format!(
            "stale_after: {stale_after:?} is shorter than the scan period {scan:?}"
        ));
    }
    let read = signals(
        "read",
        raw.read,
        &[Table::Input, Table::Holding, Table::Coil, Table::Discrete],
    )?;
    let write = signals("write", raw.write, &[Table::Holding, Table::Coil])?;
    if read.is_empty() && write.is_empty() {
        return Err(
            "declares no signals: add [[devices.<name>.read]] or [[devices.<name>.write]] tables"
                .into(),
        );
    }
    Ok(ModbusConfig {
        address: raw.address,
        unit: raw.unit,
        scan,
        timeout,
        stale_after,
        read,
        write,
    })
}

fn signals(list: &str, raw: Vec<RawSignal>, tables: &[Table]) -> Result<Vec<Signal>, String> {
    let mut names = BTreeSet::new();
    raw.into_iter()
        .map(|s| {
            let at = format!("{list} `{}`", s.name);
            if s.name.is_empty() {
                return Err(format!("{list}: a signal without a name"));
            }
            if !names.insert(s.name.clone()) {
                return Err(format!("{at}: declared twice"));
            }
            if !tables.contains(&s.table) {
                return Err(format!(
                    "{at}: table {:?} cannot be {}",
                    s.table,
                    if list == "write" { "written (use holding or coil)" } else { "read" }
                ));
            }
            let value = s.value.unwrap_or(if s.table.is_bits() { ValueType::Bool } else { ValueType::U16 });
            if s.table.is_bits() != (value == ValueType::Bool) {
                return Err(format!(
                    "{at}: type {value:?} does not fit table {:?} (bits are bool, registers are numbers)",
                    s.table
                ));
            }
            if !s.scale.is_finite() || s.scale == 0.0 {
                return Err(format!("{at}: scale must be a finite number other than 0"));
            }
            let signal = Signal {
                name: s.name,
                table: s.table,
                addr: u16::try_from(s.addr).map_err(|_| format!("{at}: addr {} is past 65535", s.addr))?,
                value,
                scale: s.scale,
                word_order: s.word_order,
            };
            if u32::from(signal.addr) + u32::from(signal.width()) > 65536 {
                return Err(format!("{at}: runs past address 65535"));
            }
            Ok(signal)
        })
        .collect()
}

#[cfg(test)]
mod tests;
