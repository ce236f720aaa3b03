//! Replay: running a [`Recording`] again, offline, as fast as the CPU
//! allows, and reporting each process's output hash chain.
//!
//! The replay does not simulate time. It runs every recorded call in tag
//! order on one thread: each incarnation's releases on the process's
//! release grid from its recorded first tag (jumping where the live run
//! skipped ahead), message-driven calls in the order the live run took
//! them. Messages between the app's processes are produced again by the
//! processes themselves and routed by the same [`Router`] a node uses; what
//! the recording supplies is what came from outside or from timing: device
//! samples, deadline misses (the miss policy is applied again), faults,
//! late and refused messages (the inboxes admit them as the live ones did),
//! restarts and the snapshots they resumed from.
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
use weft_manifest::{AppManifest, ModuleSource, ProcessSpec};
use weft_types::{AppName, ProcessName, Tag};

use crate::device::{Device, Devices, ReadAt};
use crate::inbox::Inbox;
use crate::inbox::{Admission, Admit};
use crate::node::{Node, process_seed, wire};
use crate::process::{Process, ProcessEnv};
use crate::program::Program;
use crate::record::{Event, Recording};
use crate::router::Router;
use crate::sched::apply_miss_policy;
use crate::sched::releases::Releases;
use crate::snapshot::Snapshot;
use crate::types::{CallReport, Fault, FaultKind, HashChain, MessageKey, ProcessId, Roster};

/// What `weft replay` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub app: AppName,
    pub processes: Vec<ReplayedProcess>,
    /// True when every replayed chain equals the chain the live run recorded.
    pub matches_live: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayedProcess {
    pub name: ProcessName,
    /// Calls replayed (ticks and messages).
    pub calls: u64,
    pub last_tag_ns: Option<u64>,
    /// The replay's output hash chain (hex).
    pub chain: String,
    /// The chain the live run ended with (hex).
    pub live_chain: String,
}

/// Replays `recording` of `app` (parsed from the recording's manifest),
/// with its modules read from `modules`; they must be the ones the live
/// run used.
pub async fn replay(
    node: &Node,
    recording: &Recording,
    app: &AppManifest,
    modules: &dyn ModuleSource,
) -> Result<ReplayReport> {
    let roster = Roster::new(app.processes.iter().map(|p| p.name.clone()));
    let mut procs = Vec::new();
    for (i, spec) in app.processes.iter().enumerate() {
        let Some(events) = recording.events.get(spec.name.as_str()) else {
            continue;
        };
        let id = ProcessId(i as u32);
        procs.push(Replayed::new(
            node,
            app,
            (id, spec),
            &roster,
            recording,
            events,
            modules,
        )?);
    }
    let envs = procs
        .iter()
        .map(|p| (&p.program.spec.name, &p.env))
        .collect();
    let router = wire(app, &roster, &envs, None);
    let mut replay = Replay { procs, router };
    replay.run().await?;
    let processes: Vec<ReplayedProcess> = replay.procs.iter().map(Replayed::report).collect();
    Ok(ReplayReport {
        app: app.name.clone(),
        matches_live: processes.iter().all(|p| p.chain == p.live_chain),
        processes,
    })
}

