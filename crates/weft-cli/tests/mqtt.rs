//! MQTT devices end to end, against Debian's mosquitto (started and killed
//! by PID by each test, without persistence): the PID's closed loop over
//! topics and its replay with the broker gone, latching and re-subscribing
//! across a broker restart, and a Sparkplug B edge node checked by
//! pysparkplug's decoder through a broker restart and a `kill -9`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weft_abi::sample::{Quality, Sample};
use weft_devices::{NodeConfig, NodeDevices};
use weft_runtime::device::{Device, ReadAt};
use weft_types::{LinkState, Tag};

mod support;

use support::{
    Daemon, assert_replays, f64_at, free_port, mosquitto, mqtt_node_config, mqtt_plant_sim,
    process, python_peer, repo, run_pid_against, wait, weft,
};

/// The README's MQTT example: the PID closes its loop through a broker
/// against `weft plant-sim --mqtt`, and its recording replays to the same
/// chains with broker and plant gone.
#[test]
fn the_pid_holds_the_setpoint_over_mqtt_and_replays_with_the_broker_gone() {
    let dir = tempfile::tempdir().unwrap();
    let broker = mosquitto(dir.path(), free_port());
    let plant = mqtt_plant_sim(broker.port);
    let config = mqtt_node_config(dir.path(), broker.port);
    let recording = dir.path().join("run.wrec");
    let report = run_pid_against(&config, &recording);
    assert_eq!(report["devices"]["plant"]["kind"], "mqtt");
    plant.kill();
    broker.kill();
    assert_replays(&recording);
}

