//! The Modbus TCP bridge against a real Modbus server on loopback: the
//! plant simulator (`plant_server`), served in-process by tokio-modbus.

use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use weft_abi::sample::{Quality, Sample};
use weft_devices::plant_server::Plant;
use weft_devices::{NodeConfig, NodeDevices};
use weft_runtime::device::ReadAt;
use weft_runtime::rt::monotonic_ns;
use weft_types::{LinkState, Tag};

/// Serves a plant of unit 1 on a free port; returns it, its address and
/// the server task.
async fn serve_plant() -> (Plant, String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let plant = Plant::new(1);
    let task = tokio::spawn(plant.clone().serve(listener));
    (plant, addr, task)
}

fn config(addr: &str, extra: &str) -> NodeConfig {
    let text = format!(
        r#"
[devices.plant]
kind = "modbus-tcp"
address = "{addr}"
scan = "5ms"
timeout = "100ms"
{extra}

[[devices.plant.read]]
name = "temperature"
table = "input"
addr = 0
scale = 0.01

[[devices.plant.read]]
name = "writes"
table = "input"
addr = 1
type = "u32"

[[devices.plant.write]]
name = "heater"
table = "holding"
addr = 10
scale = 0.001
"#
    );
    NodeConfig::parse(&text, Path::new("node.toml")).unwrap()
}

fn read(devices: &NodeDevices) -> Sample {
    let device = devices.devices().get("plant").unwrap().clone();
    let at = ReadAt {
        tag: Tag::ZERO,
        release_ns: monotonic_ns(),
    };
    Sample::decode(&device.read(at)).unwrap()
}

/// Polls `ok` every 5 ms for up to 10 s.
async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn reads_are_latched_samples_and_writes_drive_the_plant() {
    let (plant, addr, _server) = serve_plant().await;
    let devices = NodeDevices::start(&config(&addr, "")).unwrap();
    wait_for("a good sample", || read(&devices).quality == Quality::Good).await;
    let sample = read(&devices);
    assert!((sample.values[0] - 20.0).abs() < 0.5, "{sample:?}");
    assert!(sample.seq >= 1 && sample.source_ns > 0);

    // Ten writes in one tick (no await between them) are one wire write,
    // of the last value.
    let device = devices.devices().get("plant").unwrap().clone();
    for i in 1..=10 {
        device
            .write(Tag::ZERO, &(f64::from(i) / 10.0).to_le_bytes())
            .unwrap();
    }
    device.flush();
    wait_for("the write", || plant.writes() == 1).await;
    wait_for("the plant to heat", || read(&devices).values[0] > 25.0).await;
    assert_eq!(plant.writes(), 1);
    assert_eq!(
        read(&devices).values[1],
        1.0,
        "the plant's write count, read back"
    );

    let refused = device.write(Tag::ZERO, &[0; 4]).unwrap_err();
    assert!(refused.contains("a write is 8 bytes"), "{refused}");
    let report = &devices.reports()[0];
    assert_eq!(report.state, LinkState::Connected);
    assert_eq!((report.reconnects, report.writes), (0, 1));
}

#[tokio::test]
async fn an_unmapped_register_is_an_exception_and_the_link_stays_up() {
    let (_plant, addr, _server) = serve_plant().await;
    let text = format!(
        "[devices.plant]\nkind = \"modbus-tcp\"\naddress = \"{addr}\"\n\
         [[devices.plant.read]]\nname = \"t\"\ntable = \"input\"\naddr = 0\n\
         [[devices.plant.read]]\nname = \"nothing\"\ntable = \"input\"\naddr = 40\n"
    );
    let config = NodeConfig::parse(&text, Path::new("node.toml")).unwrap();
    let devices = NodeDevices::start(&config).unwrap();
    wait_for("an exception", || {
        read(&devices).quality == Quality::Exception
    })
    .await;
    let sample = read(&devices);
    assert_eq!(sample.code, 2, "illegal data address");
    assert!(sample.values[0] > 0.0, "the mapped register still reads");
    assert!(sample.values[1].is_nan());
    assert_eq!(devices.reports()[0].state, LinkState::Connected);
}

#[tokio::test]
async fn a_wrong_unit_id_gets_the_gateways_exception() {
    let (_plant, addr, _server) = serve_plant().await;
    let devices = NodeDevices::start(&config(&addr, "unit = 7")).unwrap();
    wait_for("an exception", || {
        read(&devices).quality == Quality::Exception
    })
    .await;
    assert_eq!(read(&devices).code, 11);
}

#[tokio::test]
async fn an_unreachable_device_reads_disconnected_and_a_restart_reconnects() {
    let (_plant, addr, server) = serve_plant().await;
    let devices = NodeDevices::start(&config(&addr, "")).unwrap();
    wait_for("a good sample", || read(&devices).quality == Quality::Good).await;
    let good = read(&devices).values[0];

    // The server goes away: connections reset, reconnects are refused.
    server.abort();
    let _ = server.await;
    wait_for("disconnected", || {
        read(&devices).quality == Quality::Disconnected
    })
    .await;
    let down = read(&devices);
    assert!(
        (down.values[0] - good).abs() < 0.5,
        "the last values are kept: {down:?}"
    );
    let report = &devices.reports()[0];
    assert_eq!(report.state, LinkState::Disconnected);
    let error = report.last_error.clone().unwrap();
    assert!(error.contains(&addr) || error.contains("read"), "{error}");

    // The same port serves again: the link comes back by itself.
    let listener = loop {
        match TcpListener::bind(&addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let _server = tokio::spawn(Plant::new(1).serve(listener));
    wait_for("good again", || read(&devices).quality == Quality::Good).await;
    assert!(devices.reports()[0].reconnects >= 1);
}

#[tokio::test]
async fn nothing_listening_is_named_in_the_report() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let devices = NodeDevices::start(&config(&addr, "")).unwrap();
    wait_for("an error", || devices.reports()[0].last_error.is_some()).await;
    let report = &devices.reports()[0];
    assert_eq!(report.state, LinkState::Disconnected);
    let error = report.last_error.clone().unwrap();
    assert!(
        error.contains(&format!("cannot connect to {addr}")),
        "{error}"
    );
    assert!(error.contains("refused"), "{error}");
    assert_eq!(read(&devices).quality, Quality::Disconnected);
}
