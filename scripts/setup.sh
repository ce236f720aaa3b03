#!/usr/bin/env bash
# Installs what building the weft guest modules needs (idempotent).
#
#   - Rust targets wasm32-unknown-unknown (reactors) and wasm32-wasip1 (WASI commands)
#   - clang + lld (wasm-ld) + wasi-libc sysroot + compiler-rt builtins for wasm32 (C guests)
#   - wabt (wat2wasm, wasm-objdump) for the hand-written WAT example and import checks
#   - rt-tests (cyclictest) for jitter baselines in benchmarks
#   - criu for the checkpoint/restore baseline of the migration benchmarks
#     (it also needs a kernel it understands; `weft bench` reports it when not)
#   - with --tests (`make test`): prometheus, tmux and chromium, which the
#     observability tests start (a real Prometheus, terminal and browser),
#     and mosquitto, the MQTT broker the device tests start
#
# Debian 12 (bookworm) package names. Packages are installed only when a tool
# is missing and we are root; otherwise the missing pieces are listed.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

for_tests=false
[ "${1:-}" = "--tests" ] && for_tests=true

# ---- Rust targets -----------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup target list --installed)
    for t in wasm32-unknown-unknown wasm32-wasip1; do
        if grep -qx "$t" <<<"$installed"; then
            log "rust target $t: present"
        else
            log "rust target $t: installing"
            rustup target add "$t"
        fi
    done
else
    log "WARNING: rustup not found; make sure the wasm32-unknown-unknown and wasm32-wasip1 targets are installed"
fi

# ---- system tools -----------------------------------------------------------
have_clang() { command -v clang >/dev/null 2>&1 || command -v clang-14 >/dev/null 2>&1; }
have_wasm_ld() {
    command -v wasm-ld >/dev/null 2>&1 || command -v wasm-ld-14 >/dev/null 2>&1 \
        || [ -x /usr/lib/llvm-14/bin/wasm-ld ]
}
have_sysroot() {
    # Debian's wasi-libc uses the multiarch layout; upstream uses /usr/share/wasi-sysroot.
    [ -f /usr/include/wasm32-wasi/stdint.h ] || [ -f /usr/share/wasi-sysroot/include/stdint.h ] \
        || [ -f /usr/share/wasi-sysroot/include/wasm32-wasi/stdint.h ]
}
have_builtins() {
    compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a' >/dev/null
}

missing=()
have_clang || missing+=(clang)
have_wasm_ld || missing+=(lld)
have_sysroot || missing+=(wasi-libc)
have_builtins || missing+=(libclang-rt-14-dev-wasm32)
command -v wat2wasm >/dev/null 2>&1 || missing+=(wabt)
command -v cyclictest >/dev/null 2>&1 || missing+=(rt-tests)
command -v criu >/dev/null 2>&1 || missing+=(criu)
if $for_tests; then
    # A real Prometheus scrapes a test cluster (crates/weft-cli/tests/cluster.rs),
    # `weft top` is read off a real terminal, the dashboard runs in a real browser.
    command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # Debian starts no service here (policy-rc.d); the tests start their own.
    command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
fi

if [ ${#missing[@]} -eq 0 ]; then
    extra=""
    $for_tests && extra=", prometheus, tmux, chromium, mosquitto"
    log "clang, wasm-ld, wasi-libc, compiler-rt wasm32, wabt, cyclictest, criu$extra: present"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "missing packages: ${missing[*]}"
    log "run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
fi

# ---- Python peers ------------------------------------------------------------
# docs/fabric.md shows how a plain Zenoh client watches a cluster; a test runs
# examples/python/watch_ports.py with it. The device tests run a Modbus
# server weft did not write, on pymodbus (pinned: its API churns, and
# Debian's python3-pymodbus is 3.0), and check Sparkplug B with
# pysparkplug's decoder. Kept in a venv under build/.
pyenv="$(cd "$(dirname "$0")/.." && pwd)/build/pyenv"
if "$pyenv/bin/python" -c "import zenoh, pymodbus, pysparkplug" 2>/dev/null; then
    log "python peers (zenoh, pymodbus, pysparkplug): present ($pyenv)"
else
    log "python peers: installing eclipse-zenoh, pymodbus and pysparkplug into $pyenv"
    [ -x "$pyenv/bin/python" ] || python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install --quiet --disable-pip-version-check \
        eclipse-zenoh==1.10.2 pymodbus==3.16.1 pysparkplug==0.6.1 paho-mqtt==1.6.1
fi
log "done"
