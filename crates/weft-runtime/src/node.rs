//! A node: the engines, linkers and devices of one machine, and the apps it
//! runs. [`Node::start_with`] is the single entry point from a validated
//! manifest to running processes; everything that can be wrong with the
//! manifest's modules is found before the first process starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Linker;
use weft_manifest::module::Files;
use weft_manifest::{AppManifest, Class, ModuleSource, ProcessSpec};
use weft_types::{AppName, PortHandle, ProcessName, RtClass, Tag};

use crate::device::Devices;
use crate::engine::{EpochTicker, Metering, RuntimeConfig, WeftEngine};
use crate::host::{self, Host};
use crate::inbox::Inbox;
use crate::metrics::{MetricsHandle, MetricsWriter, ProcessReport};
use crate::process::ProcessEnv;
use crate::program::{Program, metering_for};
use crate::record::RecordSink;
use crate::router::{RemoteSink, Router};
use crate::rt;
use crate::sched::{self, Checkpointing, Stop, Supervisor, Switch, supervisor};
use crate::snapshot::Snapshot;
use crate::types::{LogSink, ProcessId, Roster};

/// Time between starting an app and its tag 0, so every process is
/// instantiated before its first release.
const START_LEAD: Duration = Duration::from_millis(50);

pub struct Node {
    rt: WeftEngine,
    be: WeftEngine,
    /// The host functions, resolved once and shared by every program.
    rt_linker: Arc<Linker<Host>>,
    be_linker: Arc<Linker<Host>>,
    devices: Devices,
    _epoch: EpochTicker,
}

impl Node {
    pub fn new(config: &RuntimeConfig) -> Result<Node> {
        Self::with_devices(config, Devices::simulated())
    }