/// What a process does next, from its recording.
enum Step {
    Start {
        snapshot: Option<Vec<u8>>,
        tag: Tag,
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

/// How the live inbox admitted each arrival that was late or refused.
#[derive(Default)]
struct Arrivals {
    /// (source, visible tag, seq) -> the tag the receiver had read when it
    /// arrived. (A fresh incarnation of a sender numbers from 1 again, so
    /// the tag is part of a message's identity.)
    tardy: HashMap<(ProcessId, Tag, u64), Tag>,
    /// Arrivals the live mailbox refused.
    dropped: BTreeSet<(ProcessId, Tag, u64)>,
}

impl Admission for Arrivals {
    fn admit(&self, key: &MessageKey) -> Admit {
        let id = (key.source, key.tag, key.seq);
        if self.dropped.contains(&id) {
            return Admit::Refuse;
        }
        match self.tardy.get(&id) {
            Some(after) => Admit::AfterReading(*after),
            None => Admit::Now,
        }
    }
}

/// A process being replayed.
struct Replayed {
    program: Arc<Program>,
    /// The release grid of a periodic process.
    releases: Option<Releases>,
    env: ProcessEnv,
    process: Option<Process>,
    steps: VecDeque<Step>,
    misses: BTreeSet<Tag>,
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
        (id, spec): (ProcessId, &ProcessSpec),
        roster: &Roster,
        recording: &Recording,
        events: &[(Tag, Event)],
        modules: &dyn ModuleSource,
    ) -> Result<Replayed> {
        let name = &spec.name;
        let program = Arc::new(node.prepare(Arc::new(spec.clone()), modules)?);
        if let Some(recorded) = recording.programs.get(name.as_str())
            && *recorded != program.module_digests()
        {
            bail!(
                "process {:?}: its module {} has changed since the recording; replay needs the module the live run used",
                name.as_str(),
                spec.module
            );
        }
        let releases = spec
            .period
            .map(|period| Releases::new(period, spec.offset, 0));
        let plan = Plan::from_events(name, releases.as_ref(), roster, events)?;
        let divergence = Arc::new(Mutex::new(None));
        let inbox = Arc::new(Inbox::new(spec.mailbox, roster.clone()));
        inbox.admit_with(Arc::new(plan.arrivals));
        let mut devices = Devices::new();
        let mut samples = plan.samples;
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
            devices.add(device, Arc::new(feed));
        }
        Ok(Replayed {
            program,
            releases,
            env: ProcessEnv {
                id,
                seed: process_seed(app.seed, name.as_str()),
                inbox,
                devices,
                log_sink: None,
                recorder: None,
            },
            process: None,
            steps: plan.steps,
            misses: plan.misses,
            completed: None,
            calls: 0,
            live_chain: plan.live_chain,
            chain: HashChain::default(),
            divergence,
        })
    }

