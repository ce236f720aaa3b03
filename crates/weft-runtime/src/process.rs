//! A process: one store holding one instance, or a small group of linked
//! instances, plus its host state. This file owns the life of one
//! incarnation: instantiating its program, driving one tick or message
//! through it under its limits, publishing its outputs into its hash chain,
//! and classifying what went wrong. Capturing and restoring its state is
//! `snapshot.rs`.
//!
//! Calls are written once, as async code. be processes run them on tokio
//! with epoch yields; rt processes run the same code through [`run_sync`],
//! which never suspends because an rt store has no async host functions and
//! no epoch deadline (fuel is its only meter).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use wasmtime::{Instance, Memory, ModuleExport, Store, Trap, TypedFunc, UpdateDeadline};
use weft_abi::{Capability, exports};
use weft_manifest::ProcessSpec;
use weft_types::{ProcessName, Tag};

use crate::device::Devices;
use crate::engine::Metering;
use crate::host::Host;
use crate::inbox::Inbox;
use crate::program::Program;
use crate::record::ProcessRecorder;
use crate::router::Router;
use crate::snapshot::Tracking;
use crate::types::{
    CallReport, DeadlineExceeded, DeviceWrite, Fault, FaultKind, HashChain, LogLine, LogSink,
    Message, Output, ProcessId,
};

/// Drives a future that is known not to suspend (an rt call) to completion.
#[inline(always)]
pub fn run_sync<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut TaskContext::from_waker(Waker::noop()))
    {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("a synchronous wasmtime call suspended"),
    }
}

/// What a process needs from its node besides its program.
#[derive(Clone)]
pub struct ProcessEnv {
    /// The process's id in its app (how its messages name their source).
    pub id: ProcessId,
    pub seed: u64,
    pub inbox: Arc<Inbox>,
    pub devices: Devices,
    pub log_sink: Option<LogSink>,
    /// Where device samples go when the run is being recorded.
    pub recorder: Option<ProcessRecorder>,
}

/// The fixed exports the host drives, looked up the first time each is
/// called, so an instance costs only what it uses; kept so that a call
/// after the first costs no lookup and no type check.
#[derive(Default)]
struct Entry {
    init: Lazy<TypedFunc<(), ()>>,
    tick: Lazy<TypedFunc<i64, ()>>,
    message: Lazy<TypedFunc<(i32, i32, i32, i64), ()>>,
    alloc: Lazy<TypedFunc<i32, i32>>,
    start: Lazy<TypedFunc<(), ()>>,
    memory: Lazy<Memory>,
}

/// An export not looked up yet, or looked up (and perhaps absent).
#[derive(Default)]
enum Lazy<T> {
    #[default]
    Unresolved,
    Resolved(Option<T>),
}

impl<T> Lazy<T> {
    fn get_or(&mut self, look_up: impl FnOnce() -> Option<T>) -> Option<&T> {
        if let Lazy::Unresolved = self {
            *self = Lazy::Resolved(look_up());
        }
        match self {
            Lazy::Resolved(found) => found.as_ref(),
            Lazy::Unresolved => unreachable!("resolved above"),
        }
    }
}

fn resolve<'a, P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    slot: &'a mut Lazy<TypedFunc<P, R>>,
    store: &mut Store<Host>,
    instance: Instance,
    export: &Option<ModuleExport>,
) -> Option<&'a TypedFunc<P, R>> {
    slot.get_or(|| {
        let export = export.as_ref()?;
        instance
            .get_module_export(&mut *store, export)?
            .into_func()?
            .typed(&*store)
            .ok()
    })
}

/// Calls `func` in `store`, async for an async store.
async fn call<P, R>(
    store: &mut Store<Host>,
    is_async: bool,
    func: &TypedFunc<P, R>,
    params: P,
) -> Result<R, Fault>
where
    P: wasmtime::WasmParams + Sync,
    R: wasmtime::WasmResults + Send + Sync,
{
    let result = if is_async {
        func.call_async(&mut *store, params).await
    } else {
        func.call(&mut *store, params)
    };
    result.map_err(|e| classify(store, e.into()))
}

