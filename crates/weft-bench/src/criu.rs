//! CRIU dumping and restoring a native process that holds the same number
//! of bytes of touched memory as a weft process: the baseline for weft's
//! checkpoint and restore.
//!
//! The native process is a tiny C program built here with `cc`: it
//! mallocs N bytes, writes the same 64-bit LCG stream over them as the
//! Wasm `stateful` module does, creates a ready file and waits in
//! `pause()`. Each sample is `criu dump -t PID --shell-job` (which ends the
//! process) followed by `criu restore --shell-job -d` (which returns once
//! the restored process runs); the restored process is then killed.
//!
//! CRIU needs root and a kernel it understands. When it cannot run, the
//! error is returned with CRIU's own words, for the report to state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;

use crate::stats::{histogram, record};

/// The native process: N bytes of touched, patterned memory, then idle.
const HELPER_C: &str = r#"#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* Global, so the compiler must keep every store: pause() could read it. */
uint64_t *state;
int main(int argc, char **argv) {
    if (argc != 3) return 2;
    size_t words = strtoull(argv[1], 0, 10) / 8;
    uint64_t x = 12345;
    state = malloc(words * 8);
    if (!state) return 1;
    for (size_t i = 0; i < words; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        state[i] = x;
    }
    FILE *ready = fopen(argv[2], "w");
    if (!ready) return 1;
    fclose(ready);
    for (;;) pause();
}
"#;

/// How long one CRIU command or the helper's start may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// CRIU's dump and restore times for one state size, nanoseconds.
pub struct CriuCosts {
    pub dump: Histogram<u64>,
    pub restore: Histogram<u64>,
    /// dump + restore of the same sample.
    pub total: Histogram<u64>,
    /// Resident set of the native process before its first dump, bytes.
    pub helper_rss: u64,
}

/// Where the helper and the images live.
pub struct Criu {
    dir: PathBuf,
    helper: PathBuf,
}

/// Runs `cmd` to completion, killed if it takes longer than `timeout`;
/// its stderr on failure. The caller's clock stops when it is reaped (a
/// watchdog thread, not polling, enforces the timeout).
fn run(cmd: &mut Command, timeout: Duration) -> Result<()> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let timed_out = finished.recv_timeout(timeout).is_err();
        if timed_out {
            // SAFETY: kill(2) of our child, which is not reaped until the
            // main thread's wait returns (and then `done` was sent).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        timed_out
    });
    let output = child.wait_with_output();
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let output = output?;
    if timed_out {
        bail!("did not finish within {timeout:?}");
    }
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// The `Error` lines of a CRIU log (at most the last four), else its tail.
fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).collect();
    let lines = if errors.is_empty() {
        text.lines().collect()
    } else {
        errors
    };
    let tail = &lines[lines.len().saturating_sub(4)..];
    tail.iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Polls (every millisecond, up to `timeout`) until `done` holds.
fn poll(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + timeout;
    while !done() {
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// True once `pid` has exited (gone, or a zombie left for its new parent).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

impl Criu {
    /// Checks that `criu` is installed and builds the helper under `dir`.
    pub fn prepare(dir: &Path) -> Result<Criu> {
        std::fs::create_dir_all(dir)?;
        run(Command::new("criu").arg("--version"), STEP_TIMEOUT).map_err(|e| {
            anyhow!("criu is not installed or does not run (scripts/setup.sh installs it): {e:#}")
        })?;
        let source = dir.join("helper.c");
        let helper = dir.join("helper");
        std::fs::write(&source, HELPER_C)?;
        run(
            Command::new("cc")
                .arg("-O1")
                .arg("-o")
                .arg(&helper)
                .arg(&source),
            STEP_TIMEOUT,
        )
        .context("cannot build the native helper with cc")?;
        Ok(Criu {
            dir: dir.to_path_buf(),
            helper,
        })
    }

    /// Starts the helper holding `bytes` and waits until it has touched them.
    fn spawn(&self, bytes: u64) -> Result<Child> {
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(&self.helper)
            .arg(bytes.to_string())
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the native helper")?;
        if let Err(e) = poll(
            "the native helper to touch its memory",
            STEP_TIMEOUT,
            || ready.exists(),
        ) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(child)
    }

    /// One dump and restore of a fresh helper holding `bytes`: the two
    /// durations, and the helper's RSS before the dump.
    fn once(&self, bytes: u64) -> Result<(Duration, Duration, u64)> {
        let images = self.dir.join("images");
        let _ = std::fs::remove_dir_all(&images);
        std::fs::create_dir_all(&images)?;
        let mut child = self.spawn(bytes)?;
        let pid = child.id();
        let rss = rss_of(pid);
        let t = Instant::now();
        let dumped = run(
            Command::new("criu")
                .args(["dump", "--shell-job", "-o", "dump.log", "-t"])
                .arg(pid.to_string())
                .arg("-D")
                .arg(&images),
            STEP_TIMEOUT,
        );
        let dump = t.elapsed();
        // A successful dump has ended the helper; a failed one has not.
        let _ = child.kill();
        let _ = child.wait();
        dumped.map_err(|e| {
            anyhow!(
                "criu dump failed ({e:#}); {}",
                log_errors(&images.join("dump.log"))
            )
        })?;

        let pidfile = images.join("restored.pid");
        let t = Instant::now();
        run(
            Command::new("criu")
                .args(["restore", "--shell-job", "-d", "-o", "restore.log", "-D"])
                .arg(&images)
                .arg("--pidfile")
                .arg(&pidfile),
            STEP_TIMEOUT,
        )
        .map_err(|e| {
            anyhow!(
                "criu restore failed ({e:#}); {}",
                log_errors(&images.join("restore.log"))
            )
        })?;
        let restore = t.elapsed();
        self.end_restored(&pidfile)?;
        let _ = std::fs::remove_dir_all(&images);
        Ok((dump, restore, rss))
    }

    /// Kills the restored helper (not our child: CRIU detached it).
    fn end_restored(&self, pidfile: &Path) -> Result<()> {
        let pid: u32 = std::fs::read_to_string(pidfile)
            .context("criu restore wrote no pidfile")?
            .trim()
            .parse()
            .context("criu restore wrote a bad pidfile")?;
        if exited(pid) {
            bail!("the restored process {pid} is not running");
        }
        // SAFETY: a plain kill(2) of the process CRIU restored for us.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        poll("the restored process to exit", STEP_TIMEOUT, || exited(pid))
    }

    /// `reps` dumps and restores of a native process holding `bytes`.
    pub fn measure(&self, bytes: u64, reps: usize) -> Result<CriuCosts> {
        let mut costs = CriuCosts {
            dump: histogram(),
            restore: histogram(),
            total: histogram(),
            helper_rss: 0,
        };
        for rep in 0..reps {
            let (dump, restore, rss) = self.once(bytes)?;
            if rep == 0 {
                costs.helper_rss = rss;
            }
            record(&mut costs.dump, dump.as_nanos() as u64);
            record(&mut costs.restore, restore.as_nanos() as u64);
            record(&mut costs.total, (dump + restore).as_nanos() as u64);
        }
        Ok(costs)
    }
}

/// `criu check`'s verdict, for the report: "ok" or its error lines.
pub fn check() -> String {
    match run(Command::new("criu").arg("check"), STEP_TIMEOUT) {
        Ok(()) => "ok".into(),
        Err(e) => {
            let text = format!("{e:#}");
            let errors: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("Error"))
                .map(str::trim)
                .collect();
            if errors.is_empty() {
                text
            } else {
                errors.join(" / ")
            }
        }
    }
}
