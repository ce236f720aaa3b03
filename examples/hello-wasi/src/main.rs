//! weft example `hello-wasi`: an ordinary WASI preview 1 command.
//!
//! `weft run hello-wasi.wasm [ARGS...]` prints `hello from weft` and its
//! arguments. Subcommands:
//!
//! - `cat PATH`: prints the file (needs a preopen, e.g. `--dir .`); on
//!   failure prints the error to stderr and exits with code 2;
//! - `exit CODE`: exits with `CODE`.
//!
//! Capability: `wasi`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rest = args.get(1..).unwrap_or(&[]);
    if rest.is_empty() {
        println!("hello from weft");
    } else {
        println!("hello from weft {}", rest.join(" "));
    }

    match rest.first().map(String::as_str) {
        Some("cat") => {
            let Some(path) = rest.get(1) else {
                eprintln!("usage: hello-wasi cat PATH");
                return ExitCode::from(2);
            };
            match std::fs::read(path) {
                Ok(bytes) => {
                    let mut out = std::io::stdout().lock();
                    if let Err(e) = out.write_all(&bytes).and_then(|_| out.flush()) {
                        eprintln!("hello-wasi: writing {path}: {e}");
                        return ExitCode::from(2);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hello-wasi: cannot read {path}: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some("exit") => {
            let code = match rest.get(1).map(|c| c.parse::<i32>()) {
                Some(Ok(code)) => code,
                _ => {
                    eprintln!("usage: hello-wasi exit CODE");
                    return ExitCode::from(2);
                }
            };
            std::process::exit(code)
        }
        _ => ExitCode::SUCCESS,
    }
}