/// One live incarnation of a process.
pub struct Process {
    /// The chain of checkpoints and the page trackers of its memories
    /// (first, so it stops tracking before the memories go).
    pub(crate) tracking: Option<Tracking>,
    pub(crate) program: Arc<Program>,
    pub(crate) store: Store<Host>,
    pub(crate) instances: Vec<Instance>,
    entry: Entry,
    id: ProcessId,
    /// Sequence number of the next published message.
    pub(crate) seq: u64,
    pub(crate) chain: HashChain,
    /// The last tag this process completed.
    pub(crate) last_tag: Option<Tag>,
    /// Outputs of the last published call (the `hold` deadline policy re-sends them).
    pub(crate) last_outputs: Vec<Output>,
}

impl Process {
    /// Instantiates a fresh process. Does not call `weft_init`.
    pub async fn instantiate(program: Arc<Program>, env: ProcessEnv) -> Result<Process, Fault> {
        let mut host = Host::new(program.spec.clone(), env.seed, env.inbox, env.devices);
        host.keep_logs = env.log_sink.is_some();
        host.recorder = env.recorder;
        host.one_module = program.pre.is_some();
        if program.spec.grants(&Capability::Wasi) {
            host.wasi = Some(crate::wasi::context(&program.spec).map_err(Fault::instantiate)?);
        }
        let mut store = Store::new(&program.engine.engine, host);
        store.limiter(|h| &mut h.limiter);
        if program.is_async() {
            store.epoch_deadline_callback(|ctx| {
                let host = ctx.data();
                match host.deadline {
                    Some(limit) if host.call_started.elapsed() > limit => {
                        Err(wasmtime::Error::new(DeadlineExceeded(limit)))
                    }
                    _ => Ok(UpdateDeadline::Yield(1)),
                }
            });
            store.set_epoch_deadline(1);
        }
        let instances = instantiate_modules(&program, &mut store).await?;
        Ok(Process {
            tracking: None,
            program,
            store,
            instances,
            entry: Entry::default(),
            id: env.id,
            seq: 0,
            chain: HashChain::default(),
            last_tag: None,
            last_outputs: Vec::new(),
        })
    }

    pub fn name(&self) -> &ProcessName {
        &self.program.spec.name
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.program.spec
    }

    pub fn chain(&self) -> HashChain {
        self.chain
    }

    pub fn last_tag(&self) -> Option<Tag> {
        self.last_tag
    }

    /// Outputs of the last published call.
    pub fn last_outputs(&self) -> &[Output] {
        &self.last_outputs
    }

    /// Bytes of linear memory across all instances.
    pub fn memory_bytes(&mut self) -> u64 {
        let mut total = 0;
        for i in 0..self.instances.len() {
            let instance = self.instances[i];
            if let Some(m) = instance.get_memory(&mut self.store, exports::FIRST_MEMORY) {
                total += m.data_size(&self.store) as u64;
            }
        }
        total
    }

