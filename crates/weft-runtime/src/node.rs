//! A node: the engines, linkers and devices of one machine, and the apps it
//! runs. `Node::start` is the single entry point from a validated manifest
//! to running processes; everything that can be wrong with the manifest's
//! modules is found before the first process starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Linker;
use weft_manifest::{AppManifest, Class, ProcessSpec};

use crate::device::Devices;
use crate::engine::{EpochTicker, Metering, RuntimeConfig, WeftEngine};
use crate::host::{self, Host};
use crate::metrics::{ProcessMetrics, ProcessReport};
use crate::ports::{Inbox, Output, RemoteSink, Router};
use crate::process::{LogSink, ProcessEnv, Program, metering_for};
use crate::record::RecordSink;
use crate::rt::{self, RtClass};
use crate::sched::{self, Checkpointing, Standby, Stop, Supervisor};
use crate::snapshot::Snapshot;
use crate::tag::Tag;

/// Time between starting an app and its tag 0, so every process is
/// instantiated before its first release.
const START_LEAD: Duration = Duration::from_millis(50);

pub struct Node {
    rt: WeftEngine,
    be: WeftEngine,
    rt_linker: Linker<Host>,
    be_linker: Linker<Host>,
    devices: Devices,
    _epoch: EpochTicker,
}

impl Node {
    pub fn new(config: &RuntimeConfig) -> Result<Node> {
        Self::with_devices(config, Devices::simulated())
    }

    pub fn with_devices(config: &RuntimeConfig, devices: Devices) -> Result<Node> {
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
            rt_linker,
            be_linker,
            devices,
            _epoch: epoch,
        })
    }

    pub fn devices(&self) -> &Devices {
        &self.devices
    }

    /// Loads, checks and compiles the modules of one process.
    pub fn prepare(&self, spec: Arc<ProcessSpec>) -> Result<Program> {
        match metering_for(spec.class) {
            Metering::Fuel => Program::prepare(spec, &self.rt, &self.rt_linker),
            _ => Program::prepare(spec, &self.be, &self.be_linker),
        }
    }

    /// A process environment with a fresh inbox and this node's devices.
    pub fn env(&self, spec: &ProcessSpec, app_seed: u64) -> ProcessEnv {
        ProcessEnv {
            seed: process_seed(app_seed, &spec.name),
            inbox: Arc::new(Inbox::new(spec.mailbox)),
            devices: self.devices.clone(),
            log_sink: None,
            recorder: None,
        }
    }

    /// Starts every process of `app`. Be processes run on `runtime`.
    pub fn start(&self, app: &AppManifest, runtime: &tokio::runtime::Handle) -> Result<RunningApp> {
        self.start_with(app, runtime, StartOptions::default())
    }

    /// Starts the processes of `app` that `options` selects, wired to the
    /// fabric for the connections that leave this node.
    pub fn start_with(
        &self,
        app: &AppManifest,
        runtime: &tokio::runtime::Handle,
        mut options: StartOptions,
    ) -> Result<RunningApp> {
        let local = |name: &str| options.only.as_ref().is_none_or(|only| only.contains(name));
        let mut programs = Vec::new();
        for spec in app.processes.iter().filter(|s| local(&s.name)) {
            let program = self
                .prepare(Arc::new(spec.clone()))
                .with_context(|| format!("app {:?}", app.name))?;
            programs.push(Arc::new(program));
        }
        let envs: HashMap<&str, ProcessEnv> = programs
            .iter()
            .map(|program| {
                let spec = &program.spec;
                let mut env = self.env(spec, app.seed);
                env.log_sink = options.log_sink.clone();
                if let Some(sink) = &options.record {
                    let recorder = sink.process(&spec.name, program.module_digests());
                    env.inbox.record_to(recorder.clone());
                    env.recorder = Some(recorder);
                }
                (
                    app.process(&spec.name)
                        .expect("prepared from it")
                        .name
                        .as_str(),
                    env,
                )
            })
            .collect();
        let mut router = Router::default();
        for c in &app.connections {
            let sender = app.process(&c.from.process).expect("validated");
            let receiver = app.process(&c.to.process).expect("validated");
            let out_port = sender.port_handle(&c.from.port).expect("validated");
            if !local(&receiver.name) {
                if let (true, Some(sink)) = (local(&sender.name), &options.remote) {
                    router.export(&sender.name, out_port, &c.from.port, sink.clone());
                }
                continue;
            }
            router.connect(
                &sender.name,
                out_port,
                &receiver.name,
                envs[receiver.name.as_str()].inbox.clone(),
                receiver.port_handle(&c.to.port).expect("validated"),
                c.delay,
            );
        }
        let has_rt = app
            .processes
            .iter()
            .any(|p| p.class == Class::Rt && local(&p.name));
        if has_rt {
            rt::lock_memory();
        }
        let stop = Stop::default();
        let start_ns = options
            .start_ns
            .unwrap_or_else(|| rt::monotonic_ns() + START_LEAD.as_nanos() as u64);
        let mut processes = Vec::new();
        let mut snapshots = Vec::new();
        let mut threads = Vec::new();
        let mut tasks = Vec::new();
        let mut standbys = HashMap::new();
        for program in programs {
            let spec = program.spec.clone();
            let metrics = Arc::new(Mutex::new(ProcessMetrics::new(&spec.name, spec.class)));
            let mut sup = Supervisor::new(
                program,
                envs[spec.name.as_str()].clone(),
                router.clone(),
                metrics.clone(),
                stop.clone(),
                start_ns,
            );
            sup.restore = options.restore.remove(&spec.name);
            if options.standby.contains(&spec.name) {
                let standby = Arc::new(Standby::default());
                standbys.insert(spec.name.clone(), standby.clone());
                sup.standby = Some(standby);
            }
            sup.checkpointing = options.checkpointing.clone();
            snapshots.push((spec.name.clone(), sup.final_snapshot.clone()));
            match spec.class {
                Class::Rt => threads.push(
                    std::thread::Builder::new()
                        .name(format!("weft-rt-{}", spec.name))
                        .spawn(move || sched::run_rt(sup))
                        .context("cannot spawn rt thread")?,
                ),
                Class::Be => tasks.push(runtime.spawn(sched::run_be(sup))),
            }
            processes.push(metrics);
        }
        Ok(RunningApp {
            name: app.name.clone(),
            manifest: app.clone(),
            router,
            snapshots,
            rt_class: if has_rt {
                rt::node_rt_class()
            } else {
                RtClass::Soft
            },
            processes,
            standbys,
            stop,
            threads,
            tasks,
            devices: self.devices.clone(),
            started: Instant::now(),
        })
    }
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
    pub only: Option<BTreeSet<String>>,
    /// Snapshots to resume processes from, by name.
    pub restore: HashMap<String, Snapshot>,
    /// Where outputs with receivers on other nodes go.
    pub remote: Option<Arc<dyn RemoteSink>>,
    /// `CLOCK_MONOTONIC` time of tag 0; default: a moment from now.
    pub start_ns: Option<u64>,
    pub checkpointing: Option<Checkpointing>,
    pub log_sink: Option<LogSink>,
    /// Record what the processes see, for `weft replay`.
    pub record: Option<RecordSink>,
    /// Processes to run as hot standbys: computing, outputs held back.
    pub standby: BTreeSet<String>,
}

