//! Replay: running a [`Recording`] again, offline, as fast as the CPU
//! allows, and reporting each process's output hash chain.
//!
//! The replay does not simulate time. It runs every recorded call in tag
//! order on one thread: each incarnation's releases from its recorded first
//! tag, message-driven calls in the order the live run took them. Messages
//! between the app's processes are produced again by the processes
//! themselves; what the recording supplies is what came from outside or
//! from timing: device samples, deadline misses (the miss policy is applied
//! again), faults, late and refused messages, restarts and the snapshots
//! they resumed from.
//!
//! If a call does something the live run did not (reads a device at
//! another tag, faults where the live run did not, waits for a message no
//! process produces), the replay stops with an error that says where. A
//! replay that completes and whose chains equal the live ones is the proof
//! that the run was deterministic.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use weft_abi::Capability;
use weft_manifest::{AppManifest, ProcessSpec};

use crate::device::{Device, Devices};
use crate::node::{Node, process_seed};
use crate::ports::{Inbox, Message, MessageKey, RemoteSink, Router};
use crate::process::{CallReport, Fault, FaultKind, HashChain, Process, ProcessEnv, Program};
use crate::record::{Event, Recording};
use crate::sched::apply_miss_policy;
use crate::snapshot::Snapshot;
use crate::tag::Tag;

/// What `weft replay` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub app: String,
    pub processes: Vec<ReplayedProcess>,
    /// True when every replayed chain equals the chain the live run recorded.
    pub matches_live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayedProcess {
    pub name: String,
    /// Calls replayed (ticks and messages).
    pub calls: u64,
    pub last_tag_ns: Option<u64>,
    /// The replay's output hash chain (hex).
    pub chain: String,
    /// The chain the live run ended with (hex).
    pub live_chain: String,
}

/// Replays `recording` of `app` (parsed from the recording's manifest).
/// Modules are loaded from the manifest's paths and must be the ones the
/// live run used.
pub async fn replay(node: &Node, recording: &Recording, app: &AppManifest) -> Result<ReplayReport> {
    let outbox = Arc::new(Collected::default());
    let mut router = Router::default();
    let mut routes: HashMap<(String, String), Vec<RouteTo>> = HashMap::new();
    for c in &app.connections {
        let sender = app.process(&c.from.process).expect("validated");
        let handle = sender.port_handle(&c.from.port).expect("validated");
        router.export(&sender.name, handle, &c.from.port, outbox.clone());
        let receiver = app.process(&c.to.process).expect("validated");
        routes
            .entry((sender.name.clone(), c.from.port.clone()))
            .or_default()
            .push(RouteTo {
                receiver: receiver.name.clone(),
                port: receiver.port_handle(&c.to.port).expect("validated"),
                delay: c.delay,
            });
    }
    let mut procs = Vec::new();
    for spec in &app.processes {
        let Some(events) = recording.events.get(&spec.name) else {
            continue;
        };
        procs.push(Replayed::new(node, app, spec, recording, events)?);
    }
    let mut replay = Replay {
        procs,
        router,
        routes,
        outbox,
        held: Vec::new(),
    };
    replay.run().await?;
    let processes: Vec<ReplayedProcess> = replay.procs.iter().map(Replayed::report).collect();
    Ok(ReplayReport {
        app: app.name.clone(),
        matches_live: processes.iter().all(|p| p.chain == p.live_chain),
        processes,
    })
}

/// One destination of an output port.
struct RouteTo {
    receiver: String,
    port: i32,
    delay: std::time::Duration,
}

/// One output as a sender published it: (sender, port, tag, seq, payload).
type Published = (String, String, Tag, u64, Vec<u8>);

/// Outputs published by the call just replayed, before routing.
#[derive(Default)]
struct Collected(Mutex<Vec<Published>>);

impl RemoteSink for Collected {
    fn publish(&self, sender: &str, port: &str, tag: Tag, seq: u64, payload: &[u8]) {
        self.0.lock().unwrap().push((
            sender.to_string(),
            port.to_string(),
            tag,
            seq,
            payload.to_vec(),
        ));
    }
}

/// What a process does next, from its recording.
enum Step {
    Start {
        tag: Tag,
        snapshot: Option<Vec<u8>>,
    },
    /// Releases `next`, `next + period`, … up to `last`; the call at `last`
    /// faulted when `fault` is set.
    Ticks {
        next: Tag,
        last: Tag,
        fault: Option<FaultKind>,
    },
    /// One message-driven call.
    Handle {
        key: MessageKey,
        fault: Option<FaultKind>,
    },
}

