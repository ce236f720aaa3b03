//! Recording and replay end to end: `weft run --record` then `weft replay`
//! must give every process the output hash chain of the live run, through
//! device samples, restarts after faults, deadline misses, late messages
//! and message-driven ordering; damaged recordings and changed modules are
//! refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "weft failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Runs `manifest` for `secs` while recording to `recording`; the live report.
fn record(manifest: &Path, secs: u32, recording: &Path) -> Value {
    json(
        &weft()
            .arg("run")
            .arg(manifest)
            .args(["--for", &format!("{secs}s"), "--json", "--record"])
            .arg(recording)
            .output()
            .unwrap(),
    )
}

fn replay(recording: &Path) -> Output {
    weft()
        .args(["replay", "--json"])
        .arg(recording)
        .output()
        .unwrap()
}

/// Every process of the live report has the replay's chain, and it moved.
fn assert_same_chains(live: &Value, replayed: &Value) {
    assert_eq!(replayed["matches_live"], true, "{replayed:#}");
    let live = live["processes"].as_array().unwrap();
    let replayed = replayed["processes"].as_array().unwrap();
    assert_eq!(live.len(), replayed.len());
    for (l, r) in live.iter().zip(replayed) {
        assert_eq!(l["name"], r["name"]);
        assert_eq!(l["output_hash"], r["chain"], "{}", l["name"]);
        assert_ne!(
            r["chain"],
            "0".repeat(64),
            "{} published nothing",
            l["name"]
        );
        assert_eq!(l["last_tag_ns"], r["last_tag_ns"], "{}", l["name"]);
    }
}

/// The factory cell: the PID loop reads the plant every tick, so the
/// replay runs on recorded samples.
#[test]
fn replay_of_the_factory_cell_gives_the_live_chains() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("cell.rec");
    let live = record(&repo().join("examples/factory-cell.toml"), 2, &recording);
    assert_same_chains(&live, &json(&replay(&recording)));
}

/// A process that traps every fifth tick and restarts, one that misses
/// its deadline every third tick (policy `hold`), and a message-driven
/// process whose output depends on the order it takes their messages in.
#[test]
fn replay_reproduces_faults_restarts_misses_and_ordering() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("rough.rec");
    let live = record(
        &repo().join("crates/weft-cli/tests/apps/rough/app.toml"),
        2,
        &recording,
    );
    let by_name = |name: &str| {
        live["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    assert!(
        by_name("crashy")["restarts"].as_u64().unwrap() >= 2,
        "{live:#}"
    );
    assert!(
        by_name("slow")["deadline_misses"].as_u64().unwrap() >= 2,
        "{live:#}"
    );
    assert!(
        by_name("sink")["messages_handled"].as_u64().unwrap() >= 20,
        "{live:#}"
    );
    assert_same_chains(&live, &json(&replay(&recording)));
}

#[test]
fn damaged_recordings_and_changed_modules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    for entry in std::fs::read_dir(repo().join("crates/weft-cli/tests/apps/rough")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), app.join(entry.file_name())).unwrap();
    }
    let recording = dir.path().join("r.rec");
    record(&app.join("app.toml"), 1, &recording);
    let bytes = std::fs::read(&recording).unwrap();

    let refused = |bytes: &[u8], expect: &str| {
        let damaged = dir.path().join("damaged.rec");
        std::fs::write(&damaged, bytes).unwrap();
        let out = replay(&damaged);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expect), "{stderr}");
    };
    // The last byte belongs to the body of the last frame.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    refused(&flipped, "checksum mismatch");
    refused(&bytes[..bytes.len() - 5], "truncated");
    refused(b"not a recording at all", "not a weft recording");

    let slow = app.join("slow.wat");
    let text = std::fs::read_to_string(&slow).unwrap();
    std::fs::write(&slow, text.replace("i64.const 3", "i64.const 4")).unwrap();
    let out = replay(&recording);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("has changed since the recording"),
        "{stderr}"
    );
}
