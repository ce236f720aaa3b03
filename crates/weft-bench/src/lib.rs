//! The weft benchmark suite (`weft bench`).

use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Fewer iterations, for a fast smoke run.
    #[arg(long)]
    pub quick: bool,
}

pub fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("the benchmark suite is not built yet")
}
