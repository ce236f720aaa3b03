//! Loading a module: read, validate, check that weft can run it safely,
//! describe it, and rewrite it so snapshots can reach all of its state.
//!
//! Everything here works on bytes and needs no engine; compilation and the
//! artefact cache live in `engine.rs`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wasm_encoder::{ExportKind, ExportSection, RawSection};
use wasmparser::{
    ExportSectionReader, ExternalKind, GlobalSectionReader, ImportSectionReader,
    MemorySectionReader, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures,
};
use weft_abi::{Capability, IMPORT_MODULE, Needs, WASI_MODULE, exports};
use weft_manifest::{ModuleRef, ModuleSource};
use weft_types::ModuleDigest;

/// Bumped whenever the rewrite changes, so cached artefacts of an older
/// rewrite are never reused.
pub(crate) const REWRITE_VERSION: u32 = 1;

/// What a module looks like from the outside: `weft inspect` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    pub digest: String,
    pub size_bytes: usize,
    pub imports: Vec<ImportInfo>,
    pub exports: Vec<ExportInfo>,
    pub memories: Vec<MemoryInfo>,
    /// Capabilities the manifest must grant for this module to start.
    pub capabilities: Vec<String>,
    /// Imports from modules other than `weft` and WASI: satisfied by linking.
    pub link_imports: Vec<String>,
    /// `reactor` (exports weft_tick / weft_message), `command` (WASI `_start`) or `library`.
    pub style: &'static str,
    pub has_start_function: bool,
    pub mutates_tables: bool,
    pub mutable_globals: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportInfo {
    pub module: String,
    pub name: String,
    pub kind: &'static str,
    /// The capability that grants it, when it is a weft or WASI import.
    pub capability: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportInfo {
    pub name: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryInfo {
    pub imported: bool,
    pub min_bytes: u64,
    pub max_bytes: Option<u64>,
    pub shared: bool,
    pub memory64: bool,
}

/// A module that passed every check, with its rewritten bytes.
#[derive(Debug, Clone)]
pub struct LoadedModule {
    pub info: ModuleInfo,
    pub digest: ModuleDigest,
    /// The module with every mutable global and memory exported.
    pub(crate) rewritten: Vec<u8>,
}

/// The deterministic feature set: the same one the engine is configured with.
pub(crate) fn features() -> WasmFeatures {
    let mut features = WasmFeatures::default();
    features.remove(WasmFeatures::THREADS);
    features.remove(WasmFeatures::SHARED_EVERYTHING_THREADS);
    features.remove(WasmFeatures::RELAXED_SIMD);
    features
}

impl LoadedModule {
    /// Reads a `.wasm` (or `.wat`) file and checks it.
    pub fn from_file(path: &Path) -> Result<LoadedModule> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read module {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".into());
        Self::from_bytes(&name, &bytes).with_context(|| format!("module {}", path.display()))
    }

    /// Reads the module `module` names from `source` and checks it. A
    /// digest reference must name exactly these bytes.
    pub fn from_source(source: &dyn ModuleSource, module: &ModuleRef) -> Result<LoadedModule> {
        let bytes = source.read(module)?;
        let loaded = Self::from_bytes(&module.label(), &bytes)
            .with_context(|| format!("module {module}"))?;
        if let Some(expected) = module.digest()
            && expected != loaded.digest
        {
            bail!(
                "module {module} has digest {} here: the module store is corrupt",
                loaded.digest
            );
        }
        Ok(loaded)
    }

    /// Checks a module given as binary or text.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<LoadedModule> {
        let binary = weft_manifest::module::binary(bytes)?;
        let digest = weft_manifest::module::digest(&binary);
        let scan = scan(name, &binary, digest)?;
        Validator::new_with_features(features())
            .validate_all(&binary)
            .map_err(|e| anyhow::anyhow!("invalid WebAssembly: {e}"))?;
        let rewritten = export_state(&binary, &scan.mutable_globals, scan.memories)?;
        Ok(LoadedModule {
            info: scan.info,
            digest,
            rewritten,
        })
    }

    /// Refuses what would make a snapshot of this module incomplete.
    pub fn check_snapshotable(&self) -> Result<()> {
        if self.info.has_start_function {
            bail!(
                "module {:?} has a wasm `start` function; it would run again on restore. \
                 Export `weft_init` instead",
                self.info.name
            );
        }
        if self.info.mutates_tables {
            bail!(
                "module {:?} mutates tables at run time (table.set/grow/fill/copy/init); \
                 weft cannot snapshot table contents",
                self.info.name
            );
        }
        Ok(())
    }
}

struct Scan {
    info: ModuleInfo,
    /// Global indices (in the global index space) of defined mutable globals.
    mutable_globals: Vec<u32>,
    /// Total number of memories (imported and defined).
    memories: u32,
}

fn kind_name(kind: ExternalKind) -> &'static str {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => "func",
        ExternalKind::Table => "table",
        ExternalKind::Memory => "memory",
        ExternalKind::Global => "global",
        ExternalKind::Tag => "tag",
    }
}