    pub fn with_devices(config: &RuntimeConfig, devices: Devices) -> Result<Node> {
        crate::engine::check_mappings_here(config, 1)?;
        let rt = WeftEngine::new(config, Metering::Fuel)?;
        let be = WeftEngine::new(config, Metering::Epoch)?;
        let mut rt_linker = Linker::new(&rt.engine);
        host::add_to_linker(&mut rt_linker).map_err(anyhow::Error::from)?;
        let mut be_linker = Linker::new(&be.engine);
        host::add_to_linker(&mut be_linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi::p1::add_to_linker_async(&mut be_linker, |h: &mut Host| {
            h.wasi
                .as_mut()
                .expect("only processes granted `wasi` can import WASI")
        })
        .map_err(anyhow::Error::from)?;
        let epoch = EpochTicker::start(be.engine.clone());
        Ok(Node {
            rt,
            be,
            rt_linker: Arc::new(rt_linker),
            be_linker: Arc::new(be_linker),
            devices,
            _epoch: epoch,
        })
    }

    /// Loads the modules of one process from `source`, checks and compiles
    /// them.
    pub fn prepare(&self, spec: Arc<ProcessSpec>, source: &dyn ModuleSource) -> Result<Program> {
        match metering_for(spec.class) {
            Metering::Fuel => Program::prepare(spec, source, &self.rt, &self.rt_linker),
            _ => Program::prepare(spec, source, &self.be, &self.be_linker),
        }
    }

    /// The environment of a process that runs alone (tests, benchmarks,
    /// `weft run MODULE.wasm`): a fresh inbox and this node's devices.
    pub fn env(&self, spec: &ProcessSpec, app_seed: u64) -> ProcessEnv {
        let roster = Roster::new([spec.name.clone()]);
        self.app_env(&roster, ProcessId(0), spec, app_seed)
    }

    fn app_env(&self, roster: &Roster, id: ProcessId, spec: &ProcessSpec, seed: u64) -> ProcessEnv {
        ProcessEnv {
            id,
            seed: process_seed(seed, spec.name.as_str()),
            inbox: Arc::new(Inbox::new(spec.mailbox, roster.clone())),
            devices: self.devices.clone(),
            log_sink: None,
            recorder: None,
        }
    }

    /// Starts every process of `app`, its modules read from files. Be
    /// processes run on `runtime`.
    pub fn start(&self, app: &AppManifest, runtime: &tokio::runtime::Handle) -> Result<RunningApp> {
        self.start_with(app, &Files, runtime, StartOptions::default())
    }

    /// Starts the processes of `app` that `options` selects, their modules
    /// read from `modules`, wired to the fabric for the connections that
    /// leave this node.
    pub fn start_with(
        &self,
        app: &AppManifest,
        modules: &dyn ModuleSource,
        runtime: &tokio::runtime::Handle,
        mut options: StartOptions,
    ) -> Result<RunningApp> {
        let roster = Roster::new(app.processes.iter().map(|p| p.name.clone()));
        let start_ns = options
            .start_ns
            .unwrap_or_else(|| rt::monotonic_ns() + START_LEAD.as_nanos() as u64);
        let mut programs = self.prepare_local(app, modules, &roster, &options)?;
        for (_, env) in &mut programs {
            env.devices = env.devices.for_app(start_ns);
        }
        let envs: HashMap<&ProcessName, &ProcessEnv> = programs
            .iter()
            .map(|(p, env)| (&p.spec.name, env))
            .collect();
        let router = Arc::new(wire(app, &roster, &envs, options.remote.as_deref()));
        let has_rt = programs.iter().any(|(p, _)| p.spec.class == Class::Rt);
        if has_rt {
            rt::lock_memory();
        }
        let mut running = RunningApp {
            name: app.name.clone(),
            manifest: Arc::new(app.clone()),
            router,
            snapshots: Vec::new(),
            rt_class: if has_rt {
                rt::node_rt_class()
            } else {
                RtClass::Soft
            },
            processes: Vec::new(),
            switches: HashMap::new(),
            stop: Stop::default(),
            threads: Vec::new(),
            tasks: Vec::new(),
            devices: self.devices.clone(),
            started: Instant::now(),
        };
        for (program, env) in programs {
            spawn_process(&mut running, program, env, start_ns, &mut options, runtime)?;
        }
        Ok(running)
    }

    /// Compiles the processes of `app` that run here, each with its
    /// environment. All of them are prepared before any starts, so a bad
    /// module stops the app before it runs.
    fn prepare_local(
        &self,
        app: &AppManifest,
        modules: &dyn ModuleSource,
        roster: &Roster,
        options: &StartOptions,
    ) -> Result<Vec<(Arc<Program>, ProcessEnv)>> {
        let local =
            |name: &ProcessName| options.only.as_ref().is_none_or(|only| only.contains(name));
        let mut programs = Vec::new();
        for (i, spec) in app
            .processes
            .iter()
            .enumerate()
            .filter(|(_, s)| local(&s.name))
        {
            let program = self
                .prepare(Arc::new(spec.clone()), modules)
                .with_context(|| format!("app {:?}", app.name.as_str()))?;
            let mut env = self.app_env(roster, ProcessId(i as u32), spec, app.seed);
            env.log_sink = options.log_sink.clone();
            if let Some(sink) = &options.record {
                let recorder = sink.process(spec.name.as_str(), program.module_digests());
                env.inbox.observe(recorder.inbox_observer(roster.clone()));
                env.recorder = Some(recorder);
            }
            programs.push((Arc::new(program), env));
        }
        Ok(programs)
    }
}

/// Starts one process of `running` under its supervisor: an rt process on
/// a thread of its own, a be process as a task on `runtime`.
fn spawn_process(
    running: &mut RunningApp,
    program: Arc<Program>,
    env: ProcessEnv,
    start_ns: u64,
    options: &mut StartOptions,
    runtime: &tokio::runtime::Handle,
) -> Result<()> {
    let spec = program.spec.clone();
    let replica = options.standby.contains(&spec.name);
    let switch = match (replica, options.supervised) {
        (true, _) => Some(Arc::new(Switch::replica())),
        (false, true) if options.held.contains(&spec.name) => Some(Arc::new(Switch::stalled())),
        (false, true) => Some(Arc::new(Switch::live())),
        (false, false) => None,
    };
    if let Some(switch) = &switch {
        running.switches.insert(spec.name.clone(), switch.clone());
    }
    let (metrics, handle) = MetricsWriter::new(spec.name.clone(), spec.class);
    let sup = Supervisor::new(supervisor::Parts {
        program,
        env,
        router: running.router.clone(),
        stop: running.stop.clone(),
        start_ns,
        restore: options.restore.remove(&spec.name),
        checkpointing: options.checkpointing.clone(),
        switch,
        metrics,
    });
    running
        .snapshots
        .push((spec.name.clone(), sup.final_snapshot.clone()));
    running.processes.push(handle);
    match spec.class {
        Class::Rt => running.threads.push(
            std::thread::Builder::new()
                .name(format!("weft-rt-{}", spec.name))
                .spawn(move || sched::run_rt(sup))
                .context("cannot spawn rt thread")?,
        ),
        Class::Be => running.tasks.push(runtime.spawn(sched::run_be(sup))),
    }
    Ok(())
}

/// The routes of `app`'s connections that start or end on this node:
/// into local inboxes, and to the fabric for receivers elsewhere.
pub(crate) fn wire(
    app: &AppManifest,
    roster: &Roster,
    envs: &HashMap<&ProcessName, &ProcessEnv>,
    remote: Option<&dyn RemoteSink>,
) -> Router {
    let mut router = Router::default();
    for c in &app.connections {
        let sender = app.process(c.from.process.as_str()).expect("validated");
        let receiver = app.process(c.to.process.as_str()).expect("validated");
        let out = sender
            .output_handle(c.from.port.as_str())
            .expect("validated");
        let id = roster.id(sender.name.as_str()).expect("in the roster");
        match envs.get(&receiver.name) {
            Some(env) => router.connect(
                id,
                out,
                env.inbox.clone(),
                receiver.port_handle(c.to.port.as_str()).expect("validated"),
                c.delay,
            ),
            None => {
                if let (true, Some(sink)) = (envs.contains_key(&sender.name), remote) {
                    router.export(id, out, sink.port(&sender.name, &c.from.port));
                }
            }
        }
    }
    router
}

/// Each process's PRNG seed: derived from the app seed and the process
/// name with SHA-256, so it is stable across machines and Rust versions.
pub fn process_seed(app_seed: u64, name: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(app_seed.to_le_bytes())
        .chain_update(name.as_bytes())
        .finalize();
    u64::from_le_bytes(digest[..8].try_into().unwrap())
}

/// How to start (part of) an app; the default starts all of it, alone.
#[derive(Default)]
pub struct StartOptions {
    /// Start only these processes (the rest of the app runs elsewhere).
    pub only: Option<BTreeSet<ProcessName>>,
    /// Snapshots to resume processes from, by name.
    pub restore: HashMap<ProcessName, Snapshot>,
    /// Where outputs with receivers on other nodes go.
    pub remote: Option<Arc<dyn RemoteSink>>,
    /// `CLOCK_MONOTONIC` time of tag 0; default: a moment from now.
    pub start_ns: Option<u64>,
    pub checkpointing: Option<Checkpointing>,
    pub log_sink: Option<LogSink>,
    /// Record what the processes see, for `weft replay`.
    pub record: Option<RecordSink>,
    /// Processes to run as hot standbys: computing, outputs held back.
    pub standby: BTreeSet<ProcessName>,
    /// Processes that start held as after a stall, until
    /// [`RunningApp::promote`] (supervised runs only).
    pub held: BTreeSet<ProcessName>,
    /// The processes run under a controller: one that skips ahead after a
    /// stall holds its outputs until [`RunningApp::promote`] confirms it.
    pub supervised: bool,
}

/// One output port of a sender on another node, resolved for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InletPort {
    sender: ProcessId,
    port: PortHandle,
}