    pub fn kv(&self) -> &std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        &self.store.data().kv
    }

    /// Messages refused for being over `max_message` so far.
    pub fn refused_messages(&self) -> u64 {
        self.store.data().refused
    }

    fn main(&self) -> Instance {
        *self.instances.last().expect("a process has a main module")
    }

    fn begin(&mut self, tag: Tag) -> Result<(), Fault> {
        let host = self.store.data_mut();
        host.tag = tag;
        host.outbox.clear();
        host.logs.clear();
        host.writes.clear();
        // Only the epoch callback of an async store reads it.
        if self.program.is_async() && host.deadline.is_some() {
            host.call_started = Instant::now();
        }
        host.limiter.exceeded = None;
        if let Some(fuel) = self
            .program
            .spec
            .fuel_per_tick
            .filter(|_| self.program.engine.metering == Metering::Fuel)
        {
            self.store
                .set_fuel(fuel)
                .map_err(|e| Fault::instantiate(e.into()))?;
        }
        Ok(())
    }

    fn end(&mut self, messages_in: u64) -> CallReport {
        let fuel_used = match self.program.spec.fuel_per_tick {
            Some(budget) if self.program.engine.metering == Metering::Fuel => {
                budget - self.store.get_fuel().unwrap_or(0)
            }
            _ => 0,
        };
        let host = self.store.data_mut();
        let tag = host.tag;
        let mut writes = Vec::new();
        for write in host.writes.drain(..) {
            let payload = bytes::Bytes::from(write.data);
            self.chain.extend(
                tag,
                &Output {
                    port: crate::types::write_port(write.handle),
                    payload: payload.clone(),
                },
            );
            if let Some(device) = write.fenced {
                writes.push(DeviceWrite {
                    device,
                    data: payload,
                });
            }
        }
        CallReport {
            fuel_used,
            messages_in,
            outputs: std::mem::take(&mut self.store.data_mut().outbox),
            logs: self.take_logs(),
            writes,
        }
    }

    /// The log lines of the last call, taken (also after a fault).
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// Runs `weft_init` if the module exports it.
    pub async fn init(&mut self) -> Result<CallReport, Fault> {
        self.begin(Tag::ZERO)?;
        let main = self.main();
        let init = resolve(
            &mut self.entry.init,
            &mut self.store,
            main,
            &self.program.entry_points.init,
        );
        if let Some(init) = init {
            call(&mut self.store, self.program.is_async(), init, ()).await?;
        }
        Ok(self.end(0))
    }

    /// One release at `tag`: delivers every message visible at `tag` (when
    /// the module exports `weft_message`), then calls `weft_tick(tag)`.
    pub async fn tick(&mut self, tag: Tag) -> Result<CallReport, Fault> {
        self.begin(tag)?;
        self.store.data().inbox.reading(tag);
        let mut delivered = 0;
        if self.program.entry_points.message.is_some() {
            let inbox = self.store.data().inbox.clone();
            while let Some(message) = inbox.pop_visible(tag, None) {
                self.deliver(&message).await?;
                delivered += 1;
            }
        }
        let main = self.main();
        let tick = resolve(
            &mut self.entry.tick,
            &mut self.store,
            main,
            &self.program.entry_points.tick,
        );
        if let Some(tick) = tick {
            call(&mut self.store, self.program.is_async(), tick, tag.0 as i64).await?;
        }
        self.last_tag = Some(tag);
        Ok(self.end(delivered))
    }

    /// Handles one message at its own tag (message-driven processes).
    pub async fn message(&mut self, message: &Message) -> Result<CallReport, Fault> {
        self.begin(message.key.tag)?;
        self.store.data().inbox.reading(message.key.tag);
        self.deliver(message).await?;
        self.last_tag = Some(message.key.tag);
        Ok(self.end(1))
    }

    async fn deliver(&mut self, message: &Message) -> Result<(), Fault> {
        let main = self.main();
        let points = &self.program.entry_points;
        let is_async = self.program.is_async();
        let alloc = resolve(&mut self.entry.alloc, &mut self.store, main, &points.alloc);
        let handler = resolve(
            &mut self.entry.message,
            &mut self.store,
            main,
            &points.message,
        );
        let (Some(alloc), Some(handler)) = (alloc, handler) else {
            return Ok(());
        };
        let len = message.payload.len() as i32;
        let ptr = call(&mut self.store, is_async, alloc, len).await?;
        let store = &mut self.store;
        let memory = self
            .entry
            .memory
            .get_or(|| main.get_memory(&mut *store, exports::FIRST_MEMORY));
        let Some(memory) = memory else {
            return Err(Fault::new(
                FaultKind::Trap,
                "module exports weft_message but has no memory",
            ));
        };
        memory
            .write(&mut self.store, ptr as u32 as usize, &message.payload)
            .map_err(|_| {
                Fault::new(
                    FaultKind::Trap,
                    format!("weft_alloc({len}) returned {ptr:#x}, which is outside linear memory"),
                )
            })?;
        let params = (message.port.0, ptr, len, message.key.tag.0 as i64);
        call(&mut self.store, is_async, handler, params).await
    }

    /// Runs a WASI command's `_start`; returns its exit code.
    pub async fn run_command(&mut self) -> Result<i32, Fault> {
        self.begin(Tag::ZERO)?;
        let main = self.main();
        let start = resolve(
            &mut self.entry.start,
            &mut self.store,
            main,
            &self.program.entry_points.start,
        );
        let Some(start) = start else {
            return Err(Fault::new(
                FaultKind::Instantiate,
                "module does not export `_start`; it is not a WASI command",
            ));
        };
        let result = if self.program.is_async() {
            start.call_async(&mut self.store, ()).await
        } else {
            start.call(&mut self.store, ())
        };
        match result {
            Ok(()) => Ok(0),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => Err(classify(&self.store, e.into())),
            },
        }
    }

    /// Assigns sequence numbers to a call's outputs, extends the hash chain
    /// and hands them to the router. Returns (sent, refused by full
    /// mailboxes).
    pub fn publish(&mut self, router: &Router, tag: Tag, outputs: Vec<Output>) -> (u64, u64) {
        let (mut sent, mut refused) = (0, 0);
        for output in &outputs {
            self.seq += 1;
            self.chain.extend(tag, output);
            let delivery = router.publish(self.id, tag, self.seq, output);
            sent += 1;
            refused += delivery.refused;
        }
        // The outputs before these make room for the next call's.
        let mut spare = std::mem::replace(&mut self.last_outputs, outputs);
        spare.clear();
        let outbox = &mut self.store.data_mut().outbox;
        if outbox.capacity() == 0 {
            *outbox = spare;
        }
        (sent, refused)
    }
}

