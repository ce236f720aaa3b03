//! Opening a Zenoh session for a weft component.
//!
//! weft never relies on multicast scouting: every component is told where
//! to listen and whom to connect to. Peers still gossip the endpoints they
//! learn over those connections, so nodes that all connect to one seed
//! (the controller) end up connected to each other directly and keep
//! talking when the seed goes away.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

/// The Zenoh role of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Embedded peer: the default; no server to install.
    #[default]
    Peer,
    /// A short-lived tool such as the CLI.
    Client,
    /// Routes for others: joins sites or large deployments.
    Router,
}

/// Where and how to join the fabric, builder style.
#[derive(Debug, Clone)]
pub struct FabricConfig {
    pub cluster: String,
    pub mode: Mode,
    pub listen: Vec<String>,
    pub connect: Vec<String>,
    /// How long a silent peer is considered alive (a frozen process is
    /// noticed after this).
    pub lease: Duration,
}

/// Default endpoint of a single-machine cluster (`weft up`).
pub const DEFAULT_ENDPOINT: &str = "tcp/127.0.0.1:7447";

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            cluster: "default".into(),
            mode: Mode::Peer,
            listen: Vec::new(),
            connect: Vec::new(),
            lease: Duration::from_millis(1000),
        }
    }
}

impl FabricConfig {
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    pub fn listen(mut self, endpoints: impl IntoIterator<Item = String>) -> Self {
        self.listen.extend(endpoints);
        self
    }
    pub fn connect(mut self, endpoints: impl IntoIterator<Item = String>) -> Self {
        self.connect.extend(endpoints);
        self
    }
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    fn zenoh_config(&self) -> Result<zenoh::Config> {
        let mode = match self.mode {
            Mode::Peer => "peer",
            Mode::Client => "client",
            Mode::Router => "router",
        };
        let lease_ms = self.lease.as_millis().max(100) as u64;
        // A long-running component keeps retrying (a node may start before
        // the controller); a client command must fail fast instead.
        let (exit_on_failure, timeout_ms) = match self.mode {
            Mode::Client => (true, 5_000i64),
            _ => (false, -1i64),
        };
        let config = json!({
            "mode": mode,
            "listen": { "endpoints": self.listen },
            "connect": {
                "endpoints": self.connect,
                "exit_on_failure": exit_on_failure,
                "timeout_ms": timeout_ms,
            },
            "scouting": {
                "multicast": { "enabled": false },
                "gossip": { "enabled": true },
            },
            "transport": {
                "link": { "tx": { "lease": lease_ms, "keep_alive": 4 } },
            },
        });
        zenoh::Config::from_json5(&config.to_string())
            .map_err(|e| anyhow::anyhow!("invalid fabric configuration: {e}"))
    }

    /// Opens the session.
    pub async fn open(&self) -> Result<zenoh::Session> {
        let config = self.zenoh_config()?;
        zenoh::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "cannot join the fabric (listen {:?}, connect {:?})",
                    self.listen, self.connect
                )
            })
    }
}