    fn name(&self) -> &ProcessName {
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
            name: self.name().clone(),
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
                let grid = self.releases.as_ref().expect("ticks of a periodic process");
                if next < last {
                    self.steps.push_front(Step::Ticks {
                        next: grid.tag(grid.index(next) + 1),
                        last,
                        fault,
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
            format!(
                "recording of {:?}: a call at {tag} while the process was not running",
                name.as_str()
            )
        })
    }

    async fn start(&mut self, router: &Router, snapshot: Option<Vec<u8>>) -> Result<()> {
        let process = match snapshot {
            Some(bytes) => {
                let snapshot = Snapshot::decode(&bytes)
                    .with_context(|| format!("recorded snapshot of {:?}", self.name().as_str()))?;
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
        let name = self.name().as_str().to_string();
        self.calls += 1;
        match (result, expected) {
            (Ok(report), None) => {
                let missed = self.misses.contains(&tag);
                let process = self.process.as_mut().expect("it just ran");
                let outputs = apply_miss_policy(process, report.outputs, missed);
                let (_, overflowed) = process.publish(router, tag, outputs);
                if overflowed > 0 {
                    bail!(
                        "replay diverged: a receiver's mailbox overflowed with what {name:?} sent at {tag}, but it did not in the live run"
                    );
                }
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

/// A process's recorded events, turned into what the replay does.
#[derive(Default)]
struct Plan {
    steps: VecDeque<Step>,
    misses: BTreeSet<Tag>,
    arrivals: Arrivals,
    samples: HashMap<String, VecDeque<(Tag, Vec<u8>)>>,
    live_chain: HashChain,
}

impl Plan {
    fn from_events(
        name: &ProcessName,
        releases: Option<&Releases>,
        roster: &Roster,
        events: &[(Tag, Event)],
    ) -> Result<Plan> {
        let mut planner = Planner {
            name: name.as_str(),
            releases,
            roster,
            plan: Plan::default(),
            open: None,
            stopped: false,
        };
        for (tag, event) in events {
            planner.event(*tag, event)?;
        }
        planner.finish()
    }

    fn ticks(&mut self, next: Tag, last: Tag, fault: Option<FaultKind>) {
        self.steps.push_back(Step::Ticks { next, last, fault });
    }
}

/// Reads a process's events in order into its [`Plan`].
struct Planner<'a> {
    name: &'a str,
    releases: Option<&'a Releases>,
    roster: &'a Roster,
    plan: Plan,
    /// The first release of the incarnation running, if periodic.
    open: Option<Tag>,
    stopped: bool,
}

impl Planner<'_> {
    fn event(&mut self, tag: Tag, event: &Event) -> Result<()> {
        match event {
            Event::Start { snapshot } => self.start(tag, snapshot)?,
            Event::Sample { device, bytes } => self
                .plan
                .samples
                .entry(device.clone())
                .or_default()
                .push_back((tag, bytes.clone())),
            Event::Handled { source, seq } => {
                let key = MessageKey {
                    tag,
                    source: self.id(source)?,
                    seq: *seq,
                };
                self.plan.steps.push_back(Step::Handle { key, fault: None });
            }
            Event::DeadlineMiss => {
                self.plan.misses.insert(tag);
            }
            Event::Fault { kind } => self.fault(tag, *kind)?,
            Event::Skip { resume } => self.skip(tag, *resume)?,
            Event::Tardy {
                source,
                visible,
                seq,
            } => {
                let id = self.id(source)?;
                self.plan.arrivals.tardy.insert((id, *visible, *seq), tag);
            }
            Event::Dropped { source, seq } => {
                let id = self.id(source)?;
                self.plan.arrivals.dropped.insert((id, tag, *seq));
            }
            Event::Stop { chain } => self.stop(tag, *chain),
        }
        Ok(())
    }

    fn id(&self, source: &ProcessName) -> Result<ProcessId> {
        self.roster.id(source.as_str()).with_context(|| {
            format!(
                "recording of {:?}: a message from {source:?}, which the app does not have",
                self.name
            )
        })
    }

    fn start(&mut self, tag: Tag, snapshot: &Option<Vec<u8>>) -> Result<()> {
        if self.open.is_some() {
            bail!(
                "recording of {:?}: an incarnation starts at {tag} before the previous one ended",
                self.name
            );
        }
        self.plan.steps.push_back(Step::Start {
            tag,
            snapshot: snapshot.clone(),
        });
        self.open = self.releases.map(|_| tag);
        Ok(())
    }

    /// A fault ends the open incarnation's releases, or the message-driven
    /// call it followed.
    fn fault(&mut self, tag: Tag, kind: FaultKind) -> Result<()> {
        if let Some(first) = self.open.take() {
            self.plan.ticks(first, tag, Some(kind));
            return Ok(());
        }
        match self.plan.steps.back_mut() {
            Some(Step::Handle { key, fault }) if key.tag == tag => {
                *fault = Some(kind);
                Ok(())
            }
            _ => bail!(
                "recording of {:?}: a fault at {tag} follows no call",
                self.name
            ),
        }
    }

    /// The releases before a skip ran; the next one is at `resume`.
    fn skip(&mut self, tag: Tag, resume: Tag) -> Result<()> {
        let (Some(first), Some(grid)) = (self.open, self.releases) else {
            bail!(
                "recording of {:?}: a skip at {tag} outside a periodic incarnation",
                self.name
            );
        };
        if first < tag {
            let last = grid.tag(grid.index(tag).saturating_sub(1));
            self.plan.ticks(first, last, None);
        }
        self.open = Some(resume);
        Ok(())
    }

    fn stop(&mut self, tag: Tag, chain: HashChain) {
        if let Some(first) = self.open.take().filter(|first| *first <= tag) {
            self.plan.ticks(first, tag, None);
        }
        self.plan.live_chain = chain;
        self.stopped = true;
    }

    fn finish(self) -> Result<Plan> {
        if !self.stopped {
            bail!(
                "recording of {:?} has no end: the live run did not stop cleanly (was it killed?), so it cannot be replayed",
                self.name
            );
        }
        Ok(self.plan)
    }
}

/// A device that answers reads with the samples the live run recorded.
struct RecordedDevice {
    process: ProcessName,
    device: String,
    samples: Mutex<VecDeque<(Tag, Vec<u8>)>>,
    divergence: Arc<Mutex<Option<String>>>,
}

impl Device for RecordedDevice {
    fn read(&self, at: ReadAt) -> bytes::Bytes {
        let tag = at.tag;
        let next = self.samples.lock().unwrap().pop_front();
        match next {
            Some((at, bytes)) if at == tag => bytes.into(),
            other => {
                let recorded = other.map_or("no more samples".into(), |(at, _)| {
                    format!("the next recorded sample is at {at}")
                });
                self.divergence.lock().unwrap().get_or_insert(format!(
                    "{:?} read device {:?} at {tag}, but {recorded}",
                    self.process.as_str(),
                    self.device
                ));
                bytes::Bytes::new()
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
        }
    }

    fn check_finished(&self) -> Result<()> {
        for p in &self.procs {
            if let Some(Step::Handle { key, .. }) = p.steps.front() {
                bail!(
                    "replay diverged: {:?} took message {} seq {} from {:?} in the live run, but no process produced it",
                    p.name().as_str(),
                    key.tag,
                    key.seq,
                    p.env.inbox.roster().name(key.source).as_str()
                );
            }
        }
        Ok(())
    }
}
