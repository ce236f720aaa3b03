//! The `weft` binary end to end: the example app, WASI commands, inspect.

use std::path::PathBuf;
use std::process::Command;

mod support;

use support::{f64_at, repo, weft};

fn example(name: &str) -> PathBuf {
    let path = repo().join("examples/wasm").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `bash scripts/build-guests.sh` first",
        path.display()
    );
    path
}

/// The README's app: every process runs, nothing faults, and the PID loop
/// holds the plant near the supervisor's setpoint.
#[test]
fn factory_cell_runs_and_holds_the_setpoint() {
    example("pid.wasm");
    let out = weft()
        .args(["run", "examples/factory-cell.toml", "--for", "5s", "--json"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 4);
    for p in processes {
        for key in [
            "name",
            "state",
            "ticks",
            "deadline_misses",
            "faults",
            "restarts",
            "fuel_used",
            "memory_bytes",
            "output_hash",
        ] {
            assert!(p.get(key).is_some(), "missing {key} in {p}");
        }
        assert_eq!(p["faults"], 0, "{p}");
        let activity = p["ticks"].as_u64().unwrap() + p["messages_in"].as_u64().unwrap();
        assert!(activity > 0, "{} never ran", p["name"]);
    }
    let pid = processes.iter().find(|p| p["name"] == "pid").unwrap();
    assert!(pid["ticks"].as_u64().unwrap() > 100);
    assert!(pid["fuel_used"].as_u64().unwrap() > 0);
    let telemetry = pid["last_output_hex"].as_str().unwrap();
    let (temperature, setpoint) = (f64_at(telemetry, 0), f64_at(telemetry, 1));
    assert_eq!(setpoint, 60.0, "the supervisor switches to 60 °C at 4 s");
    assert!(
        (temperature - setpoint).abs() < 2.0,
        "plant at {temperature} °C, setpoint {setpoint} °C"
    );
    let plant = report["devices"]["plant"]["temperature_c"]
        .as_f64()
        .unwrap();
    assert!((plant - 60.0).abs() < 2.0, "{plant}");
}

#[test]
fn wasi_command_gets_args_and_exit_code() {
    let out = weft()
        .arg("run")
        .arg(example("hello-wasi.wasm"))
        .args(["--", "a", "b"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from weft a b"
    );
    let out = weft()
        .arg("run")
        .arg(example("hello-wasi.wasm"))
        .args(["--", "exit", "7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn wasi_file_access_needs_a_preopen() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "secret plans").unwrap();
    let file = dir.path().join("note.txt");
    let denied = weft()
        .arg("run")
        .arg(example("hello-wasi.wasm"))
        .arg("--")
        .arg("cat")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        denied.status.code(),
        Some(2),
        "reading without a preopen must fail"
    );
    assert!(!String::from_utf8_lossy(&denied.stdout).contains("secret plans"));
    let allowed = weft()
        .arg("run")
        .arg(example("hello-wasi.wasm"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--")
        .arg("cat")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("secret plans"));
}

#[test]
fn inspect_describes_a_module() {
    let out = weft()
        .arg("inspect")
        .arg(example("pid.wasm"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["style"], "reactor");
    let caps: Vec<&str> = info["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"ports") && caps.contains(&"device:*"),
        "{caps:?}"
    );
    let out = weft()
        .arg("inspect")
        .arg(example("supervisor.wasm"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("weft::send"));
}

#[test]
fn malformed_module_and_bad_manifest_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0\x01\xff").unwrap();
    let out = weft().arg("inspect").arg(&junk).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.wasm") && err.contains("malformed"),
        "{err}"
    );

    let manifest = dir.path().join("bad.toml");
    std::fs::write(&manifest, "name = \"bad\"\n[[process]]\nname = \"p\"\nmodule = \"junk.wasm\"\ncapabilities = [\"lgo\"]\n").unwrap();
    let out = weft()
        .arg("run")
        .arg(&manifest)
        .arg("--for")
        .arg("1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("process #1 (\"p\")") && err.contains("lgo"),
        "{err}"
    );

    std::fs::write(
        &manifest,
        "name = \"bad\"\n[[process]]\nname = \"p\"\nmodule = \"junk.wasm\"\n",
    )
    .unwrap();
    let out = weft()
        .arg("run")
        .arg(&manifest)
        .arg("--for")
        .arg("1s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("process \"p\"") && err.contains("malformed"),
        "{err}"
    );
}

/// Ctrl-C (SIGINT) stops a run cleanly and still prints the final report.
#[test]
fn ctrl_c_stops_with_the_final_report() {
    use std::io::{BufRead, BufReader};
    example("pid.wasm");
    let mut child = weft()
        .args(["run", "examples/factory-cell.toml", "--json"])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the app is up: the supervisor logs its first setpoint at tag 0.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    assert!(
        lines.any(|l| l.unwrap().contains("setpoint 50")),
        "app never started"
    );
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::spawn(move || lines.for_each(drop));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("final JSON report after Ctrl-C");
    assert_eq!(report["processes"].as_array().unwrap().len(), 4);
    assert!(
        report["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "stopped")
    );
}

/// A module that does something refused on every tick (here: sends a
/// message over its `max_message`) gets a few warnings in the node's log,
/// not one per attempt, while every refusal is still counted.
#[test]
fn guest_triggered_warnings_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("noisy.wat"),
        r#"(module (import "weft" "send" (func $send (param i32 i32 i32) (result i32)))
            (memory 1)
            (func (export "weft_tick") (param i64)
              (drop (call $send (i32.const 0) (i32.const 0) (i32.const 4096)))))"#,
    )
    .unwrap();
    let manifest = dir.path().join("noisy.toml");
    std::fs::write(
        &manifest,
        "name = \"noisy\"\n[[process]]\nname = \"noisy\"\nmodule = \"noisy.wat\"\nclass = \"rt\"\nperiod = \"2ms\"\n\
         max_message = \"1KiB\"\ncapabilities = [\"ports\"]\noutputs = [\"out\"]\n",
    )
    .unwrap();
    let out = weft()
        .arg("run")
        .arg(&manifest)
        .args(["--for", "2s", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let refused = report["processes"][0]["messages_refused"].as_u64().unwrap();
    assert!(refused >= 100, "every refusal is counted: {refused}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("oversized message refused"))
        .count();
    assert!(
        (1..=3).contains(&warnings),
        "{warnings} warnings for {refused} refusals:\n{stderr}"
    );
}

/// A command whose output is closed early (`weft ... | head`) stops
/// quietly: no panic, no backtrace, exit status 0.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    example("pid.wasm");
    for args in [
        &["run", "examples/factory-cell.toml", "--for", "1s"][..],
        &["inspect", "examples/wasm/pid.wasm"][..],
    ] {
        let mut child = weft()
            .args(args)
            .current_dir(repo())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "weft {args:?}:\n{stderr}");
        assert_eq!(out.status.code(), Some(0), "weft {args:?}:\n{stderr}");
    }
}

/// A node whose process slots the kernel's mapping limit or the address
/// space cannot hold says so at start, with what bounds it, instead of a
/// bare ENOMEM.
#[test]
fn a_node_too_big_for_the_machine_is_refused_at_start() {
    let refused = |n: u64| {
        let out = weft()
            .args(["node", "--name", "big", "--max-processes", &n.to_string()])
            .args(["--connect", "tcp/127.0.0.1:1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{n} processes accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // More than the address space holds at the default largest memory.
    let err = refused(4_000_000_000);
    assert!(
        err.contains("room for 4000000000 processes") && err.contains("address space"),
        "{err}"
    );
    // Within the address space, beyond this kernel's mapping limit (each
    // slot takes at least 4 mappings once its process runs).
    let limit: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let n = limit / 4 + 1_000;
    if n <= 131_000 {
        let err = refused(n);
        assert!(
            err.contains(&format!("room for {n} processes")) && err.contains("vm.max_map_count"),
            "{err}"
        );
    }
}

/// A checkpoint interval a node cannot keep is refused before it starts.
#[test]
fn a_node_refuses_a_checkpoint_interval_too_short() {
    let out = weft()
        .args(["node", "--name", "n", "--checkpoint-every", "1ms"])
        .args(["--connect", "tcp/127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "invalid input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checkpoint-every 1ms is too often"), "{err}");
}
