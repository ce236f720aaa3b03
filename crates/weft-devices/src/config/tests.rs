use std::path::Path;

use super::*;

const PLANT: &str = r#"
[devices.plant]
kind = "modbus-tcp"
address = "127.0.0.1:5020"
scan = "5ms"

[[devices.plant.read]]
name = "temperature"
table = "input"
addr = 0
type = "i16"
scale = 0.01

[[devices.plant.write]]
name = "heater"
table = "holding"
addr = 10
scale = 0.001

[devices.model]
kind = "sim-thermal"
"#;

fn parse(text: &str) -> Result<NodeConfig, String> {
    NodeConfig::parse(text, Path::new("node.toml")).map_err(|e| e.to_string())
}

#[test]
fn a_modbus_device_and_a_simulated_one() {
    let config = parse(PLANT).unwrap();
    let plant = &config.devices[&"plant".parse::<DeviceName>().unwrap()];
    let DeviceConfig::ModbusTcp(m) = plant else {
        panic!("{plant:?}")
    };
    assert_eq!(
        (m.unit, m.scan, m.timeout),
        (1, Duration::from_millis(5), DEFAULT_TIMEOUT)
    );
    assert_eq!(
        m.stale_after,
        Duration::from_millis(25),
        "5 scans by default"
    );
    assert_eq!(m.read[0].value, ValueType::I16);
    assert_eq!(m.write[0].value, ValueType::U16, "registers default to u16");
    assert_eq!(
        config.devices[&"model".parse::<DeviceName>().unwrap()],
        DeviceConfig::SimThermal
    );
}

/// Every mistake names the file, the device and the key.
#[test]
fn mistakes_are_refused_with_where_they_are() {
    let modbus = |body: &str| {
        format!("[devices.plant]\nkind = \"modbus-tcp\"\naddress = \"127.0.0.1:502\"\n{body}")
    };
    let read = |signal: &str| modbus(&format!("[[devices.plant.read]]\n{signal}"));
    let cases: Vec<(String, &str)> = vec![
        (
            "[devices.plant]\naddress = \"x:1\"".into(),
            "node.toml: device `plant`: missing key `kind`",
        ),
        (
            "[devices.plant]\nkind = \"profibus\"".into(),
            "device `plant`: kind: unknown device kind \"profibus\"",
        ),
        (
            "[devices.plant]\nkind = \"sim-thermal\"\nscan = \"1ms\"".into(),
            "device `plant`: unknown key `scan`",
        ),
        (
            "[devices.\"bad name\"]\nkind = \"sim-thermal\"".into(),
            "device `bad name`: ",
        ),
        (
            "[device.plant]\nkind = \"sim-thermal\"".into(),
            "node.toml: unknown field `device`",
        ),
        (
            modbus("adress = \"x\""),
            "device `plant`: unknown field `adress`",
        ),
        (
            "[devices.plant]\nkind = \"modbus-tcp\"\naddress = \"localhost\"".into(),
            "address: \"localhost\" is not host:port",
        ),
        (modbus(""), "declares no signals"),
        (modbus("scan = \"fast\""), "scan: \"fast\""),
        (modbus("scan = \"100us\""), "scan: 100µs is too often"),
        (
            modbus("stale_after = \"1ms\""),
            "stale_after: 1ms is shorter than the scan period",
        ),
        (
            read("name = \"t\"\ntable = \"inputs\"\naddr = 0"),
            "unknown variant `inputs`",
        ),
        (
            read("name = \"t\"\ntable = \"input\""),
            "missing field `addr`",
        ),
        (
            read("name = \"t\"\ntable = \"input\"\naddr = 70000"),
            "read `t`: addr 70000 is past 65535",
        ),
        (
            read("name = \"t\"\ntable = \"input\"\naddr = 65535\ntype = \"f32\""),
            "read `t`: runs past address 65535",
        ),
        (
            read("name = \"t\"\ntable = \"coil\"\naddr = 0\ntype = \"u16\""),
            "read `t`: type U16 does not fit table Coil",
        ),
        (
            read("name = \"t\"\ntable = \"input\"\naddr = 0\nscale = 0.0"),
            "read `t`: scale must be",
        ),
        (
            read(
                "name = \"t\"\ntable = \"input\"\naddr = 0\n[[devices.plant.read]]\nname = \"t\"\ntable = \"input\"\naddr = 1",
            ),
            "read `t`: declared twice",
        ),
        (
            modbus("[[devices.plant.write]]\nname = \"t\"\ntable = \"input\"\naddr = 0"),
            "write `t`: table Input cannot be written",
        ),
        ("[devices.plant\nkind = 1".into(), "node.toml: "),
    ];
    for (text, expected) in cases {
        let error = parse(&text).expect_err(&text);
        assert!(
            error.contains(expected),
            "{text}\n-> {error}\n(expected {expected:?})"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let error = NodeConfig::load(Path::new("/nonexistent/node.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/node.toml: cannot read the node config")
    );
}