impl InletPort {
    /// `sender`'s output `port` in `app` (process ids follow the manifest).
    pub fn resolve(app: &AppManifest, sender: &str, port: &str) -> Result<InletPort> {
        let index = app
            .processes
            .iter()
            .position(|p| p.name == sender)
            .with_context(|| format!("app {:?} has no process {sender:?}", app.name.as_str()))?;
        let port = app.processes[index]
            .output_handle(port)
            .with_context(|| format!("process {sender:?} has no output {port:?}"))?;
        Ok(InletPort {
            sender: ProcessId(index as u32),
            port,
        })
    }
}

/// Delivers messages that processes on other nodes published to the
/// receivers of this node. Cheap to clone; outlives nothing it needs.
#[derive(Clone)]
pub struct RemoteInlet {
    manifest: Arc<AppManifest>,
    router: Arc<Router>,
}

impl RemoteInlet {
    /// Resolves `sender`'s output `port` once, for [`RemoteInlet::deliver_to`].
    pub fn resolve(&self, sender: &str, port: &str) -> Result<InletPort> {
        InletPort::resolve(&self.manifest, sender, port)
    }

    /// Delivers what the resolved sender published at `tag` (sequence `seq`).
    pub fn deliver_to(&self, from: InletPort, tag: Tag, seq: u64, payload: Bytes) {
        self.router
            .deliver_local(from.sender, from.port, tag, seq, &payload);
    }

