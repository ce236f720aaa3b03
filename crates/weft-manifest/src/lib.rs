//! App manifests: the TOML a user writes to describe an app, parsed and
//! validated into typed specs that the runtime, the controller and the
//! nodes consume.
//!
//! Parsing happens in two steps. `serde` reads the TOML into raw structs that
//! mirror the file (unknown keys are rejected, so a typo is an error rather
//! than a silently ignored setting). Validation then turns each raw entry into
//! a typed spec, and every error names the entry it comes from
//! (`process "pid"`, `connection #2 (a.x -> b.y)`) so a user can find it.
//! Parsing needs no files: module references stay references
//! ([`ModuleRef`]) until something reads them through a [`ModuleSource`].
//!
//! A manifest keeps its raw form, so it can be rewritten (module paths into
//! digests, see [`AppManifest::rewrite_modules`]) and printed back as TOML
//! ([`AppManifest::to_toml`]); that is how `weft deploy` hands an app to the
//! cluster. Every hop validates a manifest once, when it parses it.

pub mod module;
mod raw;
mod units;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use module::{ModuleError, ModuleRef, ModuleSource};
pub use raw::parse_dir;
pub use units::{parse_duration, parse_size};
use weft_abi::{Capability, Needs};
pub use weft_types::Class;
use weft_types::{AppName, NodeName, PortHandle, PortName, ProcessName, RtClass, StandbyMode};

/// A validated app manifest.
#[derive(Debug, Clone)]
pub struct AppManifest {
    pub name: AppName,
    /// Seed from which every process's PRNG seed is derived.
    pub seed: u64,
    pub processes: Vec<ProcessSpec>,
    pub connections: Vec<ConnectionSpec>,
    /// The file as parsed, with module references as they are now.
    raw: raw::App,
    /// Where the text came from, for error messages.
    origin: String,
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
    pub name: ProcessName,
    /// The main module.
    pub module: ModuleRef,
    /// Linked modules by import-module name, instantiated into the same store
    /// before the main module so its imports can resolve to their exports.
    pub links: Vec<(String, ModuleRef)>,
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
    pub inputs: Vec<PortName>,
    pub outputs: Vec<PortName>,
    pub restart: RestartPolicy,
    pub on_deadline_miss: MissPolicy,
    /// WASI settings, used only with the `wasi` capability.
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub dirs: Vec<DirGrant>,
    /// Where the cluster controller may place this process.
    pub placement: Placement,
    /// Keep a standby replica on another node (cluster only).
    pub standby: Option<StandbyMode>,
}

