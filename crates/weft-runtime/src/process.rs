//! A process: one store holding one instance, or a small group of linked
//! instances, plus its host state. This file owns the life of a process:
//! preparing its program (load, check capabilities, compile), instantiating
//! it, driving one tick or message through it under its limits, publishing
//! its outputs into its hash chain, and classifying what went wrong.
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

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::{
    ExternType, Instance, InstancePre, Linker, Module, ModuleExport, Store, Trap, TypedFunc,
    UpdateDeadline, ValType,
};
use weft_abi::{Capability, IMPORT_MODULE, WASI_MODULE, exports};
use weft_manifest::{Class, ProcessSpec};

use crate::device::Devices;
use crate::engine::{CompiledModule, Metering, WeftEngine};
use crate::host::Host;
use crate::module::LoadedModule;
use crate::ports::{Inbox, Message, Output, Router};
use crate::record::ProcessRecorder;
use crate::tag::Tag;

/// Drives a future that is known not to suspend (an rt call) to completion.
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

/// Why a process stopped running a call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The module does not start: missing grant, link error, bad module.
    Instantiate,
    FuelExhausted,
    MemoryLimit,
    StackOverflow,
    /// Over its wall-clock deadline (be processes are interrupted).
    Deadline,
    /// Any other trap: unreachable, out-of-bounds access, bad host call...
    Trap,
}

#[derive(Debug, Clone, thiserror::Error, serde::Serialize)]
#[error("{message}")]
pub struct Fault {
    pub kind: FaultKind,
    pub message: String,
}

impl Fault {
    fn instantiate(error: anyhow::Error) -> Fault {
        Fault {
            kind: FaultKind::Instantiate,
            message: format!("{error:#}"),
        }
    }
}

/// What a successful call did.
#[derive(Debug, Default, Clone)]
pub struct CallReport {
    pub fuel_used: u64,
    pub messages_in: u64,
    pub outputs: Vec<Output>,
}

/// The compiled form of a process, shared by all of its incarnations
/// (restarts, restores) so none of them compiles again.
pub struct Program {
    pub spec: Arc<ProcessSpec>,
    pub engine: WeftEngine,
    /// Linked library modules in instantiation order, then the main module.
    modules: Vec<(String, CompiledModule)>,
    /// Pre-resolved imports of a single-module process.
    pre: Option<InstancePre<Host>>,
    linker: Linker<Host>,
    /// The main module's entry points, resolved once (lookups by index, not name).
    entry_points: EntryPoints,
}

/// Export indices of the fixed entry points in the main module.
#[derive(Default)]
struct EntryPoints {
    init: Option<ModuleExport>,
    tick: Option<ModuleExport>,
    message: Option<ModuleExport>,
    alloc: Option<ModuleExport>,
    start: Option<ModuleExport>,
}

impl EntryPoints {
    /// Resolves the entry points, refusing any with the wrong signature:
    /// a `weft_tick(i32)` would otherwise be silently never called.
    fn resolve(module: &Module, name: &str) -> Result<EntryPoints> {
        use ValType::{I32, I64};
        let find = |export: &str,
                    params: &[ValType],
                    results: &[ValType]|
         -> Result<Option<ModuleExport>> {
            let Some(ExternType::Func(ty)) = module.get_export(export) else {
                return Ok(None);
            };
            let matches = ty
                .params()
                .map(|p| p.to_string())
                .eq(params.iter().map(|p| p.to_string()))
                && ty
                    .results()
                    .map(|r| r.to_string())
                    .eq(results.iter().map(|r| r.to_string()));
            if !matches {
                bail!(
                    "module {name:?} exports `{export}` with signature {ty}, but weft calls it as (param {params:?}) (result {results:?}); see docs/abi.md"
                );
            }
            Ok(module.get_export_index(export))
        };
        Ok(EntryPoints {
            init: find(exports::INIT, &[], &[])?,
            tick: find(exports::TICK, &[I64], &[])?,
            message: find(exports::MESSAGE, &[I32, I32, I32, I64], &[])?,
            alloc: find(exports::ALLOC, &[I32], &[I32])?,
            start: find(exports::START, &[], &[])?,
        })
    }
}

fn entry<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    store: &mut Store<Host>,
    instance: Instance,
    export: &Option<ModuleExport>,
) -> Option<TypedFunc<P, R>> {
    let func = instance
        .get_module_export(&mut *store, export.as_ref()?)?
        .into_func()?;
    func.typed(&*store).ok()
}

