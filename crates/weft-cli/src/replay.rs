//! `weft replay`: re-runs a recording offline and shows whether every
//! process's output hash chain equals the live run's.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use weft_manifest::AppManifest;
use weft_manifest::module::Files;
use weft_runtime::{Node, Recording, ReplayReport, RuntimeConfig};

use crate::error::InputResult;
use crate::out::outln;

#[derive(Args)]
pub struct ReplayArgs {
    /// A recording written by `weft run APP.toml --record FILE`.
    recording: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Exits 0 when the replay's chains equal the live run's, 1 when not.
pub fn replay(args: ReplayArgs) -> Result<u8> {
    let recording = Recording::read(&args.recording).bad_input()?;
    let origin = &recording.manifest_path;
    let base = origin
        .parent()
        .context("the recorded manifest path has no directory")
        .bad_input()?;
    let mut manifest = AppManifest::parse(&recording.manifest_text, origin.display().to_string())
        .context("the manifest stored in the recording")
        .bad_input()?;
    manifest.resolve_paths(base);
    let node = Node::new(&RuntimeConfig::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let report = runtime.block_on(weft_runtime::replay(&node, &recording, &manifest, &Files))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report, started.elapsed())?;
    }
    Ok(if report.matches_live { 0 } else { 1 })
}

fn print_table(report: &ReplayReport, took: std::time::Duration) -> Result<()> {
    outln!(
        "{:<14} {:>8} {:>12}  {:<16} {:<16} SAME",
        "PROCESS",
        "CALLS",
        "LAST TAG",
        "CHAIN",
        "LIVE CHAIN"
    );
    for p in &report.processes {
        let last = p
            .last_tag_ns
            .map(|t| format!("{:.3}s", t as f64 * 1e-9))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<14} {:>8} {:>12}  {:<16} {:<16} {}",
            p.name,
            p.calls,
            last,
            &p.chain[..16],
            &p.live_chain[..16],
            if p.chain == p.live_chain { "yes" } else { "NO" }
        );
    }
    if report.matches_live {
        outln!(
            "replayed {:?} in {took:.2?}: every chain equals the live run's",
            report.app
        );
    } else {
        outln!(
            "replayed {:?} in {took:.2?}: chains DIFFER from the live run",
            report.app
        );
    }
    Ok(())
}
