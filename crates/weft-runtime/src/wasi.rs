//! WASI preview 1 for command-style modules, granted by the `wasi`
//! capability: arguments, environment, stdio and only the directories the
//! manifest (or `weft run --dir`) preopens.

use anyhow::{Context, Result};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder, p1::WasiP1Ctx};
use weft_manifest::ProcessSpec;

pub(crate) fn context(spec: &ProcessSpec) -> Result<WasiP1Ctx> {
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdout().inherit_stderr();
    builder.arg(&spec.name).args(&spec.args);
    for (key, value) in &spec.env {
        builder.env(key, value);
    }
    for dir in &spec.dirs {
        builder
            .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "process {:?}: cannot preopen directory {}",
                    spec.name,
                    dir.host.display()
                )
            })?;
    }
    Ok(builder.build_p1())
}
