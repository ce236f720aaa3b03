//! The `modbus-tcp` device table: a server's address and unit, how often
//! to poll it, and its register/coil map of named signals.

use std::time::Duration;

use serde::Deserialize;

use super::{SignalNames, check_address, duration};

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

/// The defaults of a Modbus device, and the least a scan period may be.
pub const DEFAULT_SCAN: Duration = Duration::from_millis(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
pub const MIN_SCAN: Duration = Duration::from_millis(1);
/// `stale_after` defaults to this many scan periods.
pub const STALE_SCANS: u32 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModbus {
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

pub(super) fn modbus(raw: RawModbus) -> Result<ModbusConfig, String> {
    check_address("address", &raw.address, "127.0.0.1:502")?;
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
    let mut names = SignalNames::new(list);
    raw.into_iter()
        .map(|s| {
            let at = names.check(&s.name)?;
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
