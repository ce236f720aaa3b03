//! App manifests: the TOML a user writes to describe an app, parsed and
//! validated into typed specs the runtime (and later the controller) consume.
//!
//! Parsing happens in two steps. `serde` reads the TOML into raw structs that
//! mirror the file (unknown keys are rejected, so a typo is an error rather
//! than a silently ignored setting). Validation then turns each raw entry into
//! a typed spec, and every error names the entry it comes from
//! (`process "pid"`, `connection #2 (a.x -> b.y)`) so a user can find it.
//! Nothing is started until the whole manifest is valid.

mod raw;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::parse_dir;
pub use units::{parse_duration, parse_size};
use weft_abi::Capability;

/// A validated app manifest.
#[derive(Debug, Clone)]
pub struct AppManifest {
    pub name: String,
    /// Seed from which every process's PRNG seed is derived.
    pub seed: u64,
    pub processes: Vec<ProcessSpec>,
    pub connections: Vec<ConnectionSpec>,
}

/// Execution class of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Periodic, deterministic, on a dedicated real-time thread, fuel-metered.
    Rt,
    /// Best-effort, on the async worker pool, epoch-interrupted.
    Be,
}

/// What to do with the outputs of a tick that missed its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissPolicy {
    /// Drop the late tick's outputs and re-send the previous tick's outputs
    /// at the current tag, so consumers see a value at every tag.
    Hold,
    /// Drop the late tick's outputs.
    Skip,
}

/// When a faulted process is started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    /// Restart after `backoff · 2^(n-1)` (capped at 30 s); after
    /// `max_restarts` consecutive faults the process is parked.
    OnFailure {
        max_restarts: u32,
        backoff: Duration,
    },
}

/// One process of an app.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    /// The main module, resolved against the manifest's directory.
    pub module: PathBuf,
    /// Linked modules by import-module name, instantiated into the same store
    /// before the main module so its imports can resolve to their exports.
    pub links: Vec<(String, PathBuf)>,
    pub class: Class,
    /// Release period; `None` for a message-driven process.
    pub period: Option<Duration>,
    pub offset: Duration,
    /// Wall-clock budget of one tick or message.
    pub deadline: Option<Duration>,
    /// Fuel per tick or message (rt processes only).
    pub fuel_per_tick: Option<u64>,
    /// Maximum linear memory, bytes.
    pub memory: u64,
    pub max_message: usize,
    pub mailbox: usize,
    pub capabilities: BTreeSet<Capability>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub restart: RestartPolicy,
    pub on_deadline_miss: MissPolicy,
    /// WASI settings, used only with the `wasi` capability.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dirs: Vec<DirGrant>,
    /// Where the cluster controller may place this process.
    pub placement: Placement,
    /// `hot`: keep a standby replica on another node (cluster only).
    pub standby: Option<String>,
}

/// Placement constraints of a process (used by the cluster controller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The node must carry every one of these labels.
    pub labels: BTreeMap<String, String>,
    /// Require a node of this real-time class (`hard` or `soft`).
    pub rt_class: Option<String>,
    /// Pin to one node by name.
    pub node: Option<String>,
    /// Never on the same node as these processes of the app.
    pub anti_affinity: Vec<String>,
}

impl ProcessSpec {
    /// Devices the process needs from its node (its `device:<name>` grants).
    pub fn devices(&self) -> Vec<String> {
        self.capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Device(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// A host directory preopened for a WASI process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
}

/// `process.port` on either end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRef {
    pub process: String,
    pub port: String,
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.process, self.port)
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub from: PortRef,
    pub to: PortRef,
    /// Logical delay Δ: a message sent at tag t is visible at t + Δ.
    pub delay: Duration,
}

/// A manifest that cannot be used, with the entry it comes from.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {entry}: {message}")]
    Invalid {
        path: PathBuf,
        entry: String,
        message: String,
    },
}

/// Defaults applied where a manifest is silent.
pub mod defaults {
    use std::time::Duration;
    pub const MEMORY: u64 = 16 << 20;
    pub const MAX_MESSAGE: usize = 64 << 10;
    pub const MAILBOX: usize = 1024;
    pub const RT_FUEL_PER_TICK: u64 = 10_000_000;
    pub const MAX_RESTARTS: u32 = 5;
    pub const BACKOFF: Duration = Duration::from_millis(100);
    pub const SEED: u64 = 0x7765_6674; // "weft"
}

impl AppManifest {
    /// Reads and validates a manifest file. Module paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<AppManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, path, base)
    }

    /// Parses manifest text; `origin` is only used in error messages.
    pub fn parse(text: &str, origin: &Path, base: &Path) -> Result<AppManifest, ManifestError> {
        let raw: raw::App = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        raw.validate(base)
            .map_err(|(entry, message)| ManifestError::Invalid {
                path: origin.to_owned(),
                entry,
                message,
            })
    }

    pub fn process(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }
}

impl ProcessSpec {
    /// A best-effort process spec with defaults, for programmatic use
    /// (tests, benchmarks, `weft run MODULE.wasm`).
    pub fn new(name: impl Into<String>, module: impl Into<PathBuf>) -> ProcessSpec {
        ProcessSpec {
            name: name.into(),
            module: module.into(),
            links: Vec::new(),
            class: Class::Be,
            period: None,
            offset: Duration::ZERO,
            deadline: None,
            fuel_per_tick: None,
            memory: defaults::MEMORY,
            max_message: defaults::MAX_MESSAGE,
            mailbox: defaults::MAILBOX,
            capabilities: BTreeSet::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            restart: RestartPolicy::Never,
            on_deadline_miss: MissPolicy::Hold,
            args: Vec::new(),
            env: BTreeMap::new(),
            dirs: Vec::new(),
            placement: Placement::default(),
            standby: None,
        }
    }

    /// Port handle as seen by the guest: inputs first, then outputs.
    pub fn port_handle(&self, name: &str) -> Option<i32> {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .position(|p| p == name)
            .map(|i| i as i32)
    }

    /// The deadline in force: the declared one, else the period.
    pub fn effective_deadline(&self) -> Option<Duration> {
        self.deadline.or(self.period)
    }

    pub fn grants(&self, capability: &Capability) -> bool {
        match capability {
            Capability::Device(name) if name == "*" => self
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::Device(_))),
            other => self.capabilities.contains(other),
        }
    }
}