fn memory_info(ty: &wasmparser::MemoryType, imported: bool) -> MemoryInfo {
    let page = 1u64 << ty.page_size_log2.unwrap_or(16);
    MemoryInfo {
        imported,
        min_bytes: ty.initial.saturating_mul(page),
        max_bytes: ty.maximum.map(|m| m.saturating_mul(page)),
        shared: ty.shared,
        memory64: ty.memory64,
    }
}

/// One pass over the module: structure, imports, exports, and the checks
/// that need the code (table mutation).
fn scan(name: &str, bytes: &[u8], digest: ModuleDigest) -> Result<Scan> {
    let sections = Sections::read(bytes)?;
    check_memories(&sections.memories)?;
    let memories = sections.memories.len() as u32;
    let info = ModuleInfo {
        name: name.to_string(),
        digest: digest.to_string(),
        size_bytes: bytes.len(),
        capabilities: needed_capabilities(&sections.imports),
        link_imports: link_imports(&sections.imports),
        style: style(&sections.exports),
        imports: sections.imports,
        exports: sections.exports,
        memories: sections.memories,
        has_start_function: sections.has_start_function,
        mutates_tables: sections.mutates_tables,
        mutable_globals: sections.mutable_globals.len() as u32,
    };
    Ok(Scan {
        info,
        mutable_globals: sections.mutable_globals,
        memories,
    })
}

/// What the pass over the module's sections collects.
#[derive(Default)]
struct Sections {
    imports: Vec<ImportInfo>,
    exports: Vec<ExportInfo>,
    memories: Vec<MemoryInfo>,
    /// Imported globals come first in the global index space.
    imported_globals: u32,
    mutable_globals: Vec<u32>,
    has_start_function: bool,
    mutates_tables: bool,
}

impl Sections {
    fn read(bytes: &[u8]) -> Result<Sections> {
        let mut sections = Sections::default();
        for payload in Parser::new(0).parse_all(bytes) {
            let payload = payload.map_err(|e| anyhow::anyhow!("malformed module: {e}"))?;
            match payload {
                Payload::ImportSection(reader) => sections.imports(reader)?,
                Payload::MemorySection(reader) => sections.memories(reader)?,
                Payload::GlobalSection(reader) => sections.globals(reader)?,
                Payload::ExportSection(reader) => sections.exports(reader)?,
                Payload::StartSection { .. } => sections.has_start_function = true,
                Payload::CodeSectionEntry(body) if !sections.mutates_tables => {
                    sections.mutates_tables = body_mutates_tables(&body)?;
                }
                _ => {}
            }
        }
        Ok(sections)
    }

    fn imports(&mut self, reader: ImportSectionReader<'_>) -> Result<()> {
        for import in reader.into_imports() {
            let import = import.map_err(|e| anyhow::anyhow!("malformed import section: {e}"))?;
            let kind = match import.ty {
                TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                TypeRef::Table(_) => "table",
                TypeRef::Memory(ty) => {
                    self.memories.push(memory_info(&ty, true));
                    "memory"
                }
                TypeRef::Global(_) => {
                    self.imported_globals += 1;
                    "global"
                }
                TypeRef::Tag(_) => "tag",
            };
            self.imports.push(ImportInfo {
                module: import.module.to_string(),
                name: import.name.to_string(),
                kind,
                capability: import_capability(import.module, import.name).map(|c| c.to_string()),
            });
        }
        Ok(())
    }

