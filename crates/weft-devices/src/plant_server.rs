//! A thermal plant that speaks Modbus TCP (`weft plant-sim`): the demo's
//! and the tests' real device.
//!
//! The same first-order model as the simulated `plant`, integrated in wall
//! time instead of tag time (it is the world, not part of a run). Its
//! register map:
//!
//! | table | address | value |
//! |---|---|---|
//! | input | 0 | water temperature, °C × 100 (`u16`) |
//! | input | 1–2 | writes received so far (`u32`, high word first) |
//! | holding | 10 | heater power, ‰ (`u16`, 0–1000; larger is clamped) |
//!
//! Any other address answers exception 2 (illegal data address); a request
//! for another unit id answers exception 11 (gateway target device failed
//! to respond), as a gateway would.
//!
//! Over MQTT ([`Plant::serve_mqtt`]) the same plant publishes
//! `<prefix>/temperature` (°C as text) every [`MQTT_PERIOD`] and takes the
//! heater power (0–1 as text) from `<prefix>/heater`.

use std::future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// How often the MQTT plant publishes its temperature.
pub const MQTT_PERIOD: Duration = Duration::from_millis(10);

/// A node config that reaches this plant at `address`: the example
/// `examples/field-io/plant.node.toml` with its address replaced.
pub fn node_config(address: SocketAddr) -> String {
    const EXAMPLE: &str = include_str!("../../../examples/field-io/plant.node.toml");
    EXAMPLE.replace("127.0.0.1:5020", &address.to_string())
}

/// The model's constants (the same plant as `weft_runtime`'s `ThermalPlant`).
pub const AMBIENT: f64 = 20.0;
pub const GAIN: f64 = 80.0;
pub const TAU_SECONDS: f64 = 2.0;

/// Where the values live.
pub const TEMPERATURE_INPUT: u16 = 0;
pub const WRITES_INPUT: u16 = 1;
pub const HEATER_HOLDING: u16 = 10;

/// The plant's state, shared by every connection.
#[derive(Clone)]
pub struct Plant {
    unit: u8,
    state: Arc<Mutex<State>>,
}

struct State {
    temperature: f64,
    heater_permille: u16,
    at: Instant,
    writes: u32,
}

impl Plant {
    pub fn new(unit: u8) -> Plant {
        Plant {
            unit,
            state: Arc::new(Mutex::new(State {
                temperature: AMBIENT,
                heater_permille: 0,
                at: Instant::now(),
                writes: 0,
            })),
        }
    }

    /// The temperature now (°C).
    pub fn temperature(&self) -> f64 {
        let mut s = self.state.lock().unwrap();
        advance(&mut s);
        s.temperature
    }

    /// Writes received so far.
    pub fn writes(&self) -> u32 {
        self.state.lock().unwrap().writes
    }

    /// Serves Modbus TCP on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let server = Server::new(listener);
        let plant = self;
        let on_connected = |stream: tokio::net::TcpStream, addr: SocketAddr| {
            let plant = plant.clone();
            let _ = stream.set_nodelay(true);
            future::ready(accept_tcp_connection(stream, addr, move |_| {
                Ok(Some(plant.clone()))
            }))
        };
        server
            .serve(&on_connected, |e| {
                tracing::debug!("plant-sim connection: {e}")
            })
            .await
    }

    /// Serves the plant on an MQTT broker (`host:port`) under `prefix`,
    /// until the task is dropped; it reconnects and subscribes again
    /// whenever the broker goes away.
    pub async fn serve_mqtt(self, broker: &str, prefix: &str) -> anyhow::Result<()> {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let (host, port) = crate::config::host_port(broker).ok_or_else(|| {
            anyhow::anyhow!("broker {broker:?} is not host:port (e.g. \"127.0.0.1:1883\")")
        })?;
        let id = format!("weft-plant-sim-{}", std::process::id());
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(Duration::from_secs(2));
        let (client, mut events) = AsyncClient::new(options, 64);
        let heater = format!("{prefix}/heater");
        let temperature = format!("{prefix}/temperature");
        let publisher = {
            let (client, plant) = (client.clone(), self.clone());
            async move {
                let mut tick = tokio::time::interval(MQTT_PERIOD);
                loop {
                    tick.tick().await;
                    let text = format!("{:.3}", plant.temperature());
                    // Dropped while the broker is away: the next one follows.
                    let _ = client.try_publish(&temperature, QoS::AtMostOnce, false, text);
                }
            }
        };
        let receiver = async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client.subscribe(&heater, QoS::AtLeastOnce).await?;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == heater => {
                        self.set_heater(&p.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("plant-sim: broker: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::select! {
            () = publisher => Ok(()),
            r = receiver => r,
        }
    }

    /// A heater write over MQTT: power 0–1 as text.
    fn set_heater(&self, payload: &[u8]) {
        let power = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok());
        let Some(power) = power.filter(|p| p.is_finite()) else {
            tracing::warn!("plant-sim: heater payload {payload:?} is not a number");
            return;
        };
        let mut s = self.state.lock().unwrap();
        advance(&mut s);
        s.heater_permille = (power.clamp(0.0, 1.0) * 1000.0).round() as u16;
        s.writes = s.writes.wrapping_add(1);
    }

    fn answer(&self, request: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        if request.slave != self.unit {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let mut s = self.state.lock().unwrap();
        advance(&mut s);
        match request.request {
            Request::ReadInputRegisters(addr, count) => {
                let image = [
                    (s.temperature * 100.0).round().clamp(0.0, 65535.0) as u16,
                    (s.writes >> 16) as u16,
                    s.writes as u16,
                ];
                registers(&image, TEMPERATURE_INPUT, addr, count).map(Response::ReadInputRegisters)
            }
            Request::ReadHoldingRegisters(addr, count) => {
                registers(&[s.heater_permille], HEATER_HOLDING, addr, count)
                    .map(Response::ReadHoldingRegisters)
            }
            Request::WriteSingleRegister(HEATER_HOLDING, value) => {
                s.heater_permille = value.min(1000);
                s.writes = s.writes.wrapping_add(1);
                Ok(Response::WriteSingleRegister(HEATER_HOLDING, value))
            }
            Request::WriteMultipleRegisters(HEATER_HOLDING, ref words) if words.len() == 1 => {
                s.heater_permille = words[0].min(1000);
                s.writes = s.writes.wrapping_add(1);
                Ok(Response::WriteMultipleRegisters(HEATER_HOLDING, 1))
            }
            Request::ReadCoils(..)
            | Request::ReadDiscreteInputs(..)
            | Request::WriteSingleRegister(..)
            | Request::WriteMultipleRegisters(..)
            | Request::WriteSingleCoil(..)
            | Request::WriteMultipleCoils(..) => Err(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

impl Service for Plant {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        future::ready(self.answer(request))
    }
}

/// `count` registers from `addr` of a block that starts at `base`.
fn registers(block: &[u16], base: u16, addr: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    let from = addr.checked_sub(base).map(usize::from);
    match from {
        Some(from) if count > 0 && from + usize::from(count) <= block.len() => {
            Ok(block[from..from + usize::from(count)].to_vec())
        }
        _ => Err(ExceptionCode::IllegalDataAddress),
    }
}

/// Integrates the model to now: exact for a constant heater.
fn advance(s: &mut State) {
    let now = Instant::now();
    let dt = now.duration_since(s.at).as_secs_f64();
    let steady = AMBIENT + GAIN * f64::from(s.heater_permille) / 1000.0;
    s.temperature = steady + (s.temperature - steady) * (-dt / TAU_SECONDS).exp();
    s.at = now;
}
