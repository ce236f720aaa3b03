//! `weft run`: an app manifest on this node, or a WASI command module.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use weft_manifest::{AppManifest, ProcessSpec};
use weft_runtime::{Node, Process, Recorder, RuntimeConfig, StartOptions};

#[derive(Args)]
pub struct RunArgs {
    /// An app manifest (.toml) or a WASI command module (.wasm/.wat).
    target: PathBuf,
    /// Stop after this long (e.g. 5s, 1m); default: until Ctrl-C.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Record device samples, faults and timing decisions to FILE, for `weft replay FILE`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// WASI modules: preopen a directory, HOST or HOST::GUEST.
    #[arg(long = "dir")]
    dirs: Vec<String>,
    /// WASI modules: set an environment variable, KEY=VALUE.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// Arguments passed to a WASI module.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let is_manifest = args.target.extension().is_some_and(|e| e == "toml");
    if is_manifest {
        runtime.block_on(run_app(args))
    } else {
        runtime.block_on(run_command(args))
    }
}

async fn run_app(args: RunArgs) -> Result<i32> {
    let manifest = AppManifest::load(&args.target)?;
    if !args.args.is_empty() {
        bail!("arguments after `--` are for WASI modules; set `args` in the manifest instead");
    }
    let node = Node::new(&RuntimeConfig::default())?;
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(path, &args.target, &manifest.name)?),
        None => None,
    };
    let options = StartOptions {
        record: recorder.as_ref().map(Recorder::sink),
        ..StartOptions::default()
    };
    let app = node.start_with(&manifest, &tokio::runtime::Handle::current(), options)?;
    if !args.json {
        eprintln!(
            "running app {:?}: {} processes{}; Ctrl-C to stop",
            manifest.name,
            manifest.processes.len(),
            args.duration
                .map(|d| format!(" for {}", humantime::format_duration(d)))
                .unwrap_or_default()
        );
    }
    let started = Instant::now();
    let live = !args.json;
    let tty = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let remaining = args.duration.map(|d| d.saturating_sub(started.elapsed()));
        if remaining == Some(Duration::ZERO) {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                if live {
                    let table = crate::table::render(&app.report());
                    if tty { eprint!("\x1b[H\x1b[2J{table}"); } else { eprint!("{table}"); }
                }
                if app.all_done() {
                    break;
                }
            }
            _ = tokio::time::sleep(remaining.unwrap_or(Duration::MAX)) => break,
            _ = &mut ctrl_c => {
                if live { eprintln!("\nstopping…"); }
                break;
            }
        }
    }
    let report = app.stop().await;
    if let (Some(recorder), Some(path)) = (recorder, &args.record) {
        recorder.finish()?;
        if !args.json {
            eprintln!(
                "recorded to {}; replay with `weft replay {0}`",
                path.display()
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", crate::table::render(&report));
        println!("devices: {}", report.devices);
    }
    Ok(0)
}

async fn run_command(args: RunArgs) -> Result<i32> {
    let path = &args.target;
    let mut spec = ProcessSpec::new(command_name(path), path);
    spec.capabilities.insert(weft_abi::Capability::Wasi);
    spec.args = args.args.clone();
    spec.deadline = Some(Duration::from_secs(365 * 24 * 3600));
    for text in &args.envs {
        let (k, v) = text
            .split_once('=')
            .with_context(|| format!("--env {text:?}: write KEY=VALUE"))?;
        spec.env.insert(k.into(), v.into());
    }
    spec.dirs = args
        .dirs
        .iter()
        .map(|d| weft_manifest::parse_dir(Path::new("."), d))
        .collect();
    let node = Node::new(&RuntimeConfig::default().max_processes(4))?;
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone())?);
    let mut process = Process::instantiate(program, node.env(&spec, 0)).await?;
    Ok(process.run_command().await?)
}

fn command_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "command".into())
}