/// A process being replayed.
struct Replayed {
    program: Arc<Program>,
    env: ProcessEnv,
    process: Option<Process>,
    steps: VecDeque<Step>,
    misses: BTreeSet<Tag>,
    /// Late arrivals: (source, visible tag, seq) -> the tag the receiver
    /// had completed when they arrived. (A fresh incarnation of a sender
    /// numbers from 1 again, so the tag is part of a message's identity.)
    tardy: HashMap<(String, Tag, u64), Tag>,
    /// Arrivals the live mailbox refused: (source, visible tag, seq).
    dropped: BTreeSet<(String, Tag, u64)>,
    completed: Option<Tag>,
    calls: u64,
    live_chain: HashChain,
    chain: HashChain,
    divergence: Arc<Mutex<Option<String>>>,
}

impl Replayed {
    fn new(
        node: &Node,
        app: &AppManifest,
        spec: &ProcessSpec,
        recording: &Recording,
        events: &[(Tag, Event)],
    ) -> Result<Replayed> {
        let name = &spec.name;
        let program = Arc::new(node.prepare(Arc::new(spec.clone()))?);
        if let Some(recorded) = recording.programs.get(name)
            && *recorded != program.module_digests()
        {
            bail!(
                "process {name:?}: its module {} has changed since the recording; replay needs the module the live run used",
                spec.module.display()
            );
        }
        let divergence = Arc::new(Mutex::new(None));
        let mut samples: HashMap<String, VecDeque<(Tag, Vec<u8>)>> = HashMap::new();
        let mut replayed = Replayed {
            program,
            env: ProcessEnv {
                seed: process_seed(app.seed, name),
                inbox: Arc::new(Inbox::new(spec.mailbox)),
                devices: Devices::new(),
                log_sink: None,
                recorder: None,
            },
            process: None,
            steps: VecDeque::new(),
            misses: BTreeSet::new(),
            tardy: HashMap::new(),
            dropped: BTreeSet::new(),
            completed: None,
            calls: 0,
            live_chain: HashChain::default(),
            chain: HashChain::default(),
            divergence: divergence.clone(),
        };
        let mut open: Option<Tag> = None;
        let mut stopped = false;
        for (tag, event) in events {
            let tag = *tag;
            match event {
                Event::Start { snapshot } => {
                    if open.is_some() {
                        bail!(
                            "recording of {name:?}: an incarnation starts at {tag} before the previous one ended"
                        );
                    }
                    replayed.steps.push_back(Step::Start {
                        tag,
                        snapshot: snapshot.clone(),
                    });
                    open = spec.period.is_some().then_some(tag);
                }
                Event::Sample { device, bytes } => samples
                    .entry(device.clone())
                    .or_default()
                    .push_back((tag, bytes.clone())),
                Event::Handled { source, seq } => replayed.steps.push_back(Step::Handle {
                    key: MessageKey {
                        tag,
                        source: source.clone(),
                        seq: *seq,
                    },
                    fault: None,
                }),
                Event::DeadlineMiss => {
                    replayed.misses.insert(tag);
                }
                Event::Fault { kind } => match open.take() {
                    Some(first) => replayed.steps.push_back(Step::Ticks {
                        next: first,
                        last: tag,
                        fault: Some(kind.clone()),
                    }),
                    None => match replayed.steps.back_mut() {
                        Some(Step::Handle { key, fault }) if key.tag == tag => {
                            *fault = Some(kind.clone())
                        }
                        _ => bail!("recording of {name:?}: a fault at {tag} follows no call"),
                    },
                },
                Event::Tardy {
                    source,
                    visible,
                    seq,
                } => {
                    replayed.tardy.insert((source.clone(), *visible, *seq), tag);
                }
                Event::Dropped { source, seq } => {
                    replayed.dropped.insert((source.clone(), tag, *seq));
                }
                Event::Stop { chain } => {
                    if let Some(first) = open.take().filter(|first| *first <= tag) {
                        replayed.steps.push_back(Step::Ticks {
                            next: first,
                            last: tag,
                            fault: None,
                        });
                    }
                    replayed.live_chain = *chain;
                    stopped = true;
                }
            }
        }
        if !stopped {
            bail!(
                "recording of {name:?} has no end: the live run did not stop cleanly (was it killed?), so it cannot be replayed"
            );
        }
        for device in spec.capabilities.iter().filter_map(|c| match c {
            Capability::Device(d) => Some(d),
            _ => None,
        }) {
            let feed = RecordedDevice {
                process: name.clone(),
                device: device.clone(),
                samples: Mutex::new(samples.remove(device).unwrap_or_default()),
                divergence: divergence.clone(),
            };
            replayed.env.devices.add(device, Arc::new(feed));
        }
        Ok(replayed)
    }

