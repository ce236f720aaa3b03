//! `weft inspect MODULE`: what a module imports and exports, its memory and
//! the capabilities a manifest must grant it.

use std::path::Path;

use anyhow::Result;
use weft_runtime::LoadedModule;

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let module = LoadedModule::from_file(path)?;
    let info = &module.info;
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    println!("module     {}", path.display());
    println!("digest     sha256:{}", info.digest);
    println!("size       {} bytes", info.size_bytes);
    println!("style      {}", info.style);
    let caps = if info.capabilities.is_empty() {
        "(none)".to_string()
    } else {
        info.capabilities.join(", ")
    };
    println!("needs      {caps}");
    for m in &info.memories {
        let max = m
            .max_bytes
            .map_or("unbounded".to_string(), |b| format!("{b} bytes"));
        let origin = if m.imported { "imported" } else { "defined" };
        println!("memory     {origin}, min {} bytes, max {max}", m.min_bytes);
    }
    println!("imports ({}):", info.imports.len());
    for i in &info.imports {
        let cap = i
            .capability
            .as_deref()
            .map(|c| format!("  [needs {c}]"))
            .unwrap_or_default();
        println!("  {:<6} {}::{}{cap}", i.kind, i.module, i.name);
    }
    println!("exports ({}):", info.exports.len());
    for e in &info.exports {
        println!("  {:<6} {}", e.kind, e.name);
    }
    if let Err(e) = module.check_snapshotable() {
        println!("snapshot   not possible: {e}");
    } else {
        println!("snapshot   ok ({} mutable globals)", info.mutable_globals);
    }
    Ok(())
}
