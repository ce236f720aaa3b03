//! weft's `/metrics` endpoint: an HTTP server (axum) that answers every
//! scrape with the OpenMetrics text encoding of a `prometheus-client`
//! registry, which Prometheus reads natively.
//!
//! weft's figures already live in atomics and swapped snapshots (a
//! process's counters, a node's checkpoint store, the controller's model),
//! so they are not mirrored into registered metrics: each component
//! registers one [`Collector`] that reads them at scrape time. The helpers
//! here ([`counter`], [`gauge`], [`histogram`]) write one metric family
//! from rows of labels and values, so a collector reads as a list of
//! families. Every name and label written here is listed in
//! `docs/observability.md`, and a test fails when one is not.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use prometheus_client;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
pub use prometheus_client::registry::Registry;

/// The media type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric name starts with this.
pub const PREFIX: &str = "weft";

/// An empty registry whose names start with `weft_`.
pub fn registry() -> Registry {
    Registry::with_prefix(PREFIX)
}

/// A registry of just `collector`.
pub fn registry_of(collector: impl Collector) -> Registry {
    let mut registry = registry();
    registry.register_collector(Box::new(collector));
    registry
}

/// Reads a `--metrics` address.
pub fn parse_addr(text: &str) -> Result<SocketAddr> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "bad metrics address {text:?}: write IP:PORT, for example 127.0.0.1:9460 \
             (0.0.0.0:9460 to be scraped from other machines)"
        )
    })
}

/// A running `/metrics` endpoint; dropping it stops it.
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// An address listened on, not served yet: a component binds it before
/// anything else starts, so a bad or taken address fails the start.
pub struct MetricsListener(tokio::net::TcpListener);

impl MetricsListener {
    /// Fails, naming the address, when it cannot listen there.
    pub async fn bind(addr: SocketAddr) -> Result<MetricsListener> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        Ok(MetricsListener(listener))
    }

    /// Serves `registry` (see [`registry`]) at `/metrics`.
    pub fn serve(self, registry: Registry) -> Result<MetricsServer> {
        self.serve_with(registry, Router::new())
    }

    /// Serves `registry` at `/metrics` and `routes` beside it (the
    /// controller's dashboard shares its listener).
    pub fn serve_with(self, registry: Registry, routes: Router) -> Result<MetricsServer> {
        let registry = Arc::new(registry);
        let local_addr = self.0.local_addr()?;
        let app = routes.route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { scrape(&registry) }
            }),
        );
        let listener = self.0;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
        tracing::info!(%local_addr, "serving metrics at /metrics");
        Ok(MetricsServer { local_addr, task })
    }
}

impl MetricsServer {
    /// Listens on `addr` and serves `registry` there.
    pub async fn bind(addr: SocketAddr, registry: Registry) -> Result<MetricsServer> {
        MetricsListener::bind(addr).await?.serve(registry)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn scrape(registry: &Registry) -> Response {
    let mut body = String::with_capacity(64 << 10);
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        )
            .into_response(),
    }
}

/// Writes the counter family `name` (the encoder adds `_total`).
pub fn counter<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes the gauge family `name`.
pub fn gauge<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// One labelled histogram: samples per bucket (not cumulative; the last
/// is above every bound) and their sum.
pub struct HistogramRow<'a, L> {
    pub labels: L,
    pub counts: &'a [u64],
    pub sum: f64,
}

/// Writes the histogram family `name` with the upper bounds `bounds`
/// (`+Inf` is added).
pub fn histogram<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    bounds: &[f64],
    rows: impl IntoIterator<Item = HistogramRow<'a, L>>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(bounds.len() + 1);
    for row in rows {
        debug_assert_eq!(row.counts.len(), bounds.len() + 1);
        buckets.clear();
        buckets.extend(
            bounds
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(row.counts.iter().copied()),
        );
        let count = row.counts.iter().sum();
        family
            .encode_family(&row.labels)?
            .encode_histogram::<NoLabelSet>(row.sum, count, &buckets, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Two;

    impl Collector for Two {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            counter(
                &mut encoder,
                "ticks",
                "Ticks run.",
                [([("process", "a")], 3), ([("process", "b")], 4)],
            )?;
            histogram(
                &mut encoder,
                "jitter_seconds",
                "Wake-up lateness.",
                &[0.001, 0.01],
                [HistogramRow {
                    labels: [("process", "a")],
                    counts: &[1, 2, 3],
                    sum: 0.5,
                }],
            )
        }
    }

    #[test]
    fn a_bad_address_is_named() {
        let e = parse_addr("localhost").unwrap_err().to_string();
        assert!(e.contains("\"localhost\"") && e.contains("IP:PORT"), "{e}");
        assert_eq!(parse_addr("127.0.0.1:9460").unwrap().port(), 9460);
    }

    #[tokio::test]
    async fn a_scrape_reads_the_collector_in_the_text_format() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), registry_of(Two))
            .await
            .unwrap();
        let body = http_get(server.local_addr(), "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(CONTENT_TYPE), "{body}");
        for line in [
            "weft_ticks_total{process=\"a\"} 3",
            "weft_ticks_total{process=\"b\"} 4",
            "weft_jitter_seconds_bucket{le=\"0.001\",process=\"a\"} 1",
            "weft_jitter_seconds_bucket{le=\"0.01\",process=\"a\"} 3",
            "weft_jitter_seconds_bucket{le=\"+Inf\",process=\"a\"} 6",
            "weft_jitter_seconds_count{process=\"a\"} 6",
            "# EOF",
        ] {
            assert!(body.contains(line), "no {line:?} in\n{body}");
        }
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused_with_its_name() {
        let first = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), registry_of(Two))
            .await
            .unwrap();
        let Err(e) = MetricsServer::bind(first.local_addr(), registry_of(Two)).await else {
            panic!("bound twice");
        };
        let e = format!("{e:#}");
        assert!(e.contains(&first.local_addr().to_string()), "{e}");
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
