//! Cluster figures: cross-node port latency against raw Zenoh, failure
//! detection and recovery of a real cluster (`kill -9` and `SIGSTOP` of a
//! node), and the time to deploy apps of 1, 100 and 1,000 processes.
//!
//! The latency figure runs two Zenoh peer sessions in this process, joined
//! over TCP on loopback, and ping-pongs one message (no clock is shared
//! between two machines, so the figure is half the round trip). The other
//! figures start a controller and two nodes as real OS processes (the
//! `weft` binary running this benchmark) and watch them from a client
//! session: node liveliness (a `Delete` marks a death) and node statuses
//! (which processes run where), each event timestamped on arrival.
//!
//! This module owns the group's entry point and the run on a real cluster;
//! `latency`, `watch`, `deploy` and `failures` hold the parts.

mod deploy;
mod failures;
mod latency;
mod watch;

use anyhow::{Result, anyhow};

use crate::stats::{Figure, Unit};
use crate::{Ctx, progress};

pub(crate) use deploy::{deploy_modules, spawn_true};
pub(crate) use watch::{Watch, runs, start_cluster, start_cluster_of};

pub fn cluster(ctx: &Ctx) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    match runtime.block_on(latency::port_latency(ctx)) {
        Ok(f) => figures.push(f),
        Err(e) => {
            eprintln!("[bench]   cross-node port latency failed: {e:#}");
            figures.push(Figure::skipped(
                "cross-node-port-latency",
                "Cross-node port latency vs raw Zenoh",
                Unit::Nanoseconds,
                "median ≤ 1.3× raw Zenoh",
                format!("failed: {e:#}"),
            ));
        }
    }
    figures.extend(runtime.block_on(real_cluster(ctx)));
    for f in &figures {
        progress(f);
    }
    Ok(figures)
}

fn zerr(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

async fn try_real_cluster(ctx: &Ctx) -> Result<Vec<Figure>> {
    let (mut cluster, mut watch) = start_cluster(ctx, "cluster", 1024, &["a", "b"]).await?;
    let mut figures = deploy::deploy_times(ctx, &mut watch).await?;
    figures.extend(failures::failures(ctx, &mut cluster, &mut watch).await?);
    watch.client.close().await;
    Ok(figures)
}

/// Failure and deploy figures, or skipped figures saying why not.
async fn real_cluster(ctx: &Ctx) -> Vec<Figure> {
    match try_real_cluster(ctx).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("[bench]   cluster run failed: {e:#}");
            let skip = |id: &str, title: &str, goal: &str| {
                Figure::skipped(id, title, Unit::Nanoseconds, goal, format!("failed: {e:#}"))
            };
            vec![
                skip(
                    "node-death-detection-kill",
                    "Node death detection after kill -9",
                    "p99 ≤ 50 ms",
                ),
                skip(
                    "recovery-after-kill",
                    "Process running elsewhere after kill -9",
                    "p99 ≤ 1 s",
                ),
            ]
        }
    }
}
