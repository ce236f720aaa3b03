"""A Sparkplug B host application for weft's tests, on paho-mqtt and
pysparkplug (a decoder weft did not write).

    sparkplug_host.py PORT

Subscribes to spBv1.0/# on 127.0.0.1:PORT and prints one JSON line per
message: its type, group, edge node, device, seq, bdSeq and metrics. After
a reconnect it subscribes again and, as a host application that may have
missed births must, asks every edge node it knows for a rebirth (NCMD
`Node Control/Rebirth`). Each line read on stdin, `GROUP EDGE DEVICE NAME
VALUE`, is sent as a DCMD setting the Double metric NAME to VALUE.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt
import pysparkplug as spb

DECODERS = {
    "NBIRTH": spb.NBirth,
    "DBIRTH": spb.DBirth,
    "NDATA": spb.NData,
    "DDATA": spb.DData,
    "NCMD": spb.NCmd,
    "DCMD": spb.DCmd,
}


def value(metric):
    return None if metric.is_null else metric.value


# (group, edge node) of every NBIRTH seen.
EDGE_NODES = set()


def on_connect(client, _userdata, _flags, rc):
    client.subscribe("spBv1.0/#", qos=1)
    print(json.dumps({"type": "connected", "rc": rc}), flush=True)
    for group, edge in sorted(EDGE_NODES):
        rebirth = spb.Metric(
            timestamp=spb.get_current_timestamp(),
            name="Node Control/Rebirth",
            datatype=spb.DataType.BOOLEAN,
            value=True,
        )
        command = spb.NCmd(timestamp=spb.get_current_timestamp(), metrics=(rebirth,))
        topic = f"spBv1.0/{group}/NCMD/{edge}"
        client.publish(topic, command.encode(include_dtypes=True), qos=1)


def on_message(_client, _userdata, message):
    parts = message.topic.split("/")
    kind = parts[2]
    line = {
        "type": kind,
        "group": parts[1],
        "edge_node": parts[3],
        "device": parts[4] if len(parts) > 4 else None,
    }
    try:
        if kind == "NDEATH":
            death = spb.NDeath.decode(message.payload)
            line["bd_seq"] = death.bd_seq_metric.value
        else:
            payload = DECODERS[kind].decode(message.payload)
            line["seq"] = getattr(payload, "seq", None)
            line["metrics"] = {m.name: value(m) for m in payload.metrics}
            if "bdSeq" in line["metrics"]:
                line["bd_seq"] = line["metrics"]["bdSeq"]
    except Exception as e:  # a payload the spec's decoder refuses
        line["error"] = repr(e)
    if kind == "NBIRTH":
        EDGE_NODES.add((parts[1], parts[3]))
    print(json.dumps(line), flush=True)


def commands(client):
    for text in sys.stdin:
        group, edge, device, name, number = text.split()
        metric = spb.Metric(
            timestamp=spb.get_current_timestamp(),
            name=name,
            datatype=spb.DataType.DOUBLE,
            value=float(number),
        )
        command = spb.DCmd(timestamp=spb.get_current_timestamp(), metrics=(metric,))
        topic = f"spBv1.0/{group}/DCMD/{edge}/{device}"
        client.publish(topic, command.encode(include_dtypes=True), qos=1)


def main():
    client = mqtt.Client(client_id="weft-test-host")
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
    client.connect_async("127.0.0.1", int(sys.argv[1]), keepalive=5)
    client.loop_start()
    commands(client)
    client.loop_stop()


main()
