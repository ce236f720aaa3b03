//! Real devices end to end: `weft plant-sim`, a Modbus TCP server in its
//! own OS process, driven by `weft run` and by a node's device links, with
//! real `SIGSTOP`, `kill -9` and restarts. Waits are bounded; assertions
//! are about outcomes, never durations.

use std::path::Path;
use std::process::Command;

use weft_abi::sample::{Quality, Sample};
use weft_devices::{NodeConfig, NodeDevices};
use weft_runtime::device::ReadAt;
use weft_types::{LinkState, Tag};

mod support;

use support::{
    assert_replays, free_port, modbus_plant_sim, plant_node_config as node_config, repo,
    run_pid_against, wait, weft,
};

/// The README's field-I/O example: the PID closes its loop over Modbus TCP
/// and holds the supervisor's setpoint; its recording replays to the same
/// chains with the server gone.
#[test]
fn the_pid_holds_the_setpoint_over_modbus_and_replays_with_the_server_gone() {
    assert!(
        repo().join("examples/wasm/pid.wasm").is_file(),
        "run `bash scripts/build-guests.sh` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let sim = modbus_plant_sim(free_port());
    let config = node_config(dir.path(), sim.port);
    let recording = dir.path().join("run.wrec");
    let report = run_pid_against(&config, &recording);
    let plant = &report["devices"]["plant"];
    assert_eq!(plant["kind"], "modbus-tcp", "{plant}");

    // With the server gone, the replay opens no socket and gives the live
    // chains: every sample came from the recording.
    sim.kill();
    assert_replays(&recording);
}

fn read(devices: &NodeDevices) -> Sample {
    let device = devices.devices().get("plant").unwrap().clone();
    let at = ReadAt {
        tag: Tag::ZERO,
        release_ns: weft_runtime::rt::monotonic_ns(),
    };
    Sample::decode(&device.read(at)).unwrap()
}

/// Reads until `quality` shows up; returns every quality seen on the way.
fn read_until(devices: &NodeDevices, quality: Quality) -> Vec<Quality> {
    let mut seen = Vec::new();
    wait(&format!("a {quality} sample"), || {
        let q = read(devices).quality;
        if seen.last() != Some(&q) {
            seen.push(q);
        }
        q == quality
    });
    seen
}

/// A frozen server never blocks a read: samples turn `stale`, then
/// `disconnected` once a request times out; after `SIGCONT` the link
/// reconnects. A killed server reads `disconnected` and a restarted one
/// is found again with backoff.
#[test]
fn a_frozen_or_killed_server_never_blocks_reads_and_the_link_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let sim = modbus_plant_sim(free_port());
    let text = std::fs::read_to_string(node_config(dir.path(), sim.port))
        .unwrap()
        .replace("timeout = \"100ms\"", "timeout = \"300ms\"");
    let config = NodeConfig::parse(&text, Path::new("node.toml")).unwrap();
    let devices = NodeDevices::start(&config).unwrap();
    read_until(&devices, Quality::Good);

    sim.signal(libc::SIGSTOP);
    let frozen = read(&devices);
    let seen = read_until(&devices, Quality::Disconnected);
    assert_eq!(
        seen.iter().position(|q| *q == Quality::Stale).map(|_| ()),
        Some(()),
        "stale before disconnected: {seen:?}"
    );
    let down = read(&devices);
    assert!(
        down.age_ns > frozen.age_ns,
        "the values age: {frozen:?} then {down:?}"
    );
    assert_eq!(down.values, frozen.values, "the last values are kept");
    let report = &devices.reports()[0];
    assert_eq!(report.state, LinkState::Disconnected);
    assert!(report.timeouts >= 1, "{report:?}");
    assert!(
        report
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("no answer within 300ms"),
        "{report:?}"
    );

    sim.signal(libc::SIGCONT);
    read_until(&devices, Quality::Good);
    let reconnects = devices.reports()[0].reconnects;
    assert!(reconnects >= 1, "the frozen link was dropped and reopened");

    let port = sim.port;
    sim.kill();
    read_until(&devices, Quality::Disconnected);
    let error = devices.reports()[0].last_error.clone().unwrap_or_default();
    let _restarted = modbus_plant_sim(port);
    read_until(&devices, Quality::Good);
    assert!(
        devices.reports()[0].reconnects > reconnects,
        "after {error}"
    );
}

