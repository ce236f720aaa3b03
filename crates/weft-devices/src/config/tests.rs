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

const EDGE: &str = r#"
[devices.cell]
kind = "mqtt"
broker = "127.0.0.1:1883"
stale_after = "1s"

[[devices.cell.read]]
name = "temperature"
topic = "plant/temperature"

[[devices.cell.read]]
name = "level"
topic = "tank/level"
format = "json"
pointer = "/level/m"
qos = 0

[[devices.cell.read]]
name = "setpoint"
metric = "setpoint"
initial = 60.0

[[devices.cell.write]]
name = "heater"
metric = "heater"

[[devices.cell.write]]
name = "valve"
topic = "tank/valve"
format = "f64-le"
retain = true

[devices.cell.sparkplug]
group = "weft"
edge_node = "edge-1"
device = "cell"
"#;

#[test]
fn an_mqtt_device_with_topics_and_sparkplug_metrics() {
    let config = parse(EDGE).unwrap();
    let DeviceConfig::Mqtt(m) = &config.devices[&"cell".parse::<DeviceName>().unwrap()] else {
        panic!("{config:?}")
    };
    assert_eq!(
        (m.keep_alive, m.timeout, m.stale_after),
        (
            mqtt::DEFAULT_KEEP_ALIVE,
            mqtt::DEFAULT_CONNECT_TIMEOUT,
            Some(Duration::from_secs(1))
        )
    );
    assert_eq!(
        m.read[0].route,
        Route::Topic {
            topic: "plant/temperature".into(),
            qos: Qos::AtLeastOnce,
            format: Format::Text
        },
        "text at QoS 1 by default"
    );
    assert_eq!(
        m.read[1].route,
        Route::Topic {
            topic: "tank/level".into(),
            qos: Qos::AtMostOnce,
            format: Format::Json {
                pointer: "/level/m".into()
            }
        }
    );
    assert_eq!(
        (&m.read[2].route, m.read[2].initial),
        (&Route::Metric("setpoint".into()), Some(60.0))
    );
    assert_eq!(m.write[0].route, Route::Metric("heater".into()));
    assert!(m.write[1].retain);
    assert_eq!(m.sparkplug.as_ref().unwrap().edge_node, "edge-1");
}

#[test]
fn mqtt_mistakes_are_refused_with_where_they_are() {
    let mqtt = |body: &str| {
        format!("[devices.cell]\nkind = \"mqtt\"\nbroker = \"127.0.0.1:1883\"\n{body}")
    };
    let read = |signal: &str| mqtt(&format!("[[devices.cell.read]]\nname = \"t\"\n{signal}"));
    let sparkplug = "[devices.cell.sparkplug]\ngroup = \"g\"\nedge_node = \"e\"\ndevice = \"d\"\n";
    let cases: Vec<(String, &str)> = vec![
        (mqtt("brokr = 1"), "device `cell`: unknown field `brokr`"),
        (
            "[devices.cell]\nkind = \"mqtt\"\nbroker = \"mosquitto\"".into(),
            "broker: \"mosquitto\" is not host:port",
        ),
        (mqtt(""), "declares no signals"),
        (
            mqtt("keep_alive = \"500ms\"\n[[devices.cell.read]]\nname = \"t\"\ntopic = \"a\""),
            "keep_alive: 500ms: MQTT counts it in whole seconds",
        ),
        (read(""), "read `t`: needs a `topic`"),
        (
            read("topic = \"a/+\""),
            "read `t`: topic: \"a/+\" must be one topic",
        ),
        (
            read("topic = \"a\"\nmetric = \"m\""),
            "read `t`: a topic or a metric, not both",
        ),
        (
            read("metric = \"m\""),
            "read `t`: a metric needs the device's [devices.<name>.sparkplug] table",
        ),
        (
            read("topic = \"a\"\nformat = \"xml\""),
            "read `t`: format: \"xml\" is not one of text, json, f64-le, f32-le",
        ),
        (
            read("topic = \"a\"\nformat = \"json\""),
            "read `t`: format json needs a `pointer`",
        ),
        (
            read("topic = \"a\"\nformat = \"json\"\npointer = \"value\""),
            "read `t`: pointer: \"value\" is not a JSON pointer",
        ),
        (
            read("topic = \"a\"\npointer = \"/v\""),
            "read `t`: pointer: only for format json",
        ),
        (
            read("topic = \"a\"\nqos = 3"),
            "read `t`: qos: 3 is not 0, 1 or 2",
        ),
        (
            read("topic = \"a\"\nretain = true"),
            "read `t`: retain is for write signals",
        ),
        (
            read("topic = \"a\"\ninitial = nan"),
            "read `t`: initial must be a finite number",
        ),
        (
            read("topic = \"a\"\n[[devices.cell.read]]\nname = \"u\"\ntopic = \"a\""),
            "read `u`: another read signal has the same topic or metric",
        ),
        (
            mqtt("[[devices.cell.write]]\nname = \"w\"\ntopic = \"a\"\ninitial = 1.0"),
            "write `w`: initial is for read signals",
        ),
        (
            read(&format!("metric = \"m\"\nformat = \"text\"\n{sparkplug}")),
            "read `t`: format: Sparkplug fixes it for metrics",
        ),
        (
            read(&format!("topic = \"spBv1.0/g/DCMD/e/d\"\n{sparkplug}")),
            "is in the Sparkplug namespace: use a `metric`",
        ),
        (
            mqtt("[devices.cell.sparkplug]\ngroup = \"a/b\"\nedge_node = \"e\"\ndevice = \"d\""),
            "sparkplug.group: \"a/b\" must be non-empty, without `/`",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(&text).expect_err(&text);
        assert!(
            error.contains(expected),
            "{text}\n-> {error}\n(expected {expected:?})"
        );
    }
}

/// Reads of one JSON topic may take different pointers; two writes to one
/// topic would fight over it.
#[test]
fn reads_share_a_json_topic_but_writes_do_not() {
    let json_read = |name: &str, pointer: &str| {
        format!(
            "[[devices.cell.read]]\nname = \"{name}\"\ntopic = \"tank\"\nformat = \"json\"\npointer = \"{pointer}\"\n"
        )
    };
    let head = "[devices.cell]\nkind = \"mqtt\"\nbroker = \"127.0.0.1:1883\"\n";
    let shared = format!(
        "{head}{}{}",
        json_read("level", "/level"),
        json_read("temp", "/temp")
    );
    assert!(parse(&shared).is_ok(), "{:?}", parse(&shared));
    let write = |name: &str, format: &str| {
        format!(
            "[[devices.cell.write]]\nname = \"{name}\"\ntopic = \"out\"\nformat = \"{format}\"\n"
        )
    };
    let fighting = format!("{head}{}{}", write("a", "text"), write("b", "f64-le"));
    assert!(
        parse(&fighting)
            .unwrap_err()
            .contains("write `b`: another write signal has the same topic or metric")
    );
}