    fn name(&self) -> &str {
        &self.program.spec.name
    }

    /// The tag and kind of the next step, if it can run now. Kinds order
    /// steps at one tag: starts, then message-driven calls (which may feed
    /// a same-tag release through a zero-delay connection), then releases.
    fn ready(&self) -> Option<(Tag, u8)> {
        match self.steps.front()? {
            Step::Start { tag, .. } => Some((*tag, 0)),
            Step::Handle { key, .. } => self.env.inbox.contains(key).then_some((key.tag, 1)),
            Step::Ticks { next, .. } => Some((*next, 2)),
        }
    }

    fn report(&self) -> ReplayedProcess {
        ReplayedProcess {
            name: self.name().to_string(),
            calls: self.calls,
            last_tag_ns: self.completed.map(|t| t.0),
            chain: self.chain.hex(),
            live_chain: self.live_chain.hex(),
        }
    }

    /// Runs the next step, publishing through `router`.
    async fn step(&mut self, router: &Router) -> Result<()> {
        match self.steps.pop_front().expect("ready() saw a step") {
            Step::Start { snapshot, .. } => self.start(router, snapshot).await,
            Step::Ticks { next, last, fault } => {
                let period = self.program.spec.period.expect("periodic").as_nanos() as u64;
                if next < last {
                    self.steps.push_front(Step::Ticks {
                        next: Tag(next.0 + period),
                        last,
                        fault: fault.clone(),
                    });
                }
                let expected = if next == last { fault } else { None };
                let process = self.incarnation(next)?;
                let result = process.tick(next).await;
                self.complete(router, next, result, expected)
            }
            Step::Handle { key, fault } => {
                let message = self.env.inbox.take(&key).expect("ready() saw it");
                let process = self.incarnation(key.tag)?;
                let result = process.message(&message).await;
                self.complete(router, key.tag, result, fault)
            }
        }
    }

    fn incarnation(&mut self, tag: Tag) -> Result<&mut Process> {
        let name = self.program.spec.name.clone();
        self.process.as_mut().with_context(|| {
            format!("recording of {name:?}: a call at {tag} while the process was not running")
        })
    }

    async fn start(&mut self, router: &Router, snapshot: Option<Vec<u8>>) -> Result<()> {
        let process = match snapshot {
            Some(bytes) => {
                let snapshot = Snapshot::decode(&bytes)
                    .with_context(|| format!("recorded snapshot of {:?}", self.name()))?;
                Process::restore(self.program.clone(), self.env.clone(), &snapshot).await?
            }
            None => {
                let mut process = Process::instantiate(self.program.clone(), self.env.clone())
                    .await
                    .map_err(anyhow::Error::from)?;
                let init = process.init().await.map_err(anyhow::Error::from)?;
                process.publish(router, Tag::ZERO, init.outputs);
                process
            }
        };
        self.chain = process.chain();
        self.process = Some(process);
        Ok(())
    }

    /// Books a replayed call against what the live run recorded for it.
    fn complete(
        &mut self,
        router: &Router,
        tag: Tag,
        result: Result<CallReport, Fault>,
        expected: Option<FaultKind>,
    ) -> Result<()> {
        if let Some(reason) = self.divergence.lock().unwrap().take() {
            bail!("replay diverged: {reason}");
        }
        let name = self.name().to_string();
        self.calls += 1;
        match (result, expected) {
            (Ok(report), None) => {
                let missed = self.misses.contains(&tag);
                let process = self.process.as_mut().expect("it just ran");
                let outputs = apply_miss_policy(process, report.outputs, missed);
                process.publish(router, tag, outputs);
                self.chain = process.chain();
                self.completed = Some(tag);
                self.env.inbox.completed(tag);
            }
            // A deadline depends on the clock: the live run's verdict stands.
            (Ok(_), Some(FaultKind::Deadline)) | (Err(_), Some(_)) => self.process = None,
            (Ok(_), Some(kind)) => {
                bail!(
                    "replay diverged: {name:?} faulted ({kind:?}) at {tag} in the live run but not in the replay"
                )
            }
            (Err(fault), None) => {
                bail!(
                    "replay diverged: {name:?} faulted at {tag} in the replay but not in the live run: {fault}"
                )
            }
        }
        Ok(())
    }
}