/// A client beside the node: publishes, and keeps what arrives on the
/// topics it subscribed (again after every reconnect).
struct Peer {
    client: Client,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A message's topic and payload.
type Received = (String, Vec<u8>);

impl Peer {
    fn connect(port: u16, topics: &[&str]) -> Peer {
        let id = format!("weft-test-peer-{}", free_port());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(options, 64);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (sub, got) = (client.clone(), received.clone());
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &topics {
                            let _ = sub.try_subscribe(t, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        got.lock().unwrap().push((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Peer { client, received }
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes())
            .unwrap();
    }

    fn got(&self, topic: &str, payload: &str) -> bool {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .any(|(t, p)| t == topic && p == payload.as_bytes())
    }
}

fn read(device: &dyn Device) -> Sample {
    let at = ReadAt {
        tag: Tag::ZERO,
        release_ns: weft_runtime::rt::monotonic_ns(),
    };
    Sample::decode(&device.read(at)).unwrap()
}

/// Messages latch as they arrive, each a new sample; a payload that does
/// not decode is reported and changes nothing; a write is a publish; a
/// frozen broker is noticed; and after a broker restart the link
/// reconnects and subscribes again.
#[test]
fn topics_latch_as_they_arrive_and_the_link_resubscribes_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = mosquitto(dir.path(), port);
    let text = format!(
        r#"
[devices.cell]
kind = "mqtt"
broker = "127.0.0.1:{port}"
keep_alive = "1s"
[[devices.cell.read]]
name = "t"
topic = "in/t"
[[devices.cell.read]]
name = "level"
topic = "in/level"
format = "json"
pointer = "/tank/level"
[[devices.cell.write]]
name = "valve"
topic = "out/valve"
"#
    );
    let config = NodeConfig::parse(&text, Path::new("node.toml")).unwrap();
    let devices = NodeDevices::start(&config).unwrap();
    let cell = devices.devices().get("cell").unwrap().clone();
    let report = || devices.reports()[0].clone();
    wait("the link to connect", || {
        report().state == LinkState::Connected
    });
    let peer = Peer::connect(port, &["out/valve"]);
    assert_eq!(
        read(&*cell).quality,
        Quality::Unavailable,
        "no value for any signal yet"
    );

    peer.publish("in/t", "21.5");
    wait("t to arrive", || read(&*cell).values[0] == 21.5);
    assert_eq!(
        read(&*cell).quality,
        Quality::Unavailable,
        "level has none yet"
    );
    peer.publish("in/level", r#"{"tank": {"level": 3}}"#);
    wait("a complete sample", || {
        read(&*cell).quality == Quality::Good
    });
    let sample = read(&*cell);
    assert_eq!(sample.values, [21.5, 3.0]);

    peer.publish("in/t", "hot");
    wait("the bad payload to be reported", || {
        report().last_error.is_some()
    });
    assert_eq!(
        report().last_error.unwrap(),
        "read `t`: topic in/t: payload \"hot\" is not a number"
    );
    assert_eq!(
        read(&*cell).values,
        [21.5, 3.0],
        "a bad payload changes nothing"
    );

    cell.write(Tag::ZERO, &0.25f64.to_le_bytes()).unwrap();
    cell.flush();
    wait("the write to be published", || {
        peer.got("out/valve", "0.25")
    });

    // A frozen broker answers no ping: the link notices, and never blocks
    // a read meanwhile.
    broker.signal(libc::SIGSTOP);
    wait("a frozen broker to be noticed", || {
        read(&*cell).quality == Quality::Disconnected
    });
    broker.signal(libc::SIGCONT);
    wait("the link to come back after SIGCONT", || {
        read(&*cell).quality == Quality::Good
    });

    broker.kill();
    wait("the link to go down", || {
        read(&*cell).quality == Quality::Disconnected
    });
    assert_eq!(read(&*cell).values, [21.5, 3.0], "the last values are kept");
    let _broker = mosquitto(dir.path(), port);
    wait("the link to come back", || {
        read(&*cell).quality == Quality::Good
    });
    assert!(report().reconnects >= 1, "{:?}", report());
    // Published only after the restart: seen only if the link subscribed
    // again (rumqttc does not by itself).
    wait("a value published after the restart", || {
        peer.publish("in/t", "30");
        std::thread::sleep(Duration::from_millis(20));
        read(&*cell).values[0] == 30.0
    });
}

/// pysparkplug's host application (tests/peers/sparkplug_host.py): every
/// message it decoded, as JSON, and a pipe for its DCMDs.
struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Host {
    fn start(port: u16) -> Host {
        let mut child = python_peer("sparkplug_host.py")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        let host = Host {
            child,
            stdin,
            lines,
        };
        host.wait_for("the host to connect", |m| m["type"] == "connected");
        host
    }

    fn messages(&self, kind: &str) -> Vec<serde_json::Value> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut found = None;
        wait(what, || {
            found = self.lines.lock().unwrap().iter().find(|m| ok(m)).cloned();
            found.is_some()
        });
        found.unwrap()
    }

    fn command(&mut self, metric: &str, value: f64) {
        writeln!(self.stdin, "weft edge-1 plant {metric} {value}").unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PID's plant as a Sparkplug B device: the host commands its
/// temperature, the heater goes out in DDATA.
fn sparkplug_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("edge.node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[devices.plant]
kind = "mqtt"
broker = "127.0.0.1:{port}"
keep_alive = "1s"
[[devices.plant.read]]
name = "temperature"
metric = "temperature"
[[devices.plant.write]]
name = "heater"
metric = "heater"
[devices.plant.sparkplug]
group = "weft"
edge_node = "edge-1"
device = "plant"
"#
        ),
    )
    .unwrap();
    path
}

fn run_edge_node(config: &Path, recording: Option<&Path>) -> Child {
    let mut run = weft();
    run.args([
        "run",
        "examples/factory-cell.toml",
        "--for",
        "600s",
        "--json",
    ])
    .arg("--config")
    .arg(config)
    .current_dir(repo())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(recording) = recording {
        run.arg("--record").arg(recording);
    }
    run.spawn().unwrap()
}

/// The seqs of the DDATA after the last NBIRTH, checked to count on by one
/// mod 256 from the DBIRTH's.
fn data_seqs_since_birth(host: &Host) -> usize {
    let lines = host.lines.lock().unwrap();
    let birth = lines.iter().rposition(|m| m["type"] == "NBIRTH").unwrap();
    let mut seq = None;
    let mut count = 0;
    for m in &lines[birth..] {
        let s = m["seq"].as_u64();
        match m["type"].as_str().unwrap() {
            "NBIRTH" => assert_eq!(s, Some(0), "{m}"),
            "DBIRTH" | "DDATA" => {
                let s = s.unwrap();
                assert_eq!(s, seq.map_or(1, |p: u64| (p + 1) % 256), "{m}");
                seq = Some(s);
                count += usize::from(m["type"] == "DDATA");
            }
            _ => {}
        }
    }
    count
}

/// weft as a Sparkplug B edge node, decoded by pysparkplug: NBIRTH (seq 0,
/// bdSeq) and DBIRTH, then DDATA counting seq mod 256; a DCMD reaches the
/// PID at a recorded tag and replays; a broker restart brings a rebirth
/// with bdSeq + 1 and commands work again; a clean stop says NDEATH, and a
/// `kill -9` leaves the broker's will, with the bdSeq of its birth.
#[test]
fn a_sparkplug_edge_node_births_counts_obeys_and_dies_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker: Daemon = mosquitto(dir.path(), port);
    let mut host = Host::start(port);
    let config = sparkplug_config(dir.path(), port);
    let recording = dir.path().join("edge.wrec");
    let run = run_edge_node(&config, Some(&recording));

    let dbirth = host.wait_for("DBIRTH", |m| m["type"] == "DBIRTH");
    assert_eq!(dbirth["device"], "plant");
    let nbirth = host.messages("NBIRTH")[0].clone();
    assert_eq!(
        (nbirth["seq"].as_u64(), nbirth["bd_seq"].as_u64()),
        (Some(0), Some(0)),
        "{nbirth}"
    );
    assert_eq!(nbirth["metrics"]["Node Control/Rebirth"], false, "{nbirth}");
    host.command("temperature", 42.5);
    wait("300 DDATA, past a seq wrap", || {
        data_seqs_since_birth(&host) >= 300
    });
    assert!(
        host.messages("DDATA")
            .iter()
            .all(|m| m["metrics"]["heater"].is_number()),
        "every DDATA carries the heater"
    );

    broker.kill();
    broker = mosquitto(dir.path(), port);
    let rebirth = host.wait_for("a rebirth after the broker restart", |m| {
        m["type"] == "NBIRTH" && m["bd_seq"] == 1
    });
    assert_eq!(rebirth["seq"], 0);
    host.wait_for("its DBIRTH", |m| {
        m["type"] == "DBIRTH" && m["metrics"]["temperature"] == 42.5
    });
    host.command("temperature", 43.5);
    wait("DDATA after the rebirth", || {
        data_seqs_since_birth(&host) >= 50
    });

    // SAFETY: signalling our own child; Ctrl-C ends a run cleanly.
    assert_eq!(unsafe { libc::kill(run.id() as i32, libc::SIGINT) }, 0);
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let telemetry = process(&report, "pid")["last_output_hex"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(f64_at(&telemetry, 0), 43.5, "the PID read the last DCMD");
    let goodbye = host.wait_for("NDEATH at a clean stop", |m| m["type"] == "NDEATH");
    assert_eq!(goodbye["bd_seq"], 1, "{goodbye}");

    // A kill -9 sends nothing: the broker publishes the will registered at
    // CONNECT, whose bdSeq is the birth's.
    let births = host.messages("NBIRTH").len();
    let mut killed = run_edge_node(&config, None);
    wait("the new run's birth", || {
        host.messages("NBIRTH").len() > births
    });
    assert_eq!(
        host.messages("NBIRTH")[births]["bd_seq"],
        0,
        "a new node process"
    );
    let deaths = host.messages("NDEATH").len();
    killed.kill().unwrap();
    killed.wait().unwrap();
    wait("the will", || host.messages("NDEATH").len() > deaths);
    assert_eq!(host.messages("NDEATH")[deaths]["bd_seq"], 0);

    // Broker gone: the DCMDs come from the recording.
    broker.kill();
    assert_replays(&recording);
    assert!(
        host.messages("NBIRTH")
            .iter()
            .chain(&host.messages("DDATA"))
            .all(|m| m.get("error").is_none()),
        "pysparkplug decoded every message"
    );
}