/// Instantiates every module of `program` into `store`: the pre-linked
/// main module alone, or each linked module in order, registered under
/// its link name so the next can import from it.
async fn instantiate_modules(
    program: &Program,
    store: &mut Store<Host>,
) -> Result<Vec<Instance>, Fault> {
    let is_async = program.is_async();
    if let Some(pre) = &program.pre {
        let instance = if is_async {
            pre.instantiate_async(&mut *store).await
        } else {
            pre.instantiate(&mut *store)
        };
        return Ok(vec![instance.map_err(|e| classify(store, e.into()))?]);
    }
    let mut instances = Vec::with_capacity(program.modules.len());
    let mut linker = (*program.linker).clone();
    for (name, compiled) in &program.modules {
        let instance = if is_async {
            linker
                .instantiate_async(&mut *store, &compiled.module)
                .await
        } else {
            linker.instantiate(&mut *store, &compiled.module)
        };
        let instance = instance.map_err(|e| classify(store, e.into()))?;
        if !name.is_empty() {
            linker
                .instance(&mut *store, name, instance)
                .map_err(|e| Fault::instantiate(e.into()))?;
        }
        instances.push(instance);
    }
    Ok(instances)
}

/// Turns a wasmtime error into a fault a user can act on.
fn classify(store: &Store<Host>, error: anyhow::Error) -> Fault {
    if let Some(reason) = &store.data().limiter.exceeded {
        return Fault::new(FaultKind::MemoryLimit, reason.clone());
    }
    let text = format!("{error:#}");
    let kind = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FaultKind::FuelExhausted,
        Some(Trap::StackOverflow) => FaultKind::StackOverflow,
        Some(_) => FaultKind::Trap,
        None if error.downcast_ref::<DeadlineExceeded>().is_some() => FaultKind::Deadline,
        None if error
            .downcast_ref::<wasmtime::UnknownImportError>()
            .is_some() =>
        {
            FaultKind::Instantiate
        }
        None => FaultKind::Trap,
    };
    let message = match kind {
        FaultKind::FuelExhausted => {
            format!(
                "fuel exhausted: the call used its whole budget of {} fuel ({text})",
                store.data().spec.fuel_per_tick.unwrap_or(0)
            )
        }
        FaultKind::StackOverflow => format!("stack overflow (deep recursion) ({text})"),
        _ => text,
    };
    Fault::new(kind, message)
}
