#!/usr/bin/env bash
# Builds every example guest module into examples/wasm/:
#
#   pid.wasm, analytics.wasm   Rust reactors   (wasm32-unknown-unknown, release)
#   hello-wasi.wasm            Rust WASI command (wasm32-wasip1, release)
#   supervisor.wasm            C reactor       (clang + wasm-ld, wasi-libc headers)
#   heartbeat.wasm             WAT reactor     (wat2wasm; the .wat is copied if wabt is missing)
#
# then prints each module's imports/exports and checks that reactors import
# only from `weft` and have no start section. Tools: run scripts/setup.sh.
#
# Environment: CLANG (C compiler to use), WASI_SYSROOT (sysroot directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EXAMPLES="$ROOT/examples"
OUT="$EXAMPLES/wasm"
SDK_C="$ROOT/sdk/c"

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'build-guests: error: %s\n' "$*" >&2
    exit 1
}

# ---- tool checks -------------------------------------------------------------
say "checking tools"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup), then run scripts/setup.sh"
if command -v rustup >/dev/null 2>&1; then
    targets=$(rustup target list --installed)
    for t in wasm32-unknown-unknown wasm32-wasip1; do
        grep -qx "$t" <<<"$targets" || die "Rust target $t missing: run 'rustup target add $t' (or scripts/setup.sh)"
    done
fi

if [ -z "${CLANG:-}" ]; then
    for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null 2>&1; then CLANG=$c; break; fi
    done
fi
[ -n "${CLANG:-}" ] || die "clang not found: install Debian package 'clang' (apt-get install -y --no-install-recommends clang), or run scripts/setup.sh"

# clang finds wasm-ld next to itself or on PATH (Debian's lld-14 installs
# /usr/lib/llvm-14/bin/wasm-ld and /usr/bin/wasm-ld-14; 'lld' adds /usr/bin/wasm-ld).
wasm_ld=$("$CLANG" -print-prog-name=wasm-ld)
if ! { [ -x "$wasm_ld" ] || command -v "$wasm_ld" >/dev/null 2>&1; }; then
    if command -v wasm-ld-14 >/dev/null 2>&1; then
        # clang looks the linker up on PATH: expose wasm-ld-14 as wasm-ld.
        shim=$(mktemp -d)
        trap 'rm -rf "$shim"' EXIT
        ln -s "$(command -v wasm-ld-14)" "$shim/wasm-ld"
        PATH="$shim:$PATH"
    else
        die "wasm-ld not found: install Debian package 'lld' (apt-get install -y --no-install-recommends lld), or run scripts/setup.sh"
    fi
fi

# wasi-libc sysroot: Debian's wasi-libc uses the multiarch layout
# (/usr/include/wasm32-wasi, /usr/lib/wasm32-wasi) that Debian's clang
# searches by default; upstream wasi-sdk uses /usr/share/wasi-sysroot.
sysroot_flags=()
if [ -n "${WASI_SYSROOT:-}" ]; then
    sysroot_flags=(--sysroot="$WASI_SYSROOT")
elif [ -f /usr/include/wasm32-wasi/stdint.h ]; then
    sysroot_flags=()
elif [ -f /usr/share/wasi-sysroot/include/stdint.h ] || [ -f /usr/share/wasi-sysroot/include/wasm32-wasi/stdint.h ]; then
    sysroot_flags=(--sysroot=/usr/share/wasi-sysroot)
else
    die "wasi-libc sysroot not found: install Debian package 'wasi-libc' (apt-get install -y --no-install-recommends wasi-libc), set WASI_SYSROOT, or run scripts/setup.sh"
fi

WAT2WASM=$(command -v wat2wasm || true)
[ -n "$WAT2WASM" ] || say "warning: wat2wasm not found (Debian package 'wabt'): heartbeat will be copied as .wat text"

mkdir -p "$OUT"

# ---- Rust ----------------------------------------------------------------------
say "cargo build --release --target wasm32-unknown-unknown -p pid -p analytics"
(cd "$EXAMPLES" && cargo build --release --target wasm32-unknown-unknown -p pid -p analytics)
cp "$EXAMPLES/target/wasm32-unknown-unknown/release/pid.wasm" "$OUT/pid.wasm"
cp "$EXAMPLES/target/wasm32-unknown-unknown/release/analytics.wasm" "$OUT/analytics.wasm"

say "cargo build --release --target wasm32-wasip1 -p hello-wasi"
(cd "$EXAMPLES" && cargo build --release --target wasm32-wasip1 -p hello-wasi)
cp "$EXAMPLES/target/wasm32-wasip1/release/hello-wasi.wasm" "$OUT/hello-wasi.wasm"

# ---- C -------------------------------------------------------------------------
# -nostartfiles -nodefaultlibs: no crt1 (no _start/_initialize) and no libc
# objects, so nothing can pull in WASI imports or wasm-ld's command-export
# wrappers (which would call libc's __wasm_call_dtors after every export);
# the compiler-rt builtins stay available for helpers clang may emit.
builtins=$("$CLANG" --target=wasm32-wasi "${sysroot_flags[@]}" -print-libgcc-file-name 2>/dev/null || true)
builtins_flags=()
[ -f "$builtins" ] && builtins_flags=("$builtins")
say "$CLANG --target=wasm32-wasi supervisor.c -> supervisor.wasm"
"$CLANG" --target=wasm32-wasi "${sysroot_flags[@]}" -O2 -Wall -Wextra -Werror \
    -I "$SDK_C" -nostartfiles -nodefaultlibs \
    -Wl,--no-entry -Wl,--strip-debug -Wl,-z,stack-size=16384 \
    -o "$OUT/supervisor.wasm" "$EXAMPLES/supervisor-c/supervisor.c" "${builtins_flags[@]}"

# ---- WAT -----------------------------------------------------------------------
if [ -n "$WAT2WASM" ]; then
    say "wat2wasm heartbeat.wat -> heartbeat.wasm"
    "$WAT2WASM" "$EXAMPLES/heartbeat.wat" -o "$OUT/heartbeat.wasm"
else
    say "copying heartbeat.wat (the host accepts WAT text)"
    cp "$EXAMPLES/heartbeat.wat" "$OUT/heartbeat.wat"
fi

# ---- check ---------------------------------------------------------------------
reactors=("$OUT/pid.wasm" "$OUT/analytics.wasm" "$OUT/supervisor.wasm")
[ -f "$OUT/heartbeat.wasm" ] && reactors+=("$OUT/heartbeat.wasm")
if command -v python3 >/dev/null 2>&1; then
    say "imports and exports"
    python3 "$ROOT/scripts/wasm-info.py" --reactor "${reactors[@]}"
    python3 "$ROOT/scripts/wasm-info.py" "$OUT/hello-wasi.wasm"
else
    say "warning: python3 not found; skipping the import/start-section check"
fi

say "built:"
ls -l "$OUT"
