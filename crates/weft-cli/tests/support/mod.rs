//! What the `weft` binary's tests share: the binary, the repository,
//! free ports, decoding a process's last output, `weft plant-sim` as a
//! child process and the example node config pointed at it.
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

/// `weft plant-sim` on a port, killed (by PID) on drop.
pub struct PlantSim {
    child: Child,
    pub port: u16,
}

impl PlantSim {
    pub fn start(port: u16) -> PlantSim {
        let child = weft()
            .args(["plant-sim", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sim = PlantSim { child, port };
        wait("the plant simulator to listen", || sim.listening());
        sim
    }

    pub fn listening(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        self.child.wait().unwrap();
    }
}

impl Drop for PlantSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The example node config (examples/field-io/plant.node.toml) with the
/// plant at `port`.
pub fn plant_node_config(dir: &Path, port: u16) -> PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/field-io/plant.node.toml"),
    )
    .unwrap();
    let text = example.replace("127.0.0.1:5020", &format!("127.0.0.1:{port}"));
    assert_ne!(text, example, "the example names the plant's address");
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}
