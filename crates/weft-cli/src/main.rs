//! `weft`: the command line of the weft platform.
//!
//! Each subcommand lives in its own module; this file only parses
//! arguments, sets up logging and maps errors to exit codes.

mod inspect;
mod run;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Reliable distributed edge-cloud applications from WebAssembly modules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an app manifest (APP.toml) on this node, or a WASI command module (MODULE.wasm).
    Run(run::RunArgs),
    /// Show a module's imports, exports, memory and the capabilities it needs.
    Inspect {
        module: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the benchmark suite and write BENCHMARKS.md and benchmarks.json.
    Bench(weft_bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Inspect { module, json } => inspect::inspect(&module, json).map(|()| 0),
        Command::Bench(args) => weft_bench::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