/// Delivers messages that processes on other nodes published to the
/// receivers of this node. Cheap to clone; outlives nothing it needs.
#[derive(Clone)]
pub struct RemoteInlet {
    manifest: Arc<AppManifest>,
    router: Router,
}

impl RemoteInlet {
    /// Delivers what `sender` published at `tag` (sequence `seq`) on its output `port`.
    pub fn deliver(
        &self,
        sender: &str,
        port: &str,
        tag: Tag,
        seq: u64,
        payload: Vec<u8>,
    ) -> Result<()> {
        let spec = self
            .manifest
            .process(sender)
            .with_context(|| format!("app {:?} has no process {sender:?}", self.manifest.name))?;
        let handle = spec
            .outputs
            .iter()
            .position(|p| p == port)
            .with_context(|| format!("process {sender:?} has no output {port:?}"))?;
        let output = Output {
            port: (spec.inputs.len() + handle) as i32,
            payload,
        };
        self.router.deliver_local(sender, tag, seq, &output);
        Ok(())
    }
}

/// An app running on a node.
pub struct RunningApp {
    name: String,
    manifest: AppManifest,
    router: Router,
    snapshots: Vec<(String, Arc<Mutex<Option<Snapshot>>>)>,
    rt_class: RtClass,
    processes: Vec<Arc<Mutex<ProcessMetrics>>>,
    /// The hot standbys among the processes, by name.
    standbys: HashMap<String, Arc<Standby>>,
    stop: Stop,
    threads: Vec<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    devices: Devices,
    started: Instant,
}

/// The state of an app: what `weft run --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    pub app: String,
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
            processes: self
                .processes
                .iter()
                .map(|m| m.lock().unwrap().report())
                .collect(),
            devices: self.devices.status(),
        }
    }

    /// Puts a hot standby live: it re-sends what it held and publishes from
    /// then on. False if `process` is not a standby here.
    pub fn promote(&self, process: &str) -> bool {
        match self.standbys.get(process) {
            Some(standby) => {
                standby.promote();
                true
            }
            None => false,
        }
    }

    /// The names of the processes running here.
    pub fn process_names(&self) -> Vec<String> {
        self.snapshots.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Where messages from processes on other nodes enter this app.
    pub fn inlet(&self) -> RemoteInlet {
        RemoteInlet {
            manifest: Arc::new(self.manifest.clone()),
            router: self.router.clone(),
        }
    }

    /// True when no process can run any more (all failed, parked or stopped).
    pub fn all_done(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished()) && self.tasks.iter().all(|t| t.is_finished())
    }

    /// Stops every process and returns the final report and the state of
    /// each process that stopped at a call boundary, for a handover.
    pub async fn stop_with_snapshots(self) -> (AppReport, HashMap<String, Snapshot>) {
        let slots = self.snapshots.clone();
        let report = self.stop().await;
        let snapshots = slots
            .into_iter()
            .filter_map(|(name, slot)| Some((name, slot.lock().unwrap().take()?)))
            .collect();
        (report, snapshots)
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
