//! The manifest as written in TOML, and its validation into typed specs.
//!
//! The raw structs mirror the file and also serialise back to it, so a
//! manifest whose module references were rewritten prints as TOML again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_abi::{CAPABILITY_NAMES, Capability};
use weft_types::limits;

use crate::units::{parse_duration, parse_size};
use crate::*;

/// (entry, message): which manifest entry is wrong and why.
type Invalid = (String, String);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct App {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default, rename = "process", skip_serializing_if = "Vec::is_empty")]
    pub(crate) processes: Vec<Process>,
    #[serde(default, rename = "connection", skip_serializing_if = "Vec::is_empty")]
    connections: Vec<Connection>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Process {
    name: String,
    pub(crate) module: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) link: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel_per_tick: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message: Option<Size>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mailbox: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backoff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_deadline_miss: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dirs: Vec<String>,
    // Read by the cluster controller; a single node ignores them.
    #[serde(skip_serializing_if = "Option::is_none")]
    standby: Option<String>,
    #[serde(default, skip_serializing_if = "RawPlacement::is_empty")]
    placement: RawPlacement,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rt_class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    anti_affinity: Vec<String>,
}

impl RawPlacement {
    fn is_empty(&self) -> bool {
        self.labels.is_empty()
            && self.rt_class.is_none()
            && self.node.is_none()
            && self.anti_affinity.is_empty()
    }
}

/// A size written either as a string with a unit or as a bare integer.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Connection {
    from: String,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
}

fn field<T>(field: &str, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{field}: {e}"))
}

/// An optional duration field, parsed.
fn duration(key: &str, value: &Option<String>) -> Result<Option<Duration>, String> {
    value
        .as_deref()
        .map(|v| field(key, parse_duration(v)))
        .transpose()
}

/// A typed name, or the message that says why it is not one.
fn name<T: FromStr>(text: &str) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    text.parse().map_err(|e: T::Err| e.to_string())
}

impl App {
    pub(crate) fn validate(self, origin: String) -> Result<AppManifest, ManifestError> {
        self.typed()
            .map_err(|(entry, message)| ManifestError::Invalid {
                origin: origin.clone(),
                entry,
                message,
            })
            .map(|(name, processes, connections)| AppManifest {
                name,
                seed: self.seed.unwrap_or(defaults::SEED),
                processes,
                connections,
                raw: self,
                origin,
            })
    }