impl Program {
    /// Loads and checks every module of `spec` and compiles it for `engine`.
    /// Every problem is reported here, before anything runs.
    pub fn prepare(
        spec: Arc<ProcessSpec>,
        engine: &WeftEngine,
        linker: &Linker<Host>,
    ) -> Result<Program> {
        let process = &spec.name;
        let mut modules = Vec::new();
        for (name, path) in spec
            .links
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .chain([("", spec.module.as_path())])
        {
            let loaded =
                LoadedModule::from_file(path).with_context(|| format!("process {process:?}"))?;
            check_module(&spec, name, &loaded)?;
            let compiled = engine
                .compile(Arc::new(loaded))
                .with_context(|| format!("process {process:?}"))?;
            modules.push((name.to_string(), compiled));
        }
        let main = &modules.last().unwrap().1;
        let pre = if spec.links.is_empty() {
            Some(
                linker
                    .instantiate_pre(&main.module)
                    .map_err(anyhow::Error::from)
                    .with_context(|| {
                        format!(
                            "process {process:?}: cannot link module {}",
                            spec.module.display()
                        )
                    })?,
            )
        } else {
            None
        };
        let entry_points = EntryPoints::resolve(&main.module, &main.loaded.info.name)
            .with_context(|| format!("process {process:?}"))?;
        Ok(Program {
            spec: spec.clone(),
            engine: engine.clone(),
            modules,
            pre,
            linker: linker.clone(),
            entry_points,
        })
    }

    pub fn modules(&self) -> impl Iterator<Item = &LoadedModule> {
        self.modules.iter().map(|(_, m)| m.loaded.as_ref())
    }

    /// True when every artefact came from the compiled-module cache.
    pub fn from_cache(&self) -> bool {
        self.modules.iter().all(|(_, m)| m.from_cache)
    }

    pub(crate) fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// The digests of every module, in link order.
    pub fn module_digests(&self) -> Vec<crate::module::ModuleDigest> {
        (0..self.module_count())
            .map(|i| self.module_digest(i))
            .collect()
    }

    pub(crate) fn module_digest(&self, index: usize) -> crate::module::ModuleDigest {
        self.modules[index].1.loaded.digest
    }

    fn is_async(&self) -> bool {
        self.engine.metering == Metering::Epoch
    }
}

/// Capability and shape checks of one module of a process.
fn check_module(spec: &ProcessSpec, link_name: &str, module: &LoadedModule) -> Result<()> {
    let process = &spec.name;
    let which = if link_name.is_empty() {
        format!("module {:?}", module.info.name)
    } else {
        format!("linked module {link_name:?}")
    };
    for import in &module.info.imports {
        match import.module.as_str() {
            IMPORT_MODULE => {
                let Some(needed) = Capability::for_import(&import.name) else {
                    bail!(
                        "process {process:?}: {which} imports `weft::{}`, which is not a weft host function (see docs/abi.md)",
                        import.name
                    );
                };
                if !spec.grants(&needed) {
                    let grant = if matches!(needed, Capability::Device(_)) {
                        "device:<name>".to_string()
                    } else {
                        needed.to_string()
                    };
                    bail!(
                        "process {process:?}: {which} imports `weft::{}`, which needs capability {grant:?}; it is not granted (add it to `capabilities` in the manifest)",
                        import.name
                    );
                }
            }
            WASI_MODULE => {
                if !spec.grants(&Capability::Wasi) {
                    bail!(
                        "process {process:?}: {which} imports `{WASI_MODULE}::{}`, which needs capability \"wasi\"; it is not granted (add it to `capabilities` in the manifest)",
                        import.name
                    );
                }
            }
            other => {
                if !spec.links.iter().any(|(n, _)| n == other) {
                    bail!(
                        "process {process:?}: {which} imports `{other}::{}` but no module is linked as {other:?} (add `link = {{ {other} = \"path.wasm\" }}`)",
                        import.name
                    );
                }
            }
        }
    }
    let min_memory: u64 = module
        .info
        .memories
        .iter()
        .filter(|m| !m.imported)
        .map(|m| m.min_bytes)
        .max()
        .unwrap_or(0);
    if min_memory > spec.memory {
        bail!(
            "process {process:?}: {which} needs at least {min_memory} bytes of memory but the process limit is {} (raise `memory`)",
            spec.memory
        );
    }
    if !spec.grants(&Capability::Wasi) {
        module
            .check_snapshotable()
            .with_context(|| format!("process {process:?}"))?;
    }
    if link_name.is_empty() && !spec.grants(&Capability::Wasi) {
        let has = |n: &str| module.info.exports.iter().any(|e| e.name == n);
        if spec.period.is_some() && !has(exports::TICK) {
            bail!(
                "process {process:?}: has a period but {which} does not export `{}`",
                exports::TICK
            );
        }
        if has(exports::MESSAGE) && !has(exports::ALLOC) {
            bail!(
                "process {process:?}: {which} exports `{}` but not `{}`",
                exports::MESSAGE,
                exports::ALLOC
            );
        }
    }
    Ok(())
}

