#!/usr/bin/env python3
"""Subscribe to a weft cluster's port traffic with the plain Zenoh client.

    pip install eclipse-zenoh==1.10.2
    python3 examples/python/watch_ports.py [--connect tcp/127.0.0.1:7447] \
        [--key 'weft/default/port/**'] [--count N]

Each weft port message is: version u8 (=1), tag u64 LE (ns since the app's
epoch), sequence u64 LE, source length u16 LE, source (UTF-8), payload.
"""
import argparse
import json
import struct
import sys
import threading

import zenoh


def decode(data: bytes):
    if len(data) < 19 or data[0] != 1:
        raise ValueError("not a weft v1 port message")
    tag, seq, source_len = struct.unpack_from("<QQH", data, 1)
    source = data[19 : 19 + source_len].decode()
    return {"tag_ns": tag, "seq": seq, "source": source, "payload_hex": data[19 + source_len :].hex()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="tcp/127.0.0.1:7447")
    parser.add_argument("--key", default="weft/default/port/**")
    parser.add_argument("--count", type=int, default=0, help="exit after N messages (0: run until Ctrl-C)")
    args = parser.parse_args()

    config = zenoh.Config()
    config.insert_json5("mode", '"client"')
    config.insert_json5("connect/endpoints", json.dumps([args.connect]))
    config.insert_json5("scouting/multicast/enabled", "false")
    done = threading.Event()
    lock = threading.Lock()
    seen = 0

    def on_sample(sample):
        nonlocal seen
        try:
            message = decode(bytes(sample.payload.to_bytes()))
        except ValueError as error:
            print(f"skipping {sample.key_expr}: {error}", file=sys.stderr)
            return
        # Samples keep arriving until the session closes: print N, no more.
        with lock:
            if done.is_set():
                return
            print(json.dumps({"key": str(sample.key_expr), **message}), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                done.set()

    with zenoh.open(config) as session:
        session.declare_subscriber(args.key, on_sample)
        try:
            done.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
