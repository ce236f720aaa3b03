//! Module references and module bytes.
//!
//! A manifest names each module by a [`ModuleRef`]: a file path, as a user
//! writes it, or a content digest (`sha256:<hex>`), as the cluster keeps
//! it. `weft deploy` reads the files, turns them into binary, digests them
//! and rewrites the manifest to digests; the controller and the nodes see
//! only digests.
//!
//! [`digest`] is the one definition of a module's identity, and
//! [`binary`] the one conversion from text format: everything that names a
//! module (the CLI, the controller, the agent, the runtime, the artefact
//! cache, snapshots, recordings) goes through these two functions.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use weft_types::{DigestError, ModuleDigest, limits};

/// The prefix of a digest reference.
pub const DIGEST_PREFIX: &str = "sha256:";

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModuleRef {
    /// A file: relative to the manifest's directory until
    /// [`AppManifest::resolve_paths`](crate::AppManifest::resolve_paths).
    Path(PathBuf),
    /// Content in a module store, by digest (`sha256:<hex>`).
    Digest(ModuleDigest),
}

impl ModuleRef {
    /// A short name for messages and for the module's `name` in reports.
    pub fn label(&self) -> String {
        match self {
            ModuleRef::Path(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            ModuleRef::Digest(d) => format!("{DIGEST_PREFIX}{}", d.short()),
        }
    }

    pub fn digest(&self) -> Option<ModuleDigest> {
        match self {
            ModuleRef::Digest(d) => Some(*d),
            ModuleRef::Path(_) => None,
        }
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Path(p) => write!(f, "{}", p.display()),
            ModuleRef::Digest(d) => write!(f, "{DIGEST_PREFIX}{d}"),
        }
    }
}

impl FromStr for ModuleRef {
    type Err = DigestError;
    /// `sha256:<64 hex digits>` is a digest; anything else is a path.
    fn from_str(text: &str) -> Result<ModuleRef, DigestError> {
        match text.strip_prefix(DIGEST_PREFIX) {
            Some(hex) => hex.parse().map(ModuleRef::Digest),
            None => Ok(ModuleRef::Path(PathBuf::from(text))),
        }
    }
}

/// Why a module's bytes cannot be had or used.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read module {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {0} is not in the module store")]
    Missing(ModuleDigest),
    #[error("module {module} cannot be read from {source_name}: {why}")]
    Unsupported {
        module: String,
        source_name: &'static str,
        why: &'static str,
    },
    #[error("not a WebAssembly binary, and not valid text format either: {0}")]
    NotWasm(String),
    #[error("module of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
}

/// The binary form of a module given as binary or as text format.
pub fn binary(bytes: &[u8]) -> Result<Cow<'_, [u8]>, ModuleError> {
    let binary = if bytes.starts_with(b"\0asm") {
        Cow::Borrowed(bytes)
    } else {
        let parsed = wat::parse_bytes(bytes).map_err(|e| ModuleError::NotWasm(e.to_string()))?;
        Cow::Owned(parsed.into_owned())
    };
    if binary.len() as u64 > limits::MAX_MODULE {
        return Err(ModuleError::TooLarge {
            size: binary.len() as u64,
            limit: limits::MAX_MODULE,
        });
    }
    Ok(binary)
}

/// The identity of a module: SHA-256 of its binary form (see [`binary`]).
pub fn digest(binary: &[u8]) -> ModuleDigest {
    ModuleDigest(Sha256::digest(binary).into())
}

/// Where the bytes of a manifest's modules come from.
pub trait ModuleSource: Send + Sync {
    /// The bytes (binary or text format) of the module `module` names.
    fn read(&self, module: &ModuleRef) -> Result<Vec<u8>, ModuleError>;
}

/// Module files on this machine (a local `weft run`, `weft deploy`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Files;

