//! The observability group, on a real node (a `weft node` OS process with
//! `--metrics`) of a local cluster:
//!
//! * **Scrape time**: HTTP GETs of the node's `/metrics` while it runs
//!   1,000 periodic processes, against the same node running none,
//!   measured in the same run.
//! * **rt jitter under scraping**: a 1 kHz rt process on that node (beside
//!   the 1,000), with a scraper polling `/metrics` every 100 ms, against
//!   the same without the scraper. Each window deploys the rt process
//!   afresh, so its jitter figures (read from the node's task monitor)
//!   cover that window only; windows alternate, and the median over rounds
//!   is kept, as in the jitter group.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_client::cluster::NodeSpec;
use weft_fabric::codec::DeployBundle;

use crate::Ctx;
use crate::cluster::{Watch, deploy_modules, start_cluster_of};
use crate::modules::TINY;
use crate::stats::{Figure, Goal, Stat, Summary, Unit};

const NODE: &str = "obs";
const PROCESSES: usize = 1_000;
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

pub fn observability(ctx: &Ctx) -> Result<Vec<Figure>> {
    crate::on_runtime(run(ctx))
}

async fn run(ctx: &Ctx) -> Result<Vec<Figure>> {
    let metrics = SocketAddr::from(([127, 0, 0, 1], weft_client::free_port()?));
    let node = NodeSpec::new(NODE)
        .max_processes(PROCESSES as u32 + 10)
        .metrics(metrics);
    let (_cluster, mut watch) = start_cluster_of(ctx, "observability", &[node]).await?;
    let scrapes = if ctx.quick { 20 } else { 100 };
    eprintln!("[bench]   observability: {scrapes} scrapes of the idle node");
    let empty = scrape_times(metrics, scrapes)?;
    eprintln!("[bench]   observability: deploying {PROCESSES} processes");
    deploy(&mut watch, &many(), "many", PROCESSES).await?;
    // Every process has published since (histograms included).
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("[bench]   observability: {scrapes} scrapes of the node with {PROCESSES}");
    let full = scrape_times(metrics, scrapes)?;
    let scrape = Figure::new(
        "metrics-scrape-1000",
        "One /metrics scrape of a node running 1,000 processes",
        Unit::Nanoseconds,
        Summary::of_values(format!("node with {PROCESSES} processes"), &full),
        Summary::of_values("the same node with none", &empty),
        Some(Goal::ValueAtMost {
            stat: Stat::Median,
            max: 10e6,
        }),
        "median ≤ 10 ms",
    );
    let jitter = jitter_figure(ctx, &mut watch, metrics).await?;
    watch.client.close().await;
    Ok(vec![scrape, jitter])
}

/// 1,000 be processes ticking once a second.
fn many() -> DeployBundle {
    let text: String = (0..PROCESSES)
        .map(|i| format!("[[process]]\nname = \"p{i}\"\nmodule = \"MODULE\"\nperiod = \"1s\"\n"))
        .collect();
    deploy_modules("many", &[("MODULE", TINY.as_bytes())], &text)
}

/// The 1 kHz rt process whose jitter is measured.
fn ticker(app: &str) -> DeployBundle {
    let text =
        "[[process]]\nname = \"rt\"\nmodule = \"MODULE\"\nclass = \"rt\"\nperiod = \"1ms\"\n";
    deploy_modules(app, &[("MODULE", TINY.as_bytes())], text)
}

async fn deploy(watch: &mut Watch, bundle: &DeployBundle, app: &str, n: usize) -> Result<()> {
    watch.deploy(bundle).await?;
    watch
        .until(
            &format!("{n} processes of {app} running"),
            Duration::from_secs(120),
            |w, _, _| w.running(app) >= n,
        )
        .await?;
    Ok(())
}

/// `n` GETs of `/metrics`, each timed from connect to the last byte.
fn scrape_times(at: SocketAddr, n: usize) -> Result<Vec<u64>> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = scrape(at)?;
        times.push(t.elapsed().as_nanos() as u64);
        if !body.contains("weft_node_processes") {
            bail!("the node's /metrics lacks weft_node_processes");
        }
    }
    Ok(times)
}

fn scrape(at: SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(at).context("cannot reach /metrics")?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") => Ok(body.to_string()),
        _ => bail!("/metrics did not answer 200"),
    }
}

/// A thread scraping `/metrics` every [`SCRAPE_EVERY`] until dropped.
struct Scraper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Scraper {
    fn start(at: SocketAddr) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut done = 0;
            while !flag.load(Ordering::Relaxed) {
                if scrape(at).is_ok() {
                    done += 1;
                }
                std::thread::sleep(SCRAPE_EVERY);
            }
            done
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

async fn jitter_figure(ctx: &Ctx, watch: &mut Watch, at: SocketAddr) -> Result<Figure> {
    let (rounds, window) = if ctx.quick {
        (1, Duration::from_secs(5))
    } else {
        (3, Duration::from_secs(10))
    };
    let (mut quiet, mut scraped, mut scrapes) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        eprintln!(
            "[bench]   observability: rt jitter round {} of {rounds}",
            round + 1
        );
        quiet.push(
            window_jitter(watch, &format!("quiet{round}"), window, "without a scraper").await?,
        );
        let scraper = Scraper::start(at);
        let s = window_jitter(
            watch,
            &format!("scraped{round}"),
            window,
            "scraped every 100 ms",
        )
        .await;
        scrapes += scraper.finish();
        scraped.push(s?);
    }
    let mut figure = Figure::new(
        "rt-jitter-scraped",
        "1 kHz rt jitter on a node scraped every 100 ms (1,000 processes beside it)",
        Unit::Nanoseconds,
        Summary::of_rounds(&scraped),
        Summary::of_rounds(&quiet),
        Some(Goal::RatioAtMost {
            stat: Stat::P99,
            max: 1.05,
        }),
        "p99 ≤ 1.05× without the scraper",
    );
    let p99s = |s: &[Summary]| {
        s.iter()
            .map(|s| format!("{:.0}", s.p99 / 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    figure.notes.push(format!(
        "p99 per round (µs): scraped {}; without {}; {scrapes} scrapes in all",
        p99s(&scraped),
        p99s(&quiet)
    ));
    Ok(figure)
}

/// Deploys the rt process as `app`, lets it run `window`, reads its
/// jitter from the node's task monitor, removes it.
async fn window_jitter(
    watch: &mut Watch,
    app: &str,
    window: Duration,
    label: &str,
) -> Result<Summary> {
    deploy(watch, &ticker(app), app, 1).await?;
    tokio::time::sleep(window).await;
    let monitors = watch.client.monitors(Duration::from_secs(2)).await?;
    watch.remove_and_wait(app).await?;
    let task = monitors
        .iter()
        .flat_map(|m| &m.processes)
        .find(|t| t.app.as_str() == app)
        .with_context(|| format!("no task monitor entry of {app}"))?;
    let j = task.jitter;
    Ok(Summary::from_values(
        label,
        j.p50_us * 1e3,
        j.p99_us * 1e3,
        j.max_us * 1e3,
        j.samples,
    ))
}