/// A node config with a mistake stops `weft node` and `weft run` before
/// anything starts, naming the file, the device and the key.
#[test]
fn a_bad_node_config_is_refused_naming_the_file_device_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("node.toml");
    std::fs::write(
        &bad,
        "[devices.plant]\nkind = \"modbus-tcp\"\nadress = \"127.0.0.1:502\"\n",
    )
    .unwrap();
    let node = weft()
        .args(["node", "--name", "n1", "--connect", "tcp/127.0.0.1:1"])
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    let run = weft()
        .args(["run", "examples/factory-cell.toml", "--for", "1s"])
        .arg("--config")
        .arg(&bad)
        .current_dir(repo())
        .output()
        .unwrap();
    for out in [node, run] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "bad input: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{}: device `plant`: unknown field `adress`",
                bad.display()
            )),
            "{stderr}"
        );
    }
    let twice = weft()
        .args([
            "run",
            "examples/factory-cell.toml",
            "--for",
            "1s",
            "--device",
            "plant",
        ])
        .arg("--config")
        .arg(node_config(dir.path(), 1))
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&twice.stderr);
    assert!(
        stderr.contains("--device plant: the node config already declares"),
        "{stderr}"
    );
}

/// A Modbus server weft did not write (pymodbus, run from the venv that
/// `scripts/setup.sh` makes), killed by PID on drop.
struct PyModbus(std::process::Child);

impl PyModbus {
    fn start(port: u16) -> PyModbus {
        let python = repo().join("build/pyenv/bin/python");
        let child = Command::new(&python)
            .arg(repo().join("crates/weft-cli/tests/peers/pymodbus_server.py"))
            .arg(port.to_string())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: run scripts/setup.sh ({e})",
                    python.display()
                )
            });
        wait("pymodbus to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        PyModbus(child)
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Against pymodbus: the link reads its input registers, a write lands in
/// its holding register (read back on the next scans), and an address it
/// does not map is exception 2 (illegal data address).
#[test]
fn a_pymodbus_server_is_read_written_and_refuses_an_unmapped_address() {
    let port = free_port();
    let _server = PyModbus::start(port);
    let signal = |list: &str, name: &str, table: &str, addr: u16| {
        format!("[[devices.{{d}}.{list}]]\nname = \"{name}\"\ntable = \"{table}\"\naddr = {addr}\n")
    };
    let device = |name: &str, signals: &[String]| {
        format!(
            "[devices.{name}]\nkind = \"modbus-tcp\"\naddress = \"127.0.0.1:{port}\"\nscan = \"5ms\"\n"
        ) + &signals.concat().replace("{d}", name)
    };
    let mut io: Vec<String> = (0..4)
        .map(|i| signal("read", &format!("in{i}"), "input", i))
        .collect();
    io.push(signal("read", "echo", "holding", 10));
    io.push(signal("write", "out", "holding", 10));
    let text = device("io", &io) + &device("missing", &[signal("read", "x", "input", 40)]);
    let config = NodeConfig::parse(&text, Path::new("node.toml")).unwrap();
    let devices = NodeDevices::start(&config).unwrap();
    let read = |name: &str| {
        let at = ReadAt {
            tag: Tag::ZERO,
            release_ns: weft_runtime::rt::monotonic_ns(),
        };
        Sample::decode(&devices.devices().get(name).unwrap().read(at)).unwrap()
    };
    wait("a good sample from pymodbus", || {
        read("io").quality == Quality::Good
    });
    assert_eq!(read("io").values, vec![215.0, 1.0, 2.0, 3.0, 0.0]);

    let io = devices.devices().get("io").unwrap().clone();
    io.write(Tag::ZERO, &1234.0f64.to_le_bytes()).unwrap();
    io.flush();
    wait("the write read back", || read("io").values[4] == 1234.0);

    wait("the unmapped address's exception", || {
        read("missing").quality == Quality::Exception
    });
    assert_eq!(read("missing").code, 2);
    assert_eq!(
        devices
            .reports()
            .iter()
            .map(|r| r.state)
            .collect::<Vec<_>>(),
        vec![LinkState::Connected, LinkState::Connected],
        "an exception is an answer: the links stay up"
    );
}
