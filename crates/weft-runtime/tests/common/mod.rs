//! Shared helpers for the runtime's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_manifest::module::Files;
use weft_manifest::{AppManifest, Class, ProcessSpec};
use weft_runtime::{Node, Process, RuntimeConfig};

pub fn node() -> Node {
    Node::new(&RuntimeConfig::default().max_processes(64).cache_dir(None)).expect("node")
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub fn caps(spec: &mut ProcessSpec, names: &[&str]) {
    for n in names {
        spec.capabilities
            .insert(weft_abi::Capability::parse(n).unwrap());
    }
}

pub fn rt_spec(name: &str, module: &Path, period: Duration, fuel: u64) -> ProcessSpec {
    let mut spec = ProcessSpec::new(name, module);
    spec.class = Class::Rt;
    spec.period = Some(period);
    spec.fuel_per_tick = Some(fuel);
    spec
}

/// Prepares and instantiates a process directly (no scheduler).
pub fn instantiate(node: &Node, spec: ProcessSpec) -> anyhow::Result<Process> {
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files)?);
    let env = node.env(&spec, 1);
    Ok(block(Process::instantiate(program, env))?)
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A manifest whose module paths are relative to `dir`.
pub fn manifest(dir: &Path, toml: &str) -> AppManifest {
    let mut manifest = AppManifest::parse(toml, "test.toml").expect("valid manifest");
    manifest.resolve_paths(dir);
    manifest
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// The examples built by scripts/build-guests.sh.
pub fn example(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/wasm")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/build-guests.sh` first",
        path.display()
    );
    path
}