/// The fixed exports the host drives.
struct Entry {
    init: Option<TypedFunc<(), ()>>,
    tick: Option<TypedFunc<i64, ()>>,
    message: Option<TypedFunc<(i32, i32, i32, i64), ()>>,
    alloc: Option<TypedFunc<i32, i32>>,
    start: Option<TypedFunc<(), ()>>,
}

/// Receives a process's guest log lines: (process, level, tag, text).
pub type LogSink = Arc<dyn Fn(&str, i32, Tag, &str) + Send + Sync>;

/// What a process needs from its node besides its program.
#[derive(Clone)]
pub struct ProcessEnv {
    pub seed: u64,
    pub inbox: Arc<Inbox>,
    pub devices: Devices,
    pub log_sink: Option<LogSink>,
    /// Where device samples go when the run is being recorded.
    pub recorder: Option<ProcessRecorder>,
}

/// The running-hash of everything a process published:
/// `h = SHA-256(h_prev ‖ tag ‖ port ‖ len ‖ payload)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HashChain(pub [u8; 32]);

impl HashChain {
    pub fn extend(&mut self, tag: Tag, output: &Output) {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(tag.0.to_le_bytes());
        h.update(output.port.to_le_bytes());
        h.update((output.payload.len() as u64).to_le_bytes());
        h.update(&output.payload);
        self.0 = h.finalize().into();
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// One live incarnation of a process.
pub struct Process {
    pub(crate) program: Arc<Program>,
    pub(crate) store: Store<Host>,
    pub(crate) instances: Vec<Instance>,
    entry: Entry,
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
        host.log_sink = env.log_sink;
        host.recorder = env.recorder;
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
                        Err(wasmtime::Error::msg(format!(
                            "deadline exceeded: call ran longer than {limit:?}"
                        )))
                    }
                    _ => Ok(UpdateDeadline::Yield(1)),
                }
            });
            store.set_epoch_deadline(1);
        }
        let is_async = program.is_async();
        let mut instances = Vec::with_capacity(program.modules.len());
        if let Some(pre) = &program.pre {
            let instance = if is_async {
                pre.instantiate_async(&mut store).await
            } else {
                pre.instantiate(&mut store)
            };
            instances.push(instance.map_err(|e| classify(&store, e.into()))?);
        } else {
            let mut linker = program.linker.clone();
            for (name, compiled) in &program.modules {
                let instance = if is_async {
                    linker.instantiate_async(&mut store, &compiled.module).await
                } else {
                    linker.instantiate(&mut store, &compiled.module)
                };
                let instance = instance.map_err(|e| classify(&store, e.into()))?;
                if !name.is_empty() {
                    linker
                        .instance(&mut store, name, instance)
                        .map_err(|e| Fault::instantiate(e.into()))?;
                }
                instances.push(instance);
            }
        }
        let main = *instances.last().unwrap();
        let points = &program.entry_points;
        let entry = Entry {
            init: entry(&mut store, main, &points.init),
            tick: entry(&mut store, main, &points.tick),
            message: entry(&mut store, main, &points.message),
            alloc: entry(&mut store, main, &points.alloc),
            start: entry(&mut store, main, &points.start),
        };
        Ok(Process {
            program,
            store,
            instances,
            entry,
            seq: 0,
            chain: HashChain::default(),
            last_tag: None,
            last_outputs: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
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

    fn begin(&mut self, tag: Tag) -> Result<(), Fault> {
        let host = self.store.data_mut();
        host.tag = tag;
        host.outbox.clear();
        host.call_started = Instant::now();
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
        CallReport {
            fuel_used,
            messages_in,
            outputs: std::mem::take(&mut self.store.data_mut().outbox),
        }
    }

    /// Runs `weft_init` if the module exports it.
    pub async fn init(&mut self) -> Result<CallReport, Fault> {
        self.begin(Tag::ZERO)?;
        if let Some(init) = self.entry.init.clone() {
            self.call(init, ()).await?;
        }
        Ok(self.end(0))
    }

    /// One release at `tag`: delivers every message visible at `tag` (when
    /// the module exports `weft_message`), then calls `weft_tick(tag)`.
    pub async fn tick(&mut self, tag: Tag) -> Result<CallReport, Fault> {
        self.begin(tag)?;
        let mut delivered = 0;
        if self.entry.message.is_some() {
            let inbox = self.store.data().inbox.clone();
            while let Some(message) = inbox.pop_visible(tag, None) {
                self.deliver(&message).await?;
                delivered += 1;
            }
        }
        if let Some(tick) = self.entry.tick.clone() {
            self.call(tick, tag.0 as i64).await?;
        }
        self.last_tag = Some(tag);
        Ok(self.end(delivered))
    }

    /// Handles one message at its own tag (message-driven processes).
    pub async fn message(&mut self, message: &Message) -> Result<CallReport, Fault> {
        self.begin(message.key.tag)?;
        self.deliver(message).await?;
        self.last_tag = Some(message.key.tag);
        Ok(self.end(1))
    }

    async fn deliver(&mut self, message: &Message) -> Result<(), Fault> {
        let (Some(alloc), Some(handler)) = (self.entry.alloc.clone(), self.entry.message.clone())
        else {
            return Ok(());
        };
        let len = message.payload.len() as i32;
        let ptr = self.call(alloc, len).await?;
        let memory = self
            .instances
            .last()
            .unwrap()
            .get_memory(&mut self.store, exports::FIRST_MEMORY);
        let Some(memory) = memory else {
            return Err(Fault {
                kind: FaultKind::Trap,
                message: "module exports weft_message but has no memory".into(),
            });
        };
        memory
            .write(&mut self.store, ptr as u32 as usize, &message.payload)
            .map_err(|_| Fault {
                kind: FaultKind::Trap,
                message: format!(
                    "weft_alloc({len}) returned {ptr:#x}, which is outside linear memory"
                ),
            })?;
        self.call(handler, (message.port, ptr, len, message.key.tag.0 as i64))
            .await
    }

    /// Runs a WASI command's `_start`; returns its exit code.
    pub async fn run_command(&mut self) -> Result<i32, Fault> {
        let Some(start) = self.entry.start.clone() else {
            return Err(Fault {
                kind: FaultKind::Instantiate,
                message: "module does not export `_start`; it is not a WASI command".into(),
            });
        };
        self.begin(Tag::ZERO)?;
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

    async fn call<P, R>(&mut self, func: TypedFunc<P, R>, params: P) -> Result<R, Fault>
    where
        P: wasmtime::WasmParams + Sync,
        R: wasmtime::WasmResults + Send + Sync,
    {
        let result = if self.program.is_async() {
            func.call_async(&mut self.store, params).await
        } else {
            func.call(&mut self.store, params)
        };
        result.map_err(|e| classify(&self.store, e.into()))
    }

    /// Assigns sequence numbers to a call's outputs, extends the hash chain
    /// and hands them to the router.
    pub fn publish(&mut self, router: &Router, tag: Tag, outputs: Vec<Output>) -> (u64, u64) {
        let (mut sent, mut refused) = (0, 0);
        for output in &outputs {
            self.seq += 1;
            self.chain.extend(tag, output);
            let delivery = router.publish(&self.program.spec.name, tag, self.seq, output);
            sent += 1;
            refused += delivery.refused;
        }
        self.last_outputs = outputs;
        (sent, refused)
    }
}

/// Turns a wasmtime error into a fault a user can act on.
fn classify(store: &Store<Host>, error: anyhow::Error) -> Fault {
    if let Some(reason) = &store.data().limiter.exceeded {
        return Fault {
            kind: FaultKind::MemoryLimit,
            message: reason.clone(),
        };
    }
    let text = format!("{error:#}");
    let kind = match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FaultKind::FuelExhausted,
        Some(Trap::StackOverflow) => FaultKind::StackOverflow,
        Some(_) => FaultKind::Trap,
        None if text.contains("deadline exceeded") => FaultKind::Deadline,
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
    Fault { kind, message }
}

/// The class a spec runs in decides its engine.
pub fn metering_for(class: Class) -> Metering {
    match class {
        Class::Rt => Metering::Fuel,
        Class::Be => Metering::Epoch,
    }
}