    fn memories(&mut self, reader: MemorySectionReader<'_>) -> Result<()> {
        for ty in reader {
            let ty = ty.map_err(|e| anyhow::anyhow!("malformed memory section: {e}"))?;
            self.memories.push(memory_info(&ty, false));
        }
        Ok(())
    }

    fn globals(&mut self, reader: GlobalSectionReader<'_>) -> Result<()> {
        for (i, global) in reader.into_iter().enumerate() {
            let global = global.map_err(|e| anyhow::anyhow!("malformed global section: {e}"))?;
            if global.ty.mutable {
                self.mutable_globals.push(self.imported_globals + i as u32);
            }
        }
        Ok(())
    }

    fn exports(&mut self, reader: ExportSectionReader<'_>) -> Result<()> {
        for export in reader {
            let export = export.map_err(|e| anyhow::anyhow!("malformed export section: {e}"))?;
            self.exports.push(ExportInfo {
                name: export.name.to_string(),
                kind: kind_name(export.kind),
            });
        }
        Ok(())
    }
}

fn check_memories(memories: &[MemoryInfo]) -> Result<()> {
    if memories.iter().any(|m| m.shared) {
        bail!(
            "uses shared memory (the threads proposal); weft processes are single-threaded and deterministic"
        );
    }
    if memories.iter().any(|m| m.memory64) {
        bail!("uses a 64-bit memory (memory64); weft runs wasm32 modules only");
    }
    Ok(())
}

/// Imports from modules other than `weft` and WASI, as `module::name`.
fn link_imports(imports: &[ImportInfo]) -> Vec<String> {
    imports
        .iter()
        .filter(|i| i.module != IMPORT_MODULE && i.module != WASI_MODULE)
        .map(|i| format!("{}::{}", i.module, i.name))
        .collect()
}

fn style(module_exports: &[ExportInfo]) -> &'static str {
    let exported = |n: &str| module_exports.iter().any(|e| e.name == n);
    if exported(exports::TICK) || exported(exports::MESSAGE) || exported(exports::INIT) {
        "reactor"
    } else if exported(exports::START) {
        "command"
    } else {
        "library"
    }
}

fn import_capability(module: &str, name: &str) -> Option<Needs> {
    match module {
        IMPORT_MODULE => Capability::for_import(name),
        WASI_MODULE => Some(Needs::Capability(Capability::Wasi)),
        _ => None,
    }
}

