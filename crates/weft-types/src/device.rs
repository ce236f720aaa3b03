//! What a node reports about each device it offers (`weft nodes`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceKind, DeviceName, LinkState};

/// One device of a node, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub name: DeviceName,
    pub kind: DeviceKind,
    pub state: LinkState,
    /// Times the link came back after it went down.
    #[serde(default)]
    pub reconnects: u64,
    /// Requests that got no answer within the device's `timeout`.
    #[serde(default)]
    pub timeouts: u64,
    /// Scans that succeeded (a Modbus scan reads every declared range).
    #[serde(default)]
    pub scans: u64,
    /// Writes that reached the device.
    #[serde(default)]
    pub writes: u64,
    /// The newest failure, for an operator: what failed and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl DeviceReport {
    /// A device that is a model inside the node.
    pub fn simulated(name: DeviceName, kind: DeviceKind) -> DeviceReport {
        DeviceReport {
            name,
            kind,
            state: LinkState::Simulated,
            reconnects: 0,
            timeouts: 0,
            scans: 0,
            writes: 0,
            last_error: None,
        }
    }
}

/// `plant(modbus-tcp connected)`, or `plant(sim-thermal)` for a model.
impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            LinkState::Simulated => write!(f, "{}({})", self.name, self.kind),
            state => write!(f, "{}({} {state})", self.name, self.kind),
        }
    }
}
