//! A deploy bundle from a manifest file: the manifest validated, every
//! module it names read, turned into binary and digested, and the
//! manifest rewritten to name its modules by digest. What the controller
//! and the nodes see is only that.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use weft_fabric::codec::DeployBundle;
use weft_manifest::module::{self, Files};
use weft_manifest::{AppManifest, ModuleRef, ModuleSource};

/// The bundle that deploys the manifest at `path`.
pub fn bundle(path: &Path) -> Result<DeployBundle> {
    let mut manifest = AppManifest::load(path)?;
    let mut modules = BTreeMap::new();
    manifest.rewrite_modules(|entry, reference| -> Result<ModuleRef> {
        let context = || format!("{}: {entry}", path.display());
        let bytes = Files.read(reference).with_context(context)?;
        let binary = module::binary(&bytes).with_context(context)?.into_owned();
        let digest = module::digest(&binary);
        modules.insert(digest, binary);
        Ok(ModuleRef::Digest(digest))
    })?;
    Ok(DeployBundle {
        manifest: manifest.to_toml(),
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_travel_as_binary_named_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.wat"), "(module (memory 1))").unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(
            &path,
            "name = \"a\"\n[[process]]\nname = \"p\"\nmodule = \"m.wat\"\n\
             [[process]]\nname = \"q\"\nmodule = \"m.wat\"\n",
        )
        .unwrap();
        let bundle = bundle(&path).unwrap();
        assert_eq!(bundle.modules.len(), 1, "one module, named twice");
        let (digest, bytes) = bundle.modules.iter().next().unwrap();
        assert!(bytes.starts_with(b"\0asm"), "text format is sent as binary");
        assert_eq!(module::digest(bytes), *digest);
        let manifest = AppManifest::parse(&bundle.manifest, "sent").unwrap();
        assert!(
            manifest
                .module_refs()
                .iter()
                .all(|(_, r)| *r == ModuleRef::Digest(*digest))
        );
        std::fs::remove_file(dir.path().join("m.wat")).unwrap();
        let err = super::bundle(&path).unwrap_err();
        assert!(format!("{err:#}").contains("not found"), "{err:#}");
    }
}