impl ModuleSource for Files {
    fn read(&self, module: &ModuleRef) -> Result<Vec<u8>, ModuleError> {
        match module {
            ModuleRef::Path(path) => std::fs::read(path).map_err(|source| ModuleError::Read {
                path: path.clone(),
                source,
            }),
            ModuleRef::Digest(_) => Err(ModuleError::Unsupported {
                module: module.to_string(),
                source_name: "files",
                why: "a digest names a module uploaded to a cluster; run it with `weft deploy`",
            }),
        }
    }
}

/// A directory of modules stored by digest (`<hex>.wasm`), as a node keeps
/// what it fetched from the controller.
#[derive(Debug, Clone)]
pub struct DigestDir {
    dir: PathBuf,
}

impl DigestDir {
    pub fn new(dir: impl Into<PathBuf>) -> DigestDir {
        DigestDir { dir: dir.into() }
    }

    pub fn path_of(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{digest}.wasm"))
    }

    pub fn contains(&self, digest: &ModuleDigest) -> bool {
        self.path_of(digest).is_file()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `bytes` as the module `digest`, if they are that module.
    /// Written to a temporary name, then renamed, so a reader never sees
    /// half a module.
    pub fn store(&self, digest: &ModuleDigest, bytes: &[u8]) -> Result<(), String> {
        let actual = digest_of_any(bytes)?;
        if actual != *digest {
            return Err(format!(
                "module sent as {digest} has digest {actual} ({} bytes): corrupted or mislabelled",
                bytes.len()
            ));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.path_of(digest);
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot store module {}: {e}", path.display()))
    }
}

/// The digest of a module given as binary or text.
pub fn digest_of_any(bytes: &[u8]) -> Result<ModuleDigest, String> {
    binary(bytes).map(|b| digest(&b)).map_err(|e| e.to_string())
}

impl ModuleSource for DigestDir {
    fn read(&self, module: &ModuleRef) -> Result<Vec<u8>, ModuleError> {
        match module {
            ModuleRef::Digest(d) => {
                std::fs::read(self.path_of(d)).map_err(|source| match source.kind() {
                    std::io::ErrorKind::NotFound => ModuleError::Missing(*d),
                    _ => ModuleError::Read {
                        path: self.path_of(d),
                        source,
                    },
                })
            }
            ModuleRef::Path(_) => Err(ModuleError::Unsupported {
                module: module.to_string(),
                source_name: "the module store",
                why: "a cluster keeps modules by digest; deploy through `weft deploy`, which uploads them",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_and_print() {
        let d = digest(b"\0asm\x01\0\0\0");
        let text = format!("sha256:{d}");
        assert_eq!(text.parse::<ModuleRef>().unwrap(), ModuleRef::Digest(d));
        assert_eq!(ModuleRef::Digest(d).to_string(), text);
        assert_eq!(
            "wasm/pid.wasm".parse::<ModuleRef>().unwrap(),
            ModuleRef::Path("wasm/pid.wasm".into())
        );
        assert!("sha256:nothex".parse::<ModuleRef>().is_err());
        assert_eq!(ModuleRef::Path("a/pid.wasm".into()).label(), "pid");
    }

    #[test]
    fn text_and_binary_forms_have_one_digest() {
        let text = b"(module)";
        let wasm = binary(text).unwrap().into_owned();
        assert!(wasm.starts_with(b"\0asm"));
        assert_eq!(digest_of_any(text).unwrap(), digest(&wasm));
        assert!(matches!(binary(b"garbage"), Err(ModuleError::NotWasm(_))));
    }

    #[test]
    fn the_digest_store_refuses_mislabelled_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = DigestDir::new(dir.path());
        let wasm = binary(b"(module)").unwrap().into_owned();
        let d = digest(&wasm);
        let wrong = digest(b"other");
        assert!(
            store
                .store(&wrong, &wasm)
                .unwrap_err()
                .contains("mislabelled")
        );
        assert!(matches!(
            store.read(&ModuleRef::Digest(d)),
            Err(ModuleError::Missing(_))
        ));
        store.store(&d, &wasm).unwrap();
        assert_eq!(store.read(&ModuleRef::Digest(d)).unwrap(), wasm);
        assert!(store.read(&ModuleRef::Path("x.wasm".into())).is_err());
    }
}
