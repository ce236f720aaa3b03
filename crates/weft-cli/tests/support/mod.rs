//! What the `weft` binary's tests share: the binary, the repository,
//! free ports, decoding a process's last output, the servers they start
//! (`weft plant-sim`, mosquitto) as child processes killed by PID, and the
//! example node configs pointed at them.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

pub fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> u16 {
    weft_client::free_port().unwrap()
}

/// The `index`th `f64` of a hex-encoded output (`last_output_hex`).
pub fn f64_at(hex_text: &str, index: usize) -> f64 {
    let bytes: Vec<u8> = (0..hex_text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_text[i..i + 2], 16).unwrap())
        .collect();
    f64::from_le_bytes(bytes[index * 8..index * 8 + 8].try_into().unwrap())
}

pub fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The example node config (examples/field-io/plant.node.toml) with the
/// Modbus plant at `port`.
pub fn plant_node_config(dir: &Path, port: u16) -> PathBuf {
    example_node_config(dir, "plant.node.toml", "127.0.0.1:5020", port)
}

/// The example MQTT node config (examples/field-io/mqtt.node.toml) with
/// the broker at `port`.
pub fn mqtt_node_config(dir: &Path, port: u16) -> PathBuf {
    example_node_config(dir, "mqtt.node.toml", "127.0.0.1:1883", port)
}

fn example_node_config(dir: &Path, example: &str, address: &str, port: u16) -> PathBuf {
    let path = repo().join("examples/field-io").join(example);
    let example = std::fs::read_to_string(path).unwrap();
    let text = example.replace(address, &format!("127.0.0.1:{port}"));
    assert_ne!(text, example, "the example names the device's address");
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A child process killed (by PID) on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto on `port` of 127.0.0.1, anonymous and without
/// persistence (a retained message must not outlive its test).
pub fn mosquitto(dir: &Path, port: u16) -> Daemon {
    let conf = dir.join(format!("mosquitto-{port}.conf"));
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (Debian package mosquitto; `bash scripts/setup.sh --tests`)");
    wait("mosquitto to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Daemon { child, port }
}

/// `weft plant-sim`, serving Modbus TCP on `port`.
pub fn modbus_plant_sim(port: u16) -> Daemon {
    let child = weft()
        .args(["plant-sim", "--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait("the plant simulator to listen", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Daemon { child, port }
}

/// `weft plant-sim --mqtt` on the broker at `port`.
pub fn mqtt_plant_sim(port: u16) -> Daemon {
    let child = weft()
        .args(["plant-sim", "--mqtt", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Daemon { child, port }
}

/// The Python interpreter of the test peers (`scripts/setup.sh --tests`).
pub fn python_peer(script: &str) -> Command {
    let python = repo().join("build/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh --tests`",
        python.display()
    );
    let mut command = Command::new(python);
    command.arg(repo().join("crates/weft-cli/tests/peers").join(script));
    command
}

/// `weft run` of the factory cell for 6 s with the node config `config`,
/// recording to `recording`: the PID, closing its loop over the config's
/// `plant`, holds the supervisor's setpoint without a fault, and every
/// write went to the wire at most once per tick. Returns the run's report.
pub fn run_pid_against(config: &Path, recording: &Path) -> serde_json::Value {
    assert!(
        repo().join("examples/wasm/pid.wasm").is_file(),
        "run `bash scripts/build-guests.sh` first"
    );
    let report = json_of(
        weft()
            .args(["run", "examples/factory-cell.toml", "--for", "6s", "--json"])
            .arg("--config")
            .arg(config)
            .arg("--record")
            .arg(recording)
            .current_dir(repo()),
    );
    let pid = process(&report, "pid");
    assert_eq!(pid["faults"], 0, "{pid}");
    let telemetry = pid["last_output_hex"].as_str().unwrap();
    let (temperature, setpoint) = (f64_at(telemetry, 0), f64_at(telemetry, 1));
    assert_eq!(setpoint, 60.0, "the supervisor switches to 60 °C at 4 s");
    assert!(
        (temperature - setpoint).abs() < 2.0,
        "plant at {temperature} °C, setpoint {setpoint} °C"
    );
    let plant = &report["devices"]["plant"];
    assert_eq!(plant["state"], "connected", "{plant}");
    let (writes, ticks) = (
        plant["writes"].as_u64().unwrap(),
        pid["ticks"].as_u64().unwrap(),
    );
    assert!(
        writes > 0 && writes <= ticks,
        "{writes} wire writes for {ticks} ticks"
    );
    report
}

/// A process's entry in a `weft run --json` report.
pub fn process<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {report}"))
}

/// `weft replay` of `recording` gives the live chains (with the devices
/// gone: every sample comes from the recording).
pub fn assert_replays(recording: &Path) {
    let replay = json_of(weft().args(["replay", "--json"]).arg(recording));
    assert_eq!(replay["matches_live"], true, "{replay:#}");
}

/// Runs a `--json` command that must succeed, and parses what it printed.
pub fn json_of(command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