    /// Delivers what `sender` published at `tag` on its output `port`.
    pub fn deliver(
        &self,
        sender: &str,
        port: &str,
        tag: Tag,
        seq: u64,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        let from = self.resolve(sender, port)?;
        self.deliver_to(from, tag, seq, payload.into());
        Ok(())
    }
}

/// An app running on a node.
pub struct RunningApp {
    name: AppName,
    manifest: Arc<AppManifest>,
    router: Arc<Router>,
    snapshots: Vec<(ProcessName, Arc<Mutex<Option<Snapshot>>>)>,
    rt_class: RtClass,
    processes: Vec<MetricsHandle>,
    /// The output switches of the processes, by name (supervised runs).
    switches: HashMap<ProcessName, Arc<Switch>>,
    stop: Stop,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    devices: Devices,
    started: Instant,
}

/// An app stopped for a handover: see [`RunningApp::stop_with_snapshots`].
pub struct Stopped {
    pub report: AppReport,
    pub snapshots: HashMap<ProcessName, Snapshot>,
    /// Processes that were holding their outputs after a stall: their
    /// state skipped ahead of the process's and is no longer its own.
    pub held: BTreeSet<ProcessName>,
}

/// The state of an app: what `weft run --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub app: AppName,
    pub rt_class: RtClass,
    pub uptime_s: f64,
    pub processes: Vec<ProcessReport>,
    pub devices: serde_json::Value,
}

impl RunningApp {
    pub fn report(&self) -> AppReport {
        AppReport {
            app: self.name.clone(),
            rt_class: self.rt_class,
            uptime_s: self.started.elapsed().as_secs_f64(),
            processes: self.processes.iter().map(MetricsHandle::report).collect(),
            devices: self.devices.status(),
        }
    }

    /// The metrics of every process, to read from any thread.
    pub fn manifest(&self) -> &Arc<AppManifest> {
        &self.manifest
    }

    pub fn metrics(&self) -> &[MetricsHandle] {
        &self.processes
    }

    /// Every process's [`MetricsHandle::brief`] report.
    pub fn brief_reports(&self) -> Vec<ProcessReport> {
        self.processes.iter().map(MetricsHandle::brief).collect()
    }

    /// Puts a held process live (a standby taking over, or a process held
    /// after a stall that still runs here): it re-sends what it held and
    /// publishes from then on. False if `process` has no switch here.
    pub fn promote(&self, process: &str) -> bool {
        match self.switches.get(process) {
            Some(switch) => {
                switch.promote();
                true
            }
            None => false,
        }
    }

    /// The processes holding their outputs after a stall, waiting for
    /// [`RunningApp::promote`].
    pub fn stalled(&self) -> BTreeSet<ProcessName> {
        self.switches
            .iter()
            .filter(|(_, s)| s.is_stalled())
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Where messages from processes on other nodes enter this app.
    pub fn inlet(&self) -> RemoteInlet {
        RemoteInlet {
            manifest: self.manifest.clone(),
            router: self.router.clone(),
        }
    }

    /// True when no process can run any more (all failed, parked or stopped).
    pub fn all_done(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished()) && self.tasks.iter().all(|t| t.is_finished())
    }

    /// Stops every process and returns what a handover needs: the state
    /// of each process that stopped at a call boundary, and which were
    /// holding their outputs after a stall when they stopped.
    pub async fn stop_with_snapshots(self) -> Stopped {
        let slots = self.snapshots.clone();
        let switches = self.switches.clone();
        let report = self.stop().await;
        let snapshots = slots
            .into_iter()
            .filter_map(|(name, slot)| Some((name, slot.lock().unwrap().take()?)))
            .collect();
        // Read after every thread has ended, so a stall noticed on the way
        // out counts too.
        let held = switches
            .into_iter()
            .filter(|(_, s)| s.is_stalled())
            .map(|(p, _)| p)
            .collect();
        Stopped {
            report,
            snapshots,
            held,
        }
    }

    /// Stops every process at its next boundary and returns the final report.
    pub async fn stop(mut self) -> AppReport {
        self.stop.trigger();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.report()
    }
}
