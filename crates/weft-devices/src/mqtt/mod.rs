//! The MQTT bridge: a client (rumqttc) per device whose subscribed topics
//! fill the device's latch as messages arrive, and whose writes go out as
//! publishes, or as Sparkplug B `DDATA` when the device is an edge node.
//!
//! MQTT pushes; nothing is polled. Every message that arrives becomes a
//! new scan of the whole sample (the other signals keep their latest
//! values), so a process reads it at the first tag released after it
//! arrived. A sample is `unavailable` until every read signal has had a
//! value (a message, or its `initial`).
//!
//! rumqttc reconnects on its own, but does not subscribe again after a
//! reconnect (rumqtt#250) and keeps the will of its first connect, while a
//! Sparkplug edge node needs a new `bdSeq` in the will of every connection.
//! So each connection is a fresh client, made after the link's backoff,
//! that subscribes and publishes its births when the broker accepts it.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter,
};
use weft_abi::sample::Quality;

use crate::config::{self, MqttConfig, Qos, Route};
use crate::latch::Scan;
use crate::link::{FIRST_BACKOFF, Link, unix_ns};
use crate::sparkplug::{self, EdgeNode, Metric, Topics};

mod payload;

pub use payload::{decode, encode};

/// Requests the client may queue before `try_publish` refuses.
const CLIENT_QUEUE: usize = 256;

/// Starts the device's link thread.
pub fn spawn(link: Arc<Link>, config: MqttConfig) -> std::io::Result<()> {
    let driver = link.clone();
    link.spawn_driver(move || async move { Driver::new(driver, config).run().await })
}

struct Driver {
    link: Arc<Link>,
    config: MqttConfig,
    /// The latest value of each read signal (`None`: none yet).
    inputs: RefCell<Vec<Option<f64>>>,
    /// The arrival of the newest input, monotonic and Unix ns.
    arrived: Cell<(u64, u64)>,
    /// The latest value written to each output (NaN: never), for births.
    outputs: RefCell<Vec<f64>>,
    edge: Option<(Topics, RefCell<EdgeNode>)>,
    /// The sequence number of the newest scan latched.
    seq: Cell<u32>,
}

impl Driver {
    fn new(link: Arc<Link>, config: MqttConfig) -> Driver {
        Driver {
            inputs: RefCell::new(config.read.iter().map(|s| s.initial).collect()),
            arrived: Cell::new((0, 0)),
            outputs: RefCell::new(vec![f64::NAN; config.write.len()]),
            edge: config
                .sparkplug
                .as_ref()
                .map(|s| (Topics::new(s), RefCell::default())),
            seq: Cell::new(0),
            link,
            config,
        }
    }

    async fn run(self) {
        let mut backoff = FIRST_BACKOFF;
        let mut connections = 0u64;
        while !self.link.stopped() {
            let result = self.session(&mut connections, &mut backoff).await;
            if self.link.stopped() {
                break;
            }
            let error = result.err().unwrap_or_else(|| anyhow::anyhow!("closed"));
            self.link.went_down(error);
            self.link.pause(&mut backoff);
        }
    }

    /// One connection, from CONNECT until it fails or the link stops.
    async fn session(&self, connections: &mut u64, backoff: &mut Duration) -> anyhow::Result<()> {
        let (client, mut events) = AsyncClient::new(self.options()?, CLIENT_QUEUE);
        let connected = Cell::new(false);
        let reader = async {
            loop {
                let event = events.poll().await.with_context(|| match connected.get() {
                    true => format!("connection to {} lost", self.config.broker),
                    false => format!("cannot connect to {}", self.config.broker),
                })?;
                match event {
                    Event::Incoming(Packet::ConnAck(ack)) => {
                        if ack.code != ConnectReturnCode::Success {
                            bail!("the broker refused the connection: {:?}", ack.code);
                        }
                        *connections += 1;
                        self.link.came_up(*connections > 1);
                        *backoff = FIRST_BACKOFF;
                        self.on_connected(&client)?;
                        connected.set(true);
                        // Writes queued while down go out now.
                        self.write_pending(&client);
                    }
                    Event::Incoming(Packet::Publish(message)) => {
                        self.on_message(&client, &message.topic, &message.payload)?;
                    }
                    Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
                    _ => {}
                }
            }
        };
        let writer = async {
            loop {
                self.link.flushed().await;
                if self.link.stopped() {
                    // The reader sends the goodbye, if the broker listens.
                    self.goodbye(&client);
                    tokio::time::sleep(self.config.timeout).await;
                    return Ok(());
                }
                if connected.get() {
                    self.write_pending(&client);
                }
            }
        };
        let first_answer = async {
            tokio::time::sleep(self.config.timeout).await;
            if !connected.get() {
                bail!("no CONNACK within {:?}", self.config.timeout);
            }
            std::future::pending().await
        };
        tokio::select! {
            r = reader => r,
            r = writer => r,
            r = first_answer => r,
        }
    }

