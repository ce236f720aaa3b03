//! `weft inspect MODULE`: what a module imports and exports, its memory and
//! the capabilities a manifest must grant it.

use std::path::Path;

use anyhow::Result;
use weft_runtime::LoadedModule;

use crate::error::InputResult;
use crate::out::outln;

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let module = LoadedModule::from_file(path).bad_input()?;
    let info = &module.info;
    if json {
        outln!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    outln!("module     {}", path.display());
    outln!("digest     sha256:{}", info.digest);
    outln!("size       {} bytes", info.size_bytes);
    outln!("style      {}", info.style);
    let caps = if info.capabilities.is_empty() {
        "(none)".to_string()
    } else {
        info.capabilities.join(", ")
    };
    outln!("needs      {caps}");
    for m in &info.memories {
        let max = m
            .max_bytes
            .map_or("unbounded".to_string(), |b| format!("{b} bytes"));
        let origin = if m.imported { "imported" } else { "defined" };
        outln!("memory     {origin}, min {} bytes, max {max}", m.min_bytes);
    }
    outln!("imports ({}):", info.imports.len());
    for i in &info.imports {
        let cap = i
            .capability
            .as_deref()
            .map(|c| format!("  [needs {c}]"))
            .unwrap_or_default();
        outln!("  {:<6} {}::{}{cap}", i.kind, i.module, i.name);
    }
    outln!("exports ({}):", info.exports.len());
    for e in &info.exports {
        outln!("  {:<6} {}", e.kind, e.name);
    }
    if let Err(e) = module.check_snapshotable() {
        outln!("snapshot   not possible: {e}");
    } else {
        outln!("snapshot   ok ({} mutable globals)", info.mutable_globals);
    }
    Ok(())
}
