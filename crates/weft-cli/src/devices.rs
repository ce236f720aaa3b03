//! The devices of a node, from the command line (`--config`, `--device`),
//! and `weft plant-sim`, a thermal plant that speaks Modbus TCP.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use weft_devices::NodeConfig;
use weft_devices::config::DeviceConfig;
use weft_devices::plant_server::{self, Plant};
use weft_types::DeviceName;

use crate::error::InputResult;

/// Where a node's devices come from.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// A node config (TOML) declaring the node's devices, `[devices.NAME]`
    /// tables (see docs/devices.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A simulated thermal plant this node offers under NAME (repeatable);
    /// the same as `[devices.NAME] kind = "sim-thermal"`.
    #[arg(long = "device", value_name = "NAME")]
    pub devices: Vec<DeviceName>,
}

impl DeviceArgs {
    /// The node config these flags describe, checked whole: nothing starts
    /// when any of it is wrong.
    pub fn node_config(&self) -> Result<NodeConfig> {
        let mut config = match &self.config {
            Some(path) => NodeConfig::load(path).bad_input()?,
            None => NodeConfig::default(),
        };
        for name in &self.devices {
            if config.devices.contains_key(name) {
                return Err(anyhow::anyhow!(
                    "--device {name}: the node config already declares a device `{name}`"
                ))
                .bad_input();
            }
            config
                .devices
                .insert(name.clone(), DeviceConfig::SimThermal);
        }
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct PlantSimArgs {
    /// Where to serve Modbus TCP.
    #[arg(long, default_value = "127.0.0.1:5020")]
    pub listen: SocketAddr,
    /// The unit id it answers (others get exception 11).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Speak MQTT instead, on this broker (`host:port`): publish
    /// `<prefix>/temperature`, take `<prefix>/heater`.
    #[arg(long, value_name = "BROKER")]
    pub mqtt: Option<String>,
    /// The topic prefix of `--mqtt`.
    #[arg(long, default_value = "plant", requires = "mqtt")]
    pub prefix: String,
}

/// Serves the plant until Ctrl-C or a signal.
pub async fn plant_sim(args: PlantSimArgs) -> Result<()> {
    if let Some(broker) = &args.mqtt {
        eprintln!(
            "plant simulator: MQTT on {broker}: publishes {p}/temperature (°C, text) every {:?}, \
             takes {p}/heater (0-1, text); Ctrl-C to stop",
            plant_server::MQTT_PERIOD,
            p = args.prefix,
        );
        return tokio::select! {
            served = Plant::new(args.unit).serve_mqtt(broker, &args.prefix) => served,
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => bail!("cannot listen on {}: {e}", args.listen),
    };
    eprintln!(
        "plant simulator: Modbus TCP on {} (unit {}): input {} = temperature °C×100, \
         input {}-{} = writes received, holding {} = heater ‰; Ctrl-C to stop",
        listener.local_addr()?,
        args.unit,
        plant_server::TEMPERATURE_INPUT,
        plant_server::WRITES_INPUT,
        plant_server::WRITES_INPUT + 1,
        plant_server::HEATER_HOLDING,
    );
    tokio::select! {
        served = Plant::new(args.unit).serve(listener) => Ok(served?),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
