#!/usr/bin/env python3
"""Print the imports and exports of wasm modules and check reactor rules.

usage: wasm-info.py [--reactor] FILE.wasm...

With --reactor, fails (exit 1) if a module has a start section or imports
anything outside the `weft` module. Needs only the Python standard library.
"""
import sys

KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


def leb(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def name(data, pos):
    n, pos = leb(data, pos)
    return data[pos:pos + n].decode("utf-8"), pos + n


def skip_limits(data, pos):
    flags, pos = leb(data, pos)
    _, pos = leb(data, pos)
    if flags & 1:
        _, pos = leb(data, pos)
    return pos


def parse(path):
    data = open(path, "rb").read()
    if data[:4] != b"\0asm":
        raise SystemExit(f"{path}: not a wasm binary")
    pos, imports, exports, start = 8, [], [], False
    while pos < len(data):
        sid = data[pos]
        size, body = leb(data, pos + 1)
        end = body + size
        if sid == 2:
            count, p = leb(data, body)
            for _ in range(count):
                mod, p = name(data, p)
                field, p = name(data, p)
                kind = data[p]
                p += 1
                if kind == 0:
                    _, p = leb(data, p)
                elif kind == 1:
                    p = skip_limits(data, p + 1)
                elif kind == 2:
                    p = skip_limits(data, p)
                elif kind == 3:
                    p += 2
                else:
                    _, p = leb(data, p + 1)
                imports.append((mod, field, KINDS.get(kind, str(kind))))
        elif sid == 7:
            count, p = leb(data, body)
            for _ in range(count):
                field, p = name(data, p)
                kind = data[p]
                _, p = leb(data, p + 1)
                exports.append((field, KINDS.get(kind, str(kind))))
        elif sid == 8:
            start = True
        pos = end
    return imports, exports, start


def main(argv):
    reactor = "--reactor" in argv
    files = [a for a in argv if a != "--reactor"]
    ok = True
    for path in files:
        imports, exports, start = parse(path)
        print(f"{path}:")
        print("  imports: " + (", ".join(f"{m}.{f}" for m, f, _ in imports) or "(none)"))
        print("  exports: " + ", ".join(f"{f} ({k})" for f, k in exports))
        if start:
            print("  start section: yes")
        if reactor:
            foreign = [f"{m}.{f}" for m, f, _ in imports if m != "weft"]
            if foreign:
                print(f"  ERROR: reactor imports outside `weft`: {', '.join(foreign)}")
                ok = False
            if start:
                print("  ERROR: reactor has a start section (not snapshot-able)")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
