//! The manifest as written in TOML, and its validation into typed specs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use weft_abi::{CAPABILITY_NAMES, Capability};

use crate::units::{parse_duration, parse_size};
use crate::*;

/// (entry, message): which manifest entry is wrong and why.
type Invalid = (String, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct App {
    name: String,
    seed: Option<u64>,
    #[serde(default, rename = "process")]
    processes: Vec<Process>,
    #[serde(default, rename = "connection")]
    connections: Vec<Connection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Process {
    name: String,
    module: PathBuf,
    #[serde(default)]
    link: BTreeMap<String, PathBuf>,
    class: Option<String>,
    period: Option<String>,
    offset: Option<String>,
    deadline: Option<String>,
    fuel_per_tick: Option<u64>,
    memory: Option<Size>,
    max_message: Option<Size>,
    mailbox: Option<usize>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    outputs: Vec<String>,
    restart: Option<String>,
    max_restarts: Option<u32>,
    backoff: Option<String>,
    on_deadline_miss: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dirs: Vec<String>,
    // Read by the cluster controller; a single node ignores them.
    standby: Option<String>,
    #[serde(default)]
    placement: RawPlacement,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    rt_class: Option<String>,
    node: Option<String>,
    #[serde(default)]
    anti_affinity: Vec<String>,
}

/// A size written either as a string with a unit or as a bare integer.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Connection {
    from: String,
    to: String,
    delay: Option<String>,
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn field<T>(field: &str, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{field}: {e}"))
}

impl App {
    pub(crate) fn validate(self, base: &Path) -> Result<AppManifest, Invalid> {
        if !is_identifier(&self.name) {
            return Err((
                "name".into(),
                format!(
                    "app name {:?} must be non-empty letters, digits, '-' or '_'",
                    self.name
                ),
            ));
        }
        let mut processes = Vec::with_capacity(self.processes.len());
        let mut seen = BTreeSet::new();
        for (index, raw) in self.processes.into_iter().enumerate() {
            let entry = format!("process #{} ({:?})", index + 1, raw.name);
            if !seen.insert(raw.name.clone()) {
                return Err((entry, format!("duplicate process name {:?}", raw.name)));
            }
            processes.push(raw.validate(base).map_err(|m| (entry, m))?);
        }
        let by_name: HashMap<&str, &ProcessSpec> =
            processes.iter().map(|p| (p.name.as_str(), p)).collect();
        let connections = self
            .connections
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                let entry = format!("connection #{} ({} -> {})", index + 1, raw.from, raw.to);
                raw.validate(&by_name).map_err(|m| (entry, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AppManifest {
            name: self.name,
            seed: self.seed.unwrap_or(defaults::SEED),
            processes,
            connections,
        })
    }
}

impl Process {
    fn validate(self, base: &Path) -> Result<ProcessSpec, String> {
        if !is_identifier(&self.name) {
            return Err("name must be non-empty letters, digits, '-' or '_'".into());
        }
        let class = match self.class.as_deref() {
            None | Some("be") => Class::Be,
            Some("rt") => Class::Rt,
            Some(other) => {
                return Err(format!(
                    "class: unknown class {other:?}; use \"rt\" or \"be\""
                ));
            }
        };
        let duration = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| field(name, parse_duration(v)))
                .transpose()
        };
        let period = duration("period", &self.period)?;
        if period == Some(Duration::ZERO) {
            return Err("period: must be greater than zero".into());
        }
        if class == Class::Rt && period.is_none() {
            return Err("class \"rt\" needs a period (e.g. period = \"10ms\")".into());
        }
        if class == Class::Be && self.fuel_per_tick.is_some() {
            return Err("fuel_per_tick applies to class \"rt\" only; be processes are bounded by their deadline".into());
        }
        let fuel_per_tick = match class {
            Class::Rt => Some(self.fuel_per_tick.unwrap_or(defaults::RT_FUEL_PER_TICK)),
            Class::Be => None,
        };
        if fuel_per_tick == Some(0) {
            return Err("fuel_per_tick: must be greater than zero".into());
        }
        let memory = match &self.memory {
            Some(size) => field("memory", size.bytes())?,
            None => defaults::MEMORY,
        };
        if memory < 65536 {
            return Err("memory: must be at least one 64 KiB page".into());
        }
        let max_message = match &self.max_message {
            Some(size) => field("max_message", size.bytes())? as usize,
            None => defaults::MAX_MESSAGE,
        };
        let capabilities = parse_capabilities(&self.capabilities)?;
        check_ports(&self.inputs, &self.outputs)?;
        let module = resolve_module(base, &self.module, "module")?;
        let links = self
            .link
            .iter()
            .map(|(name, path)| {
                if name == weft_abi::IMPORT_MODULE || name == weft_abi::WASI_MODULE {
                    return Err(format!("link: {name:?} is reserved for host functions"));
                }
                Ok((
                    name.clone(),
                    resolve_module(base, path, &format!("link.{name}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let restart = match self.restart.as_deref() {
            None | Some("never") => RestartPolicy::Never,
            Some("on-failure") => RestartPolicy::OnFailure {
                max_restarts: self.max_restarts.unwrap_or(defaults::MAX_RESTARTS),
                backoff: duration("backoff", &self.backoff)?.unwrap_or(defaults::BACKOFF),
            },
            Some(other) => {
                return Err(format!(
                    "restart: unknown policy {other:?}; use \"never\" or \"on-failure\""
                ));
            }
        };
        let on_deadline_miss = match self.on_deadline_miss.as_deref() {
            None | Some("hold") => MissPolicy::Hold,
            Some("skip") => MissPolicy::Skip,
            Some(other) => {
                return Err(format!(
                    "on_deadline_miss: unknown policy {other:?}; use \"hold\" or \"skip\""
                ));
            }
        };
        if class == Class::Rt && capabilities.contains(&Capability::Wasi) {
            return Err(
                "capabilities: \"wasi\" is only available to class \"be\" (WASI calls block)"
                    .into(),
            );
        }
        let dirs = self.dirs.iter().map(|d| parse_dir(base, d)).collect();
        if let Some(class) = self.placement.rt_class.as_deref()
            && class != "hard"
            && class != "soft"
        {
            return Err(format!(
                "placement.rt_class: unknown class {class:?}; use \"hard\" or \"soft\""
            ));
        }
        if let Some(mode) = self.standby.as_deref()
            && mode != "hot"
        {
            return Err(format!(
                "standby: unknown mode {mode:?}; the only mode is \"hot\""
            ));
        }
        let placement = Placement {
            labels: self.placement.labels,
            rt_class: self.placement.rt_class,
            node: self.placement.node,
            anti_affinity: self.placement.anti_affinity,
        };
        Ok(ProcessSpec {
            name: self.name,
            module,
            links,
            class,
            period,
            offset: duration("offset", &self.offset)?.unwrap_or(Duration::ZERO),
            deadline: duration("deadline", &self.deadline)?,
            fuel_per_tick,
            memory,
            max_message,
            mailbox: self.mailbox.unwrap_or(defaults::MAILBOX).max(1),
            capabilities,
            inputs: self.inputs,
            outputs: self.outputs,
            restart,
            on_deadline_miss,
            args: self.args,
            env: self.env,
            dirs,
            placement,
            standby: self.standby,
        })
    }
}

fn parse_capabilities(names: &[String]) -> Result<BTreeSet<Capability>, String> {
    names
        .iter()
        .map(|name| {
            Capability::parse(name).ok_or_else(|| {
                let known = ["log", "time", "random", "ports", "kv", "wasi"];
                let hint = known
                    .iter()
                    .find(|k| strsim::levenshtein(k, name) <= 2)
                    .map(|k| format!(" (did you mean {k:?}?)"))
                    .unwrap_or_default();
                format!(
                    "capabilities: unknown capability {name:?}{hint}; known: {}",
                    CAPABILITY_NAMES.join(", ")
                )
            })
        })
        .collect()
}

fn check_ports(inputs: &[String], outputs: &[String]) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for port in inputs.iter().chain(outputs) {
        if !is_identifier(port) {
            return Err(format!(
                "port name {port:?} must be letters, digits, '-' or '_'"
            ));
        }
        if !seen.insert(port) {
            return Err(format!(
                "port {port:?} is declared twice (inputs and outputs share one namespace)"
            ));
        }
    }
    Ok(())
}

fn resolve_module(base: &Path, path: &Path, key: &str) -> Result<PathBuf, String> {
    let resolved = if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    };
    if !resolved.is_file() {
        return Err(format!(
            "{key}: module file {} not found (paths are relative to the manifest's directory)",
            resolved.display()
        ));
    }
    Ok(resolved)
}

/// `HOST` or `HOST::GUEST`, like `wasmtime run --dir`.
pub fn parse_dir(base: &Path, text: &str) -> DirGrant {
    let (host, guest) = match text.split_once("::") {
        Some((h, g)) => (h, g.to_string()),
        None => (text, text.to_string()),
    };
    let host = Path::new(host);
    let host = if host.is_absolute() {
        host.to_owned()
    } else {
        base.join(host)
    };
    DirGrant { host, guest }
}

impl Connection {
    fn validate(self, processes: &HashMap<&str, &ProcessSpec>) -> Result<ConnectionSpec, String> {
        let from = endpoint("from", &self.from, processes, |p| &p.outputs, "output")?;
        let to = endpoint("to", &self.to, processes, |p| &p.inputs, "input")?;
        let sender = processes[from.process.as_str()];
        let delay = match &self.delay {
            Some(text) => field("delay", parse_duration(text))?,
            // Logical Execution Time: outputs become visible one period later.
            None => sender.period.unwrap_or(Duration::ZERO),
        };
        Ok(ConnectionSpec { from, to, delay })
    }
}

fn endpoint(
    key: &str,
    text: &str,
    processes: &HashMap<&str, &ProcessSpec>,
    ports: impl Fn(&ProcessSpec) -> &Vec<String>,
    direction: &str,
) -> Result<PortRef, String> {
    let (process, port) = text
        .split_once('.')
        .ok_or_else(|| format!("{key}: {text:?} must be written \"process.port\""))?;
    let spec = processes
        .get(process)
        .ok_or_else(|| format!("{key}: unknown process {process:?}"))?;
    if !ports(spec).iter().any(|p| p == port) {
        let declared = ports(spec).join(", ");
        return Err(format!(
            "{key}: process {process:?} has no {direction} port {port:?} (its {direction}s: [{declared}])"
        ));
    }
    Ok(PortRef {
        process: process.into(),
        port: port.into(),
    })
}
