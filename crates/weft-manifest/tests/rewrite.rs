//! A manifest prints back as TOML, can have its module references
//! rewritten, and refuses settings the fabric could not carry.

use weft_manifest::{AppManifest, ModuleRef};
use weft_types::ModuleDigest;

const CELL: &str = include_str!("../../../examples/cluster-cell.toml");

#[test]
fn a_manifest_prints_back_to_the_same_manifest() {
    let manifest = AppManifest::parse(CELL, "cluster-cell.toml").unwrap();
    let text = manifest.to_toml();
    let again = AppManifest::parse(&text, "printed").unwrap();
    assert_eq!(again.to_toml(), text, "printing is stable");
    assert_eq!(
        format!("{:?}", again.processes),
        format!("{:?}", manifest.processes)
    );
    assert_eq!(again.connections.len(), manifest.connections.len());
    assert_eq!(again.seed, 42);
}

#[test]
fn module_references_are_rewritten_in_specs_and_text() {
    let mut manifest = AppManifest::parse(CELL, "cluster-cell.toml").unwrap();
    let refs = manifest.module_refs();
    assert_eq!(refs.len(), 4);
    assert_eq!(refs[0].0, "process \"pid\": module");
    assert_eq!(refs[0].1, ModuleRef::Path("wasm/pid.wasm".into()));
    let digest = ModuleDigest([9; 32]);
    manifest
        .rewrite_modules(|_, _| Ok::<_, ()>(ModuleRef::Digest(digest)))
        .unwrap();
    assert!(
        manifest
            .processes
            .iter()
            .all(|p| p.module == ModuleRef::Digest(digest))
    );
    let text = manifest.to_toml();
    assert!(text.contains(&format!("sha256:{digest}")), "{text}");
    assert!(!text.contains("wasm/pid.wasm"), "{text}");
    let again = AppManifest::parse(&text, "rewritten").unwrap();
    assert_eq!(again.processes[0].module, ModuleRef::Digest(digest));
    let failed = manifest.rewrite_modules(|entry, _| Err(entry.to_string()));
    assert_eq!(failed, Err("process \"pid\": module".to_string()));
}

#[test]
fn settings_the_fabric_cannot_carry_are_refused_with_the_limit() {
    let process = |extra: &str| {
        format!("name = \"big\"\n[[process]]\nname = \"p\"\nmodule = \"p.wasm\"\n{extra}\n")
    };
    let cases = [
        (
            "memory = \"1GiB\"",
            "the largest memory a node gives a process",
        ),
        (
            "max_message = \"32MiB\"",
            "the largest message the fabric carries",
        ),
        ("mailbox = 100000000", "the deepest mailbox"),
        (
            "max_message = \"16MiB\"\nmailbox = 1024",
            "does not fit in a checkpoint",
        ),
    ];
    for (extra, needle) in cases {
        let err = AppManifest::parse(&process(extra), "big.toml")
            .err()
            .unwrap_or_else(|| panic!("{extra} should be refused"))
            .to_string();
        assert!(
            err.contains("process #1 (\"p\")") && err.contains(needle),
            "{extra}: {err}"
        );
    }
    // A WASI command is never checkpointed, so its mailbox may be deep.
    let wasi = process("capabilities = [\"wasi\"]\nmax_message = \"16MiB\"\nmailbox = 1024");
    assert!(AppManifest::parse(&wasi, "wasi.toml").is_ok());
}