    fn options(&self) -> anyhow::Result<MqttOptions> {
        let (host, port) =
            config::host_port(&self.config.broker).context("broker is not host:port")?;
        let id = self
            .config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("weft-{}-{}", self.link.name, std::process::id()));
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(self.config.keep_alive);
        options.set_clean_session(true);
        if let Some((topics, edge)) = &self.edge {
            let death = edge.borrow_mut().connect();
            options.set_last_will(LastWill::new(
                &topics.ndeath,
                death,
                QoS::AtLeastOnce,
                false,
            ));
        }
        Ok(options)
    }

    /// Subscribes (again: a new session has no subscriptions) and, for an
    /// edge node, publishes the births.
    fn on_connected(&self, client: &AsyncClient) -> anyhow::Result<()> {
        let mut filters: Vec<SubscribeFilter> = self
            .config
            .read
            .iter()
            .filter_map(|s| match &s.route {
                Route::Topic { topic, qos, .. } => {
                    Some(SubscribeFilter::new(topic.clone(), qos_of(*qos)))
                }
                Route::Metric(_) => None,
            })
            .collect();
        if let Some((topics, _)) = &self.edge {
            filters.push(SubscribeFilter::new(topics.ncmd.clone(), QoS::AtLeastOnce));
            filters.push(SubscribeFilter::new(topics.dcmd.clone(), QoS::AtLeastOnce));
        }
        if !filters.is_empty() {
            client
                .try_subscribe_many(filters)
                .context("cannot subscribe")?;
        }
        self.births(client)?;
        // A new sample: the link is up again, with the values it had.
        self.push_sample();
        Ok(())
    }

    fn births(&self, client: &AsyncClient) -> anyhow::Result<()> {
        let Some((topics, edge)) = &self.edge else {
            return Ok(());
        };
        let metrics = self.metric_values();
        let (nbirth, dbirth) = edge.borrow_mut().births(metrics);
        publish(client, &topics.nbirth, QoS::AtMostOnce, false, nbirth)?;
        publish(client, &topics.dbirth, QoS::AtMostOnce, false, dbirth)
    }

    /// Every metric of the device with its latest value, for `DBIRTH`.
    fn metric_values(&self) -> Vec<Metric> {
        let inputs = self.inputs.borrow();
        let outputs = self.outputs.borrow();
        let reads = self.config.read.iter().zip(inputs.iter());
        let reads = reads.map(|(s, v)| (&s.route, v.unwrap_or(f64::NAN)));
        let writes = self.config.write.iter().zip(outputs.iter());
        let writes = writes.map(|(s, v)| (&s.route, *v));
        reads
            .chain(writes)
            .filter_map(|(route, value)| match route {
                Route::Metric(name) => Some(Metric::double(name, value)),
                Route::Topic { .. } => None,
            })
            .collect()
    }

    fn on_message(&self, client: &AsyncClient, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        if let Some((topics, _)) = &self.edge {
            if topic == topics.ncmd {
                return self.on_node_command(client, payload);
            }
            if topic == topics.dcmd {
                self.on_device_command(payload);
                return Ok(());
            }
        }
        let mut changed = false;
        for (i, signal) in self.config.read.iter().enumerate() {
            let Route::Topic {
                topic: t, format, ..
            } = &signal.route
            else {
                continue;
            };
            if t != topic {
                continue;
            }
            match decode(format, payload) {
                Ok(value) => {
                    self.inputs.borrow_mut()[i] = Some(value);
                    changed = true;
                }
                Err(why) => self
                    .link
                    .complain(format!("read `{}`: topic {topic}: {why}", signal.name)),
            }
        }
        if changed {
            self.arrived_now();
        }
        Ok(())
    }

    fn on_node_command(&self, client: &AsyncClient, payload: &[u8]) -> anyhow::Result<()> {
        match sparkplug::decode(payload) {
            Ok(command) if sparkplug::asks_rebirth(&command) => self.births(client),
            Ok(_) => Ok(()),
            Err(e) => {
                self.link
                    .complain(format!("NCMD: not a Sparkplug B payload: {e}"));
                Ok(())
            }
        }
    }

    /// A `DCMD`: the values of the read metrics it names.
    fn on_device_command(&self, payload: &[u8]) {
        let command = match sparkplug::decode(payload) {
            Ok(command) => command,
            Err(e) => {
                self.link
                    .complain(format!("DCMD: not a Sparkplug B payload: {e}"));
                return;
            }
        };
        let mut changed = false;
        for metric in &command.metrics {
            let (Some(name), Some(value)) = (metric.name.as_deref(), metric.number()) else {
                continue;
            };
            let index = self
                .config
                .read
                .iter()
                .position(|s| s.route == Route::Metric(name.to_string()));
            match index {
                Some(i) => {
                    self.inputs.borrow_mut()[i] = Some(value);
                    changed = true;
                }
                None => self.link.complain(format!(
                    "DCMD: metric {name:?} is not a read metric of this device"
                )),
            }
        }
        if changed {
            self.arrived_now();
        }
    }

    fn arrived_now(&self) {
        self.arrived
            .set((weft_runtime::rt::monotonic_ns(), unix_ns()));
        self.link.received();
        self.push_sample();
    }

    /// Latches the current values as a new scan.
    fn push_sample(&self) {
        let inputs = self.inputs.borrow();
        let complete = inputs.iter().all(Option::is_some);
        let (values_ns, unix) = self.arrived.get();
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        self.link.latch.push(Scan {
            at_ns: weft_runtime::rt::monotonic_ns(),
            values_ns,
            unix_ns: unix,
            seq,
            quality: if complete {
                Quality::Good
            } else {
                Quality::Unavailable
            },
            code: 0,
            values: inputs.iter().map(|v| v.unwrap_or(f64::NAN)).collect(),
        });
    }

    /// Publishes the flushed write, if any: a publish per plain topic, and
    /// one `DDATA` for every metric it sets. A write the client cannot
    /// queue (it is not keeping up with the broker) is dropped and said so;
    /// the connection stays.
    fn write_pending(&self, client: &AsyncClient) {
        let Some(values) = self.link.take_flushed() else {
            return;
        };
        let mut metrics = Vec::new();
        let mut failed = Ok(());
        for (i, (signal, value)) in self.config.write.iter().zip(values).enumerate() {
            if value.is_nan() {
                continue;
            }
            self.outputs.borrow_mut()[i] = value;
            match &signal.route {
                Route::Topic { topic, qos, format } => {
                    let payload = encode(format, value);
                    failed =
                        failed.and(publish(client, topic, qos_of(*qos), signal.retain, payload));
                }
                Route::Metric(name) => metrics.push(Metric::double(name, value)),
            }
        }
        if let (Some((topics, edge)), false) = (&self.edge, metrics.is_empty()) {
            let data = edge.borrow_mut().payload(metrics);
            failed = failed.and(publish(client, &topics.ddata, QoS::AtMostOnce, false, data));
        }
        match failed {
            Ok(()) => self.link.wrote(None),
            Err(e) => self.link.complain(format!("write dropped: {e:#}")),
        }
    }

    /// A clean goodbye: an edge node says it is going (the broker does not
    /// send the will after a DISCONNECT), then the client disconnects.
    fn goodbye(&self, client: &AsyncClient) {
        if let Some((topics, edge)) = &self.edge {
            let edge = edge.borrow();
            let _ = client.try_publish(&topics.ndeath, QoS::AtLeastOnce, false, edge.death());
        }
        let _ = client.try_disconnect();
    }
}

fn publish(
    client: &AsyncClient,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    client
        .try_publish(topic, qos, retain, payload)
        .with_context(|| format!("cannot publish on {topic} (the client's queue is full)"))
}

fn qos_of(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}
