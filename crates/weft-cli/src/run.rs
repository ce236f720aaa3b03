//! `weft run`: an app manifest on this node, or a WASI command module.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use weft_manifest::module::Files;
use weft_manifest::{AppManifest, ProcessSpec};
use weft_runtime::{Node, Process, Recorder, RunningApp, RuntimeConfig, StartOptions};

use crate::error::InputResult;
use crate::out::outln;

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
    /// The node's devices [default: one simulated `plant`].
    #[command(flatten)]
    devices: crate::devices::DeviceArgs,
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

pub fn run(args: RunArgs) -> Result<u8> {
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

async fn run_app(args: RunArgs) -> Result<u8> {
    let manifest = AppManifest::load(&args.target).bad_input()?;
    if !args.args.is_empty() {
        return Err(anyhow::anyhow!(
            "arguments after `--` are for WASI modules; set `args` in the manifest instead"
        ))
        .bad_input();
    }
    let simulated_only = args.devices.config.is_none() && args.devices.devices.is_empty();
    // The links to real devices live as long as the run.
    let devices = match simulated_only {
        true => None,
        false => Some(weft_devices::NodeDevices::start(
            &args.devices.node_config()?,
        )?),
    };
    let node = match &devices {
        Some(devices) => Node::with_devices(&RuntimeConfig::default(), devices.devices())?,
        None => Node::new(&RuntimeConfig::default())?,
    };
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(
            path,
            &args.target,
            manifest.name.as_str(),
        )?),
        None => None,
    };
    let options = StartOptions {
        record: recorder.as_ref().map(Recorder::sink),
        ..StartOptions::default()
    };
    let app = node
        .start_with(
            &manifest,
            &Files,
            &tokio::runtime::Handle::current(),
            options,
        )
        .bad_input()?;
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
    watch(&app, args.duration, !args.json).await;
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
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", crate::table::render(&report));
        outln!("devices: {}", report.devices);
    }
    Ok(0)
}

/// Waits until `duration` has passed, every process is done, or Ctrl-C;
/// when `live`, redraws the process table on stderr every second.
async fn watch(app: &RunningApp, duration: Option<Duration>, live: bool) {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let remaining = duration.map(|d| d.saturating_sub(started.elapsed()));
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
}

/// Runs a WASI command and exits with its status. A status an exit code
/// cannot carry (outside 0..=255) is said so and ends as 255.
async fn run_command(args: RunArgs) -> Result<u8> {
    let path = &args.target;
    let mut spec = ProcessSpec::new(&command_name(path), path);
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
        .map(|d| weft_manifest::parse_dir(d))
        .collect();
    let node = Node::new(&RuntimeConfig::default().max_processes(4))?;
    let spec = Arc::new(spec);
    let program = Arc::new(node.prepare(spec.clone(), &Files).bad_input()?);
    let mut process = Process::instantiate(program, node.env(&spec, 0))
        .await
        .bad_input()?;
    let code = process.run_command().await?;
    u8::try_from(code).or_else(|_| {
        eprintln!("the module exited with status {code}, which an exit code cannot carry; exiting with 255");
        Ok(255)
    })
}

/// The module's file name as a process name, or `command` if it is not one.
fn command_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| s.parse::<weft_types::ProcessName>().is_ok())
        .unwrap_or_else(|| "command".into())
}