/// A device that answers reads with the samples the live run recorded.
struct RecordedDevice {
    process: String,
    device: String,
    samples: Mutex<VecDeque<(Tag, Vec<u8>)>>,
    divergence: Arc<Mutex<Option<String>>>,
}

impl Device for RecordedDevice {
    fn read(&self, tag: Tag) -> Vec<u8> {
        let next = self.samples.lock().unwrap().pop_front();
        match next {
            Some((at, bytes)) if at == tag => bytes,
            other => {
                let recorded = other.map_or("no more samples".into(), |(at, _)| {
                    format!("the next recorded sample is at {at}")
                });
                self.divergence.lock().unwrap().get_or_insert(format!(
                    "{:?} read device {:?} at {tag}, but {recorded}",
                    self.process, self.device
                ));
                Vec::new()
            }
        }
    }

    /// Writes go nowhere: the recorded samples already show their effect.
    fn write(&self, _tag: Tag, _data: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// A restored snapshot's model state is already in the samples.
    fn load(&self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// The replay of a whole app.
struct Replay {
    procs: Vec<Replayed>,
    router: Router,
    routes: HashMap<(String, String), Vec<RouteTo>>,
    outbox: Arc<Collected>,
    /// Tardy messages held back until their receiver completes the tag
    /// after which they arrived live: (receiver index, tag, message).
    held: Vec<(usize, Tag, Message)>,
}

impl Replay {
    async fn run(&mut self) -> Result<()> {
        loop {
            let next = self
                .procs
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.ready().map(|(tag, kind)| (tag, kind, i)))
                .min();
            let Some((_, _, i)) = next else {
                return self.check_finished();
            };
            self.procs[i].step(&self.router).await?;
            self.route()?;
            self.release_held(i)?;
        }
    }

    /// Delivers what the last call published, as the live run did.
    fn route(&mut self) -> Result<()> {
        let published = std::mem::take(&mut *self.outbox.0.lock().unwrap());
        for (sender, port, tag, seq, payload) in published {
            for route in self
                .routes
                .get(&(sender.clone(), port))
                .into_iter()
                .flatten()
            {
                let r = self.procs.iter().position(|p| p.name() == route.receiver);
                let Some(r) = r else { continue };
                let receiver = &self.procs[r];
                let visible = tag.after(route.delay);
                let id = (sender.clone(), visible, seq);
                if receiver.dropped.contains(&id) {
                    continue;
                }
                let message = Message {
                    key: MessageKey {
                        tag: visible,
                        source: sender.clone(),
                        seq,
                    },
                    port: route.port,
                    payload: payload.clone(),
                };
                match receiver.tardy.get(&id) {
                    Some(&after) if receiver.completed.is_none_or(|c| c < after) => {
                        self.held.push((r, after, message))
                    }
                    _ => push(receiver, message)?,
                }
            }
        }
        Ok(())
    }

    fn release_held(&mut self, receiver: usize) -> Result<()> {
        let Some(done) = self.procs[receiver].completed else {
            return Ok(());
        };
        let (ready, waiting) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(r, after, _)| *r == receiver && *after <= done);
        self.held = waiting;
        for (_, _, message) in ready {
            push(&self.procs[receiver], message)?;
        }
        Ok(())
    }

    fn check_finished(&self) -> Result<()> {
        for p in &self.procs {
            if let Some(Step::Handle { key, .. }) = p.steps.front() {
                bail!(
                    "replay diverged: {:?} took message {} seq {} from {:?} in the live run, but no process produced it",
                    p.name(),
                    key.tag,
                    key.seq,
                    key.source
                );
            }
        }
        Ok(())
    }
}

fn push(receiver: &Replayed, message: Message) -> Result<()> {
    receiver.env.inbox.push(message).map_err(|_| {
        anyhow::anyhow!(
            "replay diverged: the mailbox of {:?} is full, but it was not in the live run",
            receiver.name()
        )
    })
}
