//! A process's program: its modules loaded, checked against the grants of
//! its spec, compiled for the engine of its class and pre-linked. Every
//! incarnation of the process (restarts, restores, replicas) instantiates
//! the same program, so none of them loads or compiles again.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use wasmtime::{ExternType, InstancePre, Linker, Module, ModuleExport, ValType};
use weft_abi::{Capability, IMPORT_MODULE, Needs, WASI_MODULE, exports};
use weft_manifest::{Class, ModuleSource, ProcessSpec};
use weft_types::ModuleDigest;

use crate::engine::{CompiledModule, Metering, WeftEngine};
use crate::host::Host;
use crate::module::LoadedModule;

/// The compiled form of a process, shared by all of its incarnations
/// (restarts, restores) so none of them compiles again.
pub struct Program {
    pub spec: Arc<ProcessSpec>,
    pub engine: WeftEngine,
    /// Linked library modules in instantiation order, then the main module.
    pub(crate) modules: Vec<(String, CompiledModule)>,
    /// Pre-resolved imports of a single-module process.
    pub(crate) pre: Option<InstancePre<Host>>,
    /// Shared with every program of the node; a process of linked modules
    /// clones it to add its libraries.
    pub(crate) linker: Arc<Linker<Host>>,
    /// The main module's entry points, resolved once (lookups by index, not name).
    pub(crate) entry_points: EntryPoints,
}

/// Export indices of the fixed entry points in the main module.
#[derive(Default)]
pub(crate) struct EntryPoints {
    pub(crate) init: Option<ModuleExport>,
    pub(crate) tick: Option<ModuleExport>,
    pub(crate) message: Option<ModuleExport>,
    pub(crate) alloc: Option<ModuleExport>,
    pub(crate) start: Option<ModuleExport>,
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

impl Program {
    /// Loads and checks every module of `spec` and compiles it for `engine`.
    /// Every problem is reported here, before anything runs.
    pub fn prepare(
        spec: Arc<ProcessSpec>,
        source: &dyn ModuleSource,
        engine: &WeftEngine,
        linker: &Arc<Linker<Host>>,
    ) -> Result<Program> {
        let process = &spec.name;
        engine.check_limits(&spec)?;
        let mut modules = Vec::new();
        for (name, module) in spec
            .links
            .iter()
            .map(|(n, m)| (n.as_str(), m))
            .chain([("", &spec.module)])
        {
            let loaded = LoadedModule::from_source(source, module)
                .with_context(|| format!("process {process:?}"))?;
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
                        format!("process {process:?}: cannot link module {}", spec.module)
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

    /// True when every artefact came from the compiled-module cache.
    pub fn from_cache(&self) -> bool {
        self.modules.iter().all(|(_, m)| m.from_cache)
    }

    pub(crate) fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// The digests of every module, in link order.
    pub fn module_digests(&self) -> Vec<ModuleDigest> {
        (0..self.module_count())
            .map(|i| self.module_digest(i))
            .collect()
    }

    pub(crate) fn module_digest(&self, index: usize) -> ModuleDigest {
        self.modules[index].1.loaded.digest
    }

    pub(crate) fn is_async(&self) -> bool {
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
    check_imports(spec, &which, module)?;
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
    // A WASI process is never snapshotted, and may be a command (`_start`)
    // rather than a reactor.
    if !spec.grants(&Capability::Wasi) {
        module
            .check_snapshotable()
            .with_context(|| format!("process {process:?}"))?;
        if link_name.is_empty() {
            check_entry_points(spec, &which, module)?;
        }
    }
    Ok(())
}

/// Every import must be a host function the spec grants, or come from a
/// linked module.
fn check_imports(spec: &ProcessSpec, which: &str, module: &LoadedModule) -> Result<()> {
    let process = &spec.name;
    for import in &module.info.imports {
        match import.module.as_str() {
            IMPORT_MODULE => {
                let Some(needed) = Capability::for_import(&import.name) else {
                    bail!(
                        "process {process:?}: {which} imports `weft::{}`, which is not a weft host function (see docs/abi.md)",
                        import.name
                    );
                };
                if !spec.satisfies(&needed) {
                    let grant = match needed {
                        Needs::AnyDevice => "device:<name>".to_string(),
                        Needs::Capability(c) => c.to_string(),
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
    Ok(())
}

/// The main module of a reactor must export what its spec will call.
fn check_entry_points(spec: &ProcessSpec, which: &str, module: &LoadedModule) -> Result<()> {
    let process = &spec.name;
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
    Ok(())
}

/// The class a spec runs in decides its engine.
pub fn metering_for(class: Class) -> Metering {
    match class {
        Class::Rt => Metering::Fuel,
        Class::Be => Metering::Epoch,
    }
}