    #[allow(clippy::type_complexity)]
    fn typed(&self) -> Result<(AppName, Vec<ProcessSpec>, Vec<ConnectionSpec>), Invalid> {
        let app: AppName = name(&self.name).map_err(|m| ("name".to_string(), m))?;
        let mut processes = Vec::with_capacity(self.processes.len());
        let mut seen = BTreeSet::new();
        for (index, raw) in self.processes.iter().enumerate() {
            let entry = format!("process #{} ({:?})", index + 1, raw.name);
            if !seen.insert(raw.name.clone()) {
                return Err((entry, format!("duplicate process name {:?}", raw.name)));
            }
            processes.push(raw.validate().map_err(|m| (entry, m))?);
        }
        let by_name: HashMap<&str, &ProcessSpec> =
            processes.iter().map(|p| (p.name.as_str(), p)).collect();
        let connections = self
            .connections
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let entry = format!("connection #{} ({} -> {})", index + 1, raw.from, raw.to);
                raw.validate(&by_name).map_err(|m| (entry, m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((app, processes, connections))
    }
}

impl Process {
    fn validate(&self) -> Result<ProcessSpec, String> {
        let process_name: ProcessName = name(&self.name)?;
        let (class, period, fuel_per_tick) = self.timing()?;
        let capabilities = parse_capabilities(&self.capabilities)?;
        let (inputs, outputs) = check_ports(&self.inputs, &self.outputs)?;
        let (memory, max_message, mailbox) = self.limits()?;
        let module = field("module", module_ref(&self.module))?;
        let links = self.links()?;
        let restart = self.restart()?;
        let on_deadline_miss = self.on_deadline_miss()?;
        let wasi = capabilities.contains(&Capability::Wasi);
        if class == Class::Rt && wasi {
            return Err(
                "capabilities: \"wasi\" is only available to class \"be\" (WASI calls block)"
                    .into(),
            );
        }
        if !wasi {
            check_checkpoint(memory, mailbox, max_message)?;
        }
        Ok(ProcessSpec {
            name: process_name,
            module,
            links,
            class,
            period,
            offset: duration("offset", &self.offset)?.unwrap_or(Duration::ZERO),
            deadline: duration("deadline", &self.deadline)?,
            fuel_per_tick,
            memory,
            max_message: max_message as usize,
            mailbox: mailbox as usize,
            capabilities,
            inputs,
            outputs,
            restart,
            on_deadline_miss,
            args: self.args.clone(),
            env: self.env.clone(),
            dirs: self.dirs.iter().map(|d| parse_dir(d)).collect(),
            placement: self.placement.validate()?,
            standby: self
                .standby
                .as_deref()
                .map(|s| field("standby", name::<StandbyMode>(s)))
                .transpose()?,
        })
    }

    /// `class`, `period` and `fuel_per_tick`, which only make sense together:
    /// an rt process is released on its period and bounded by its fuel.
    fn timing(&self) -> Result<(Class, Option<Duration>, Option<u64>), String> {
        let class = match &self.class {
            None => Class::Be,
            Some(text) => field("class", name(text))?,
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
        Ok((class, period, fuel_per_tick))
    }

    /// `memory`, `max_message` and `mailbox`, each within what the fabric
    /// and the runtime carry (`weft_types::limits`).
    fn limits(&self) -> Result<(u64, u64, u64), String> {
        let memory = match &self.memory {
            Some(size) => field("memory", size.bytes())?,
            None => defaults::MEMORY,
        };
        if memory < 65536 {
            return Err("memory: must be at least one 64 KiB page".into());
        }
        at_most(
            "memory",
            memory,
            limits::MAX_MEMORY,
            "the largest memory a node gives a process",
        )?;
        let max_message = match &self.max_message {
            Some(size) => field("max_message", size.bytes())?,
            None => defaults::MAX_MESSAGE as u64,
        };
        at_most(
            "max_message",
            max_message,
            limits::MAX_MESSAGE,
            "the largest message the fabric carries",
        )?;
        let mailbox = self.mailbox.unwrap_or(defaults::MAILBOX).max(1) as u64;
        at_most(
            "mailbox",
            mailbox,
            limits::MAX_MAILBOX,
            "the deepest mailbox",
        )?;
        Ok((memory, max_message, mailbox))
    }

    /// `link`: the modules that satisfy imports other than the host's.
    fn links(&self) -> Result<Vec<(String, ModuleRef)>, String> {
        self.link
            .iter()
            .map(|(name, module)| {
                if name == weft_abi::IMPORT_MODULE || name == weft_abi::WASI_MODULE {
                    return Err(format!("link: {name:?} is reserved for host functions"));
                }
                Ok((
                    name.clone(),
                    field(&format!("link.{name}"), module_ref(module))?,
                ))
            })
            .collect()
    }

    fn restart(&self) -> Result<RestartPolicy, String> {
        match self.restart.as_deref() {
            None | Some("never") => Ok(RestartPolicy::Never),
            Some("on-failure") => Ok(RestartPolicy::OnFailure {
                max_restarts: self.max_restarts.unwrap_or(defaults::MAX_RESTARTS),
                backoff: duration("backoff", &self.backoff)?.unwrap_or(defaults::BACKOFF),
            }),
            Some(other) => Err(format!(
                "restart: unknown policy {other:?}; use \"never\" or \"on-failure\""
            )),
        }
    }

    fn on_deadline_miss(&self) -> Result<MissPolicy, String> {
        match self.on_deadline_miss.as_deref() {
            None | Some("hold") => Ok(MissPolicy::Hold),
            Some("skip") => Ok(MissPolicy::Skip),
            Some(other) => Err(format!(
                "on_deadline_miss: unknown policy {other:?}; use \"hold\" or \"skip\""
            )),
        }
    }

    /// Makes relative `dirs` relative to `base`.
    pub(crate) fn resolve_dirs(&mut self, base: &Path) {
        for text in &mut self.dirs {
            let dir = parse_dir(text);
            if dir.host.is_relative() {
                *text = format!("{}::{}", base.join(&dir.host).display(), dir.guest);
            }
        }
    }
}

impl RawPlacement {
    fn validate(&self) -> Result<Placement, String> {
        Ok(Placement {
            labels: self.labels.clone(),
            rt_class: self
                .rt_class
                .as_deref()
                .map(|c| field("placement.rt_class", name::<RtClass>(c)))
                .transpose()?,
            node: self
                .node
                .as_deref()
                .map(|n| field("placement.node", name::<NodeName>(n)))
                .transpose()?,
            anti_affinity: self
                .anti_affinity
                .iter()
                .map(|p| field("placement.anti_affinity", name::<ProcessName>(p)))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn at_most(key: &str, value: u64, limit: u64, what: &str) -> Result<(), String> {
    if value > limit {
        return Err(format!(
            "{key}: {value} bytes is more than {what} ({limit} bytes)"
        ));
    }
    Ok(())
}

/// A process's checkpoint must fit what the fabric and the stores carry:
/// it holds the memory and whatever is queued in the mailbox.
fn check_checkpoint(memory: u64, mailbox: u64, max_message: u64) -> Result<(), String> {
    if limits::checkpoint_bound(memory, mailbox, max_message).is_none() {
        return Err(format!(
            "memory + mailbox × max_message ({memory} + {mailbox} × {max_message} bytes) does not fit \
             in a checkpoint (at most {} bytes, {} of them kept for the rest of the state): \
             lower mailbox or max_message",
            limits::MAX_CHECKPOINT,
            limits::CHECKPOINT_OVERHEAD
        ));
    }
    Ok(())
}

fn module_ref(text: &str) -> Result<ModuleRef, String> {
    if text.is_empty() {
        return Err("is empty; write the path of a .wasm or .wat file".into());
    }
    text.parse()
        .map_err(|e: weft_types::DigestError| e.to_string())
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

/// Inputs and outputs as port names, one namespace for both.
fn check_ports(
    inputs: &[String],
    outputs: &[String],
) -> Result<(Vec<PortName>, Vec<PortName>), String> {
    let mut seen = BTreeSet::new();
    let mut typed = |ports: &[String]| -> Result<Vec<PortName>, String> {
        ports
            .iter()
            .map(|port| {
                let name: PortName = name(port)?;
                if !seen.insert(name.clone()) {
                    return Err(format!(
                        "port {port:?} is declared twice (inputs and outputs share one namespace)"
                    ));
                }
                Ok(name)
            })
            .collect()
    };
    Ok((typed(inputs)?, typed(outputs)?))
}

/// `HOST` or `HOST::GUEST`, like `wasmtime run --dir`. A relative host
/// path stays relative until the manifest's paths are resolved.
pub fn parse_dir(text: &str) -> DirGrant {
    let (host, guest) = match text.split_once("::") {
        Some((h, g)) => (h, g.to_string()),
        None => (text, text.to_string()),
    };
    DirGrant {
        host: host.into(),
        guest,
    }
}

impl Connection {
    fn validate(&self, processes: &HashMap<&str, &ProcessSpec>) -> Result<ConnectionSpec, String> {
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
    ports: impl Fn(&ProcessSpec) -> &Vec<PortName>,
    direction: &str,
) -> Result<PortRef, String> {
    let (process, port) = text
        .split_once('.')
        .ok_or_else(|| format!("{key}: {text:?} must be written \"process.port\""))?;
    let spec = processes
        .get(process)
        .ok_or_else(|| format!("{key}: unknown process {process:?}"))?;
    let Some(port) = ports(spec).iter().find(|p| *p == port) else {
        let declared: Vec<&str> = ports(spec).iter().map(PortName::as_str).collect();
        return Err(format!(
            "{key}: process {process:?} has no {direction} port {port:?} (its {direction}s: [{}])",
            declared.join(", ")
        ));
    };
    Ok(PortRef {
        process: spec.name.clone(),
        port: port.clone(),
    })
}
