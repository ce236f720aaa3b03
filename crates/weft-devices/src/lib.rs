//! The devices a weft node offers.
//!
//! A node declares its devices in its node config (`config`); a manifest
//! grants them to processes (`device:<name>`). Each real device gets a
//! link thread (`link`) that drives one protocol, a polled bridge
//! (`modbus`) or a pushing driver (`mqtt`, with `sparkplug` for edge
//! nodes), and fills the device's process image (`latch`); a process's
//! `device_read` only takes the sample latched for its tag, so it never
//! waits for the network, and every reader at one tag sees the same bytes.
//! `plant_server` is a thermal plant over Modbus TCP or MQTT, for demos
//! and tests.
//!
//! `docs/devices.md` is the user's reference.

pub mod config;
pub mod latch;
pub mod link;
pub mod modbus;
pub mod mqtt;
pub mod plant_server;
pub mod sparkplug;

use std::sync::Arc;
use std::time::Duration;

use weft_runtime::device::{Device, Devices, ReadAt, ThermalPlant};
use weft_types::{DeviceKind, DeviceName, DeviceReport, Tag};

pub use config::{ConfigError, DeviceConfig, NodeConfig};
use link::{Link, Pacing};

/// A node's devices, running: what processes open, and what its status
/// says about each. Dropping it stops the links.
pub struct NodeDevices {
    devices: Devices,
    reports: Vec<Reporter>,
}

enum Reporter {
    Simulated(DeviceName, DeviceKind),
    Link(Arc<Link>),
}

impl NodeDevices {
    /// Starts a link thread for every real device of `config`.
    pub fn start(config: &NodeConfig) -> std::io::Result<NodeDevices> {
        let mut devices = Devices::new();
        let mut reports = Vec::new();
        for (name, device) in &config.devices {
            match device {
                DeviceConfig::SimThermal => {
                    devices.add(name.as_str(), Arc::new(ThermalPlant::default()));
                    reports.push(Reporter::Simulated(name.clone(), device.kind()));
                }
                DeviceConfig::ModbusTcp(modbus) => {
                    let pacing = Pacing {
                        scan: modbus.scan,
                        timeout: modbus.timeout,
                        stale_after: modbus.stale_after,
                    };
                    let link = Link::new(name.clone(), device.kind(), modbus.read.len(), pacing);
                    let link = Arc::new(link);
                    link.clone()
                        .spawn(modbus::ModbusBridge::new(modbus.clone()))?;
                    add_link(&mut devices, &mut reports, link, modbus.write.len());
                }
                DeviceConfig::Mqtt(mqtt) => {
                    let pacing = Pacing {
                        scan: Duration::ZERO, // pushed, never polled
                        timeout: mqtt.timeout,
                        stale_after: mqtt.stale_after.unwrap_or(Duration::MAX),
                    };
                    let link = Link::new(name.clone(), device.kind(), mqtt.read.len(), pacing);
                    let link = Arc::new(link);
                    mqtt::spawn(link.clone(), mqtt.clone())?;
                    add_link(&mut devices, &mut reports, link, mqtt.write.len());
                }
            }
        }
        Ok(NodeDevices { devices, reports })
    }

    /// The devices, for the node's processes.
    pub fn devices(&self) -> Devices {
        self.devices.clone()
    }

    /// Every device's names, in order.
    pub fn names(&self) -> Vec<String> {
        self.reports()
            .into_iter()
            .map(|r| r.name.to_string())
            .collect()
    }

    /// What each device is doing now.
    pub fn reports(&self) -> Vec<DeviceReport> {
        self.reports
            .iter()
            .map(|r| match r {
                Reporter::Simulated(name, kind) => DeviceReport::simulated(name.clone(), *kind),
                Reporter::Link(link) => link.report(),
            })
            .collect()
    }
}

impl Drop for NodeDevices {
    fn drop(&mut self) {
        for r in &self.reports {
            if let Reporter::Link(link) = r {
                link.stop();
            }
        }
    }
}

/// Offers a started link's device to processes, and reports on it.
fn add_link(devices: &mut Devices, reports: &mut Vec<Reporter>, link: Arc<Link>, outputs: usize) {
    let device = Bridged {
        link: link.clone(),
        outputs,
    };
    devices.add(link.name.as_str(), Arc::new(device));
    reports.push(Reporter::Link(link));
}

/// A real device as processes see it: reads from its latch, writes queued
/// for its link task.
struct Bridged {
    link: Arc<Link>,
    outputs: usize,
}

impl Device for Bridged {
    fn read(&self, at: ReadAt) -> bytes::Bytes {
        self.link.latch.read(at.release_ns)
    }

    fn write(&self, _tag: Tag, data: &[u8]) -> Result<(), String> {
        self.check_write(data)?;
        let values = data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        self.link.queue_write(values);
        Ok(())
    }

    fn flush(&self) {
        self.link.flush();
    }

    fn fenced(&self) -> bool {
        true
    }

    fn check_write(&self, data: &[u8]) -> Result<(), String> {
        if data.len() != 8 * self.outputs {
            return Err(format!(
                "device {}: a write is {} bytes (one f64 per output of its `write` list, {}), not {}",
                self.link.name,
                8 * self.outputs,
                self.outputs,
                data.len()
            ));
        }
        let infinite = data
            .chunks_exact(8)
            .any(|c| f64::from_le_bytes(c.try_into().unwrap()).is_infinite());
        match infinite {
            true => Err(format!(
                "device {}: a write value is infinite",
                self.link.name
            )),
            false => Ok(()),
        }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.link.report()).unwrap_or_default()
    }
}