/// Placement constraints of a process (used by the cluster controller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// The node must carry every one of these labels.
    pub labels: BTreeMap<String, String>,
    /// Require a node of this real-time class.
    pub rt_class: Option<RtClass>,
    /// Pin to one node by name.
    pub node: Option<NodeName>,
    /// Never on the same node as these processes of the app.
    pub anti_affinity: Vec<ProcessName>,
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
    pub process: ProcessName,
    pub port: PortName,
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
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {entry}: {message}")]
    Invalid {
        origin: String,
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
    /// Reads and validates a manifest file, resolves its module and
    /// directory paths against the file's directory, and checks that every
    /// module file is there.
    pub fn load(path: &Path) -> Result<AppManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut manifest = Self::parse(&text, path.display().to_string())?;
        manifest.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        manifest.check_module_files()?;
        Ok(manifest)
    }

    /// Parses and validates manifest text; `origin` names it in errors.
    /// Reads no files.
    pub fn parse(text: &str, origin: impl Into<String>) -> Result<AppManifest, ManifestError> {
        let origin = origin.into();
        let raw: raw::App = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        raw.validate(origin)
    }

    /// The manifest as TOML, with module references as they are now.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.raw).expect("a parsed manifest serialises")
    }

    /// Makes relative module and directory paths relative to `base` (the
    /// manifest's directory) instead of the working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.rewrite(|_, module| match module {
            ModuleRef::Path(path) if path.is_relative() => ModuleRef::Path(base.join(path)),
            other => other.clone(),
        });
        for (spec, raw) in self.processes.iter_mut().zip(&mut self.raw.processes) {
            for dir in &mut spec.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
            raw.resolve_dirs(base);
        }
    }

    /// Every module reference, with the entry naming it
    /// (`process "pid": module`, `process "pid": link.lib`).
    pub fn module_refs(&self) -> Vec<(String, ModuleRef)> {
        let mut out = Vec::new();
        for spec in &self.processes {
            out.push((
                format!("process \"{}\": module", spec.name),
                spec.module.clone(),
            ));
            for (name, module) in &spec.links {
                out.push((
                    format!("process \"{}\": link.{name}", spec.name),
                    module.clone(),
                ));
            }
        }
        out
    }

    /// Replaces every module reference by what `f` returns for it (called
    /// with the entry naming it), in the specs and in the TOML alike.
    pub fn rewrite_modules<E>(
        &mut self,
        mut f: impl FnMut(&str, &ModuleRef) -> Result<ModuleRef, E>,
    ) -> Result<(), E> {
        let mut failure = None;
        self.rewrite(|entry, module| match f(entry, module) {
            Ok(new) => new,
            Err(e) => {
                failure.get_or_insert(e);
                module.clone()
            }
        });
        failure.map_or(Ok(()), Err)
    }

    fn rewrite(&mut self, mut f: impl FnMut(&str, &ModuleRef) -> ModuleRef) {
        for (spec, raw) in self.processes.iter_mut().zip(&mut self.raw.processes) {
            let entry = format!("process \"{}\": module", spec.name);
            spec.module = f(&entry, &spec.module);
            raw.module = spec.module.to_string();
            for (name, module) in &mut spec.links {
                let entry = format!("process \"{}\": link.{name}", spec.name);
                *module = f(&entry, module);
                raw.link.insert(name.clone(), module.to_string());
            }
        }
    }

    /// Refuses a manifest whose module files are missing, naming the entry.
    fn check_module_files(&self) -> Result<(), ManifestError> {
        for (index, spec) in self.processes.iter().enumerate() {
            let modules = std::iter::once(("module".to_string(), &spec.module))
                .chain(spec.links.iter().map(|(n, m)| (format!("link.{n}"), m)));
            for (key, module) in modules {
                if let ModuleRef::Path(path) = module
                    && !path.is_file()
                {
                    return Err(ManifestError::Invalid {
                        origin: self.origin.clone(),
                        entry: format!("process #{} (\"{}\")", index + 1, spec.name),
                        message: format!(
                            "{key}: module file {} not found (paths are relative to the manifest's directory)",
                            path.display()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn process(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// Where the manifest came from (a file name, or what the caller said).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl ProcessSpec {
    /// A best-effort process spec with defaults, for programmatic use
    /// (tests, benchmarks, `weft run MODULE.wasm`). Panics on an invalid
    /// name: callers pass literals.
    pub fn new(name: &str, module: impl Into<PathBuf>) -> ProcessSpec {
        ProcessSpec {
            name: name.parse().expect("a valid process name"),
            module: ModuleRef::Path(module.into()),
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
    pub fn port_handle(&self, name: &str) -> Option<PortHandle> {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .position(|p| p == name)
            .map(|i| PortHandle(i as i32))
    }

    /// The handle of output port `name`.
    pub fn output_handle(&self, name: &str) -> Option<PortHandle> {
        let index = self.outputs.iter().position(|p| p == name)?;
        Some(PortHandle((self.inputs.len() + index) as i32))
    }

    /// The deadline in force: the declared one, else the period.
    pub fn effective_deadline(&self) -> Option<Duration> {
        self.deadline.or(self.period)
    }

    pub fn grants(&self, capability: &Capability) -> bool {
        self.capabilities.contains(capability)
    }

    /// Whether importing something that needs `needs` is allowed.
    pub fn satisfies(&self, needs: &Needs) -> bool {
        match needs {
            Needs::Capability(c) => self.grants(c),
            Needs::AnyDevice => self
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::Device(_))),
        }
    }

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

    /// Whether the process can be snapshotted (and so restored, moved live
    /// and kept in step by a hot standby): everything but WASI commands.
    pub fn snapshottable(&self) -> bool {
        !self.grants(&Capability::Wasi)
    }
}
