//! `weft`: the command line of the weft platform.
//!
//! Each subcommand lives in its own module; this file only parses
//! arguments, sets up logging and maps errors to exit codes.

mod cluster;
mod daemons;
mod devices;
mod error;
mod events;
mod inspect;
mod migrate;
mod out;
mod replay;
mod run;
mod table;
mod top;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_types::{AppName, NodeName, ProcessRef};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Reliable distributed edge-cloud applications from WebAssembly modules",
    after_help = error::EXIT_STATUSES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an app manifest (APP.toml) on this node, or a WASI command module (MODULE.wasm).
    Run(run::RunArgs),
    /// Re-run a recording (`weft run --record`) offline and compare output hash chains.
    Replay(replay::ReplayArgs),
    /// Show a module's imports, exports, memory and the capabilities it needs.
    Inspect {
        module: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmark suite and write BENCHMARKS.md and benchmarks.json.
    Bench(weft_bench::BenchArgs),
    /// Start a whole cluster on this machine (controller + nodes) with the demo app.
    Up(up::UpArgs),
    /// Run a node agent that joins the cluster and runs what it is assigned.
    Node(daemons::NodeArgs),
    /// Serve a simulated thermal plant over Modbus TCP (a device for a
    /// node config's `modbus-tcp` table; see docs/devices.md).
    PlantSim(devices::PlantSimArgs),
    /// Run the controller.
    Controller(daemons::ControllerArgs),
    /// Run a Zenoh router that joins sites.
    Router(daemons::FabricArgs),
    /// Deploy (or update) an app on the cluster, and wait until it runs.
    Deploy {
        manifest: PathBuf,
        /// Return once the controller took the app, without waiting for
        /// its processes to run.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for every process to run (exit status 6 after).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
        timeout: std::time::Duration,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Remove an app from the cluster.
    Rm {
        app: AppName,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// List the cluster's processes.
    Ps {
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// List the cluster's nodes.
    Nodes {
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Follow a process's log lines (APP/PROCESS).
    Logs {
        target: ProcessRef,
        /// Stop after this long.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Show what happened in the cluster (placements, faults, migrations,
    /// takeovers, nodes joining and dying), oldest first; of one APP or
    /// APP/PROCESS if named. With --json, one JSON object per line.
    Events {
        target: Option<weft_client::EventFilter>,
        /// Keep printing events as they happen (survives a controller restart).
        #[arg(long, short)]
        follow: bool,
        /// Only events after this sequence number (the `seq` of the JSON).
        #[arg(long)]
        after: Option<u64>,
        /// With --follow, stop after this long.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// A live task monitor of every process on every node: cycle time,
    /// jitter, deadline misses, fuel. Sorts by any column (←/→, r); q quits.
    Top {
        /// Print the table once and exit (with --json: the nodes' monitors).
        #[arg(long)]
        once: bool,
        /// The column to sort by at first.
        #[arg(long, value_enum, default_value = "node")]
        sort: top::Column,
        /// How often to refresh.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        interval: std::time::Duration,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Move a running process (APP/PROCESS) to another node live, without a missed tick.
    Migrate {
        target: ProcessRef,
        /// The node to move it to.
        #[arg(long)]
        to: NodeName,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Move every process off a node and stop placing new ones there.
    Drain {
        node: NodeName,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
    /// Let a drained node take processes again.
    Undrain {
        node: NodeName,
        #[command(flatten)]
        client: cluster::ClientArgs,
    },
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(future)?;
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn,zenoh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::replay(args),
        Command::Inspect { module, json } => inspect::inspect(&module, json).map(|()| 0),
        Command::Bench(args) => weft_bench::run(args).map(|()| 0),
        Command::Up(args) => block_on(up::up(args)),
        Command::Node(args) => block_on(daemons::node(args)),
        Command::Controller(args) => block_on(daemons::controller(args)),
        Command::PlantSim(args) => block_on(devices::plant_sim(args)),
        Command::Router(args) => block_on(daemons::router(args)),
        Command::Deploy {
            manifest,
            no_wait,
            timeout,
            client,
        } => block_on(cluster::deploy(
            client,
            manifest,
            (!no_wait).then_some(timeout),
        )),
        Command::Rm { app, client } => block_on(cluster::remove(client, app)),
        Command::Ps { client } => block_on(cluster::ps(client)),
        Command::Nodes { client } => block_on(cluster::nodes(client)),
        Command::Logs {
            target,
            duration,
            client,
        } => block_on(cluster::logs(client, target, duration)),
        Command::Events {
            target,
            follow,
            after,
            duration,
            client,
        } => {
            let args = events::EventsArgs {
                filter: target.unwrap_or_default(),
                after,
                follow,
                duration,
            };
            block_on(events::events(client, args))
        }
        Command::Top {
            once,
            sort,
            interval,
            client,
        } => block_on(top::top(
            client,
            top::TopArgs {
                once,
                sort,
                interval,
            },
        )),
        Command::Drain { node, client } => block_on(cluster::drain(client, node)),
        Command::Undrain { node, client } => block_on(cluster::undrain(client, node)),
        Command::Migrate { target, to, client } => block_on(migrate::migrate(client, target, to)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) if out::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(error::exit_status(&error))
        }
    }
}