fn needed_capabilities(imports: &[ImportInfo]) -> Vec<String> {
    let mut caps: Vec<String> = imports
        .iter()
        .filter_map(|i| i.capability.clone())
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

fn body_mutates_tables(body: &wasmparser::FunctionBody<'_>) -> Result<bool> {
    let mut reader = body
        .get_operators_reader()
        .map_err(|e| anyhow::anyhow!("malformed function body: {e}"))?;
    while !reader.eof() {
        let op = reader
            .read()
            .map_err(|e| anyhow::anyhow!("malformed function body: {e}"))?;
        if matches!(
            op,
            Operator::TableSet { .. }
                | Operator::TableGrow { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. }
        ) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Re-emits the module section by section, unchanged, except that the export
/// section gains `weft:global:<i>` for every defined mutable global and
/// `weft:memory:<i>` for every memory. Sections are copied raw, so code and
/// data bytes are untouched.
fn export_state(bytes: &[u8], mutable_globals: &[u32], memories: u32) -> Result<Vec<u8>> {
    // Section ids that must come after the export section.
    const AFTER_EXPORT: [u8; 5] = [8, 9, 10, 11, 12];
    const EXPORT_SECTION: u8 = 7;

    let mut extra = ExportSection::new();
    append_exports(&mut extra, mutable_globals, memories);

    let mut out = wasm_encoder::Module::new();
    let mut exports_written = false;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload?;
        if let Payload::ExportSection(reader) = &payload {
            let mut section = ExportSection::new();
            for export in reader.clone() {
                let export = export?;
                let kind = match export.kind {
                    ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
                    ExternalKind::Table => ExportKind::Table,
                    ExternalKind::Memory => ExportKind::Memory,
                    ExternalKind::Global => ExportKind::Global,
                    ExternalKind::Tag => ExportKind::Tag,
                };
                section.export(export.name, kind, export.index);
            }
            append_exports(&mut section, mutable_globals, memories);
            out.section(&section);
            exports_written = true;
            continue;
        }
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        if !exports_written && AFTER_EXPORT.contains(&id) {
            out.section(&extra);
            exports_written = true;
        }
        debug_assert_ne!(id, EXPORT_SECTION);
        out.section(&RawSection {
            id,
            data: &bytes[range],
        });
    }
    if !exports_written {
        out.section(&extra);
    }
    Ok(out.finish())
}

fn append_exports(section: &mut ExportSection, mutable_globals: &[u32], memories: u32) {
    for &g in mutable_globals {
        section.export(
            &format!("{}{g}", exports::SNAPSHOT_GLOBAL_PREFIX),
            ExportKind::Global,
            g,
        );
    }
    for m in 0..memories {
        section.export(
            &format!("{}{m}", exports::SNAPSHOT_MEMORY_PREFIX),
            ExportKind::Memory,
            m,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(wat: &str) -> Result<LoadedModule> {
        LoadedModule::from_bytes("test", wat.as_bytes())
    }

    #[test]
    fn empty_module_is_valid() {
        let m = load("(module)").unwrap();
        assert_eq!(m.info.style, "library");
        assert!(m.info.imports.is_empty());
    }

    #[test]
    fn mutable_globals_and_memories_are_exported() {
        let m = load(
            r#"(module
                (global $sp (mut i32) (i32.const 1024))
                (global $k i32 (i32.const 7))
                (global $c (mut i64) (i64.const 0))
                (memory 1)
                (func (export "weft_tick") (param i64) (global.set $c (local.get 0))))"#,
        )
        .unwrap();
        let rewritten = LoadedModule::from_bytes("again", &m.rewritten).unwrap();
        let names: Vec<_> = rewritten
            .info
            .exports
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "weft_tick",
                "weft:global:0",
                "weft:global:2",
                "weft:memory:0"
            ]
        );
        assert_eq!(m.info.mutable_globals, 2);
    }

    #[test]
    fn shared_memory_is_refused() {
        let err = load("(module (memory 1 1 shared))").unwrap_err();
        assert!(format!("{err:#}").contains("shared memory"), "{err:#}");
    }

    #[test]
    fn malformed_binary_is_refused() {
        let err = LoadedModule::from_bytes("junk", b"\0asm\x01\0\0\0\x05\xff\xff").unwrap_err();
        assert!(format!("{err:#}").contains("malformed"), "{err:#}");
        let err = LoadedModule::from_bytes("junk", b"hello").unwrap_err();
        assert!(
            format!("{err:#}").contains("not a WebAssembly binary"),
            "{err:#}"
        );
    }

    #[test]
    fn table_mutation_and_start_are_not_snapshotable() {
        let m = load(
            r#"(module (table 1 funcref) (func $f)
                (func (export "weft_tick") (param i64) (table.set 0 (i32.const 0) (ref.func $f)))
                (elem declare func $f))"#,
        )
        .unwrap();
        assert!(
            m.check_snapshotable()
                .unwrap_err()
                .to_string()
                .contains("mutates tables")
        );
        let m = load("(module (func $s) (start $s))").unwrap();
        assert!(
            m.check_snapshotable()
                .unwrap_err()
                .to_string()
                .contains("start")
        );
    }

    #[test]
    fn capabilities_are_derived_from_imports() {
        let m = load(
            r#"(module
                (import "weft" "log" (func (param i32 i32 i32)))
                (import "weft" "send" (func (param i32 i32 i32) (result i32)))
                (import "weft" "device_read" (func (param i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "mathlib" "add" (func (param i32 i32) (result i32))))"#,
        )
        .unwrap();
        assert_eq!(m.info.capabilities, ["device:*", "log", "ports", "wasi"]);
        assert_eq!(m.info.link_imports, ["mathlib::add"]);
    }
}
