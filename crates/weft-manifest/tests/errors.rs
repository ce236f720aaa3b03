//! Every manifest mistake is reported against the entry it is in.

use std::path::Path;

use tempfile::tempdir;
use weft_manifest::{AppManifest, Class, MissPolicy, RestartPolicy};

/// Parses `text` as `dir/app.toml` would be loaded: validated, module
/// files checked.
fn parse(dir: &Path, text: &str) -> Result<AppManifest, String> {
    let path = dir.join("app.toml");
    std::fs::write(&path, text).unwrap();
    AppManifest::load(&path).map_err(|e| e.to_string())
}

fn with_module(
    extra_process: &str,
    rest: &str,
) -> (tempfile::TempDir, Result<AppManifest, String>) {
    let dir = tempdir().unwrap();
    std::fs::write(dir.path().join("m.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let text = format!(
        "name = \"app\"\n[[process]]\nname = \"a\"\nmodule = \"m.wasm\"\noutputs = [\"out\"]\n\
         [[process]]\nname = \"b\"\nmodule = \"m.wasm\"\ninputs = [\"in\"]\n{extra_process}\n{rest}"
    );
    let result = parse(dir.path(), &text);
    (dir, result)
}

#[test]
fn a_valid_manifest_gets_defaults() {
    let (_d, m) = with_module(
        "class = \"rt\"\nperiod = \"10ms\"\nrestart = \"on-failure\"",
        "[[connection]]\nfrom = \"a.out\"\nto = \"b.in\"",
    );
    let m = m.unwrap();
    let b = m.process("b").unwrap();
    assert_eq!(b.class, Class::Rt);
    assert_eq!(
        b.fuel_per_tick,
        Some(weft_manifest::defaults::RT_FUEL_PER_TICK)
    );
    assert_eq!(b.on_deadline_miss, MissPolicy::Hold);
    assert!(matches!(
        b.restart,
        RestartPolicy::OnFailure {
            max_restarts: 5,
            ..
        }
    ));
    assert_eq!(
        m.connections[0].delay,
        std::time::Duration::ZERO,
        "a has no period"
    );
    assert_eq!(b.port_handle("in"), Some(weft_types::PortHandle(0)));
}

#[test]
fn errors_name_the_entry() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "period = \"10 parsecs\"",
            "",
            &["process #2 (\"b\")", "period", "10 parsecs"],
        ),
        (
            "memory = \"lots\"",
            "",
            &["process #2 (\"b\")", "memory", "lots"],
        ),
        (
            "capabilities = [\"lgo\"]",
            "",
            &[
                "process #2 (\"b\")",
                "unknown capability \"lgo\"",
                "did you mean \"log\"",
            ],
        ),
        (
            "class = \"rt\"",
            "",
            &["process #2 (\"b\")", "needs a period"],
        ),
        (
            "class = \"fast\"",
            "",
            &["process #2 (\"b\")", "unknown class"],
        ),
        (
            "fuel_per_tick = 5",
            "",
            &["fuel_per_tick applies to class \"rt\" only"],
        ),
        ("restart = \"always\"", "", &["restart", "\"always\""]),
        (
            "",
            "[[connection]]\nfrom = \"a.out\"\nto = \"c.in\"",
            &["connection #1 (a.out -> c.in)", "unknown process \"c\""],
        ),
        (
            "",
            "[[connection]]\nfrom = \"a.nope\"\nto = \"b.in\"",
            &["connection #1", "no output port \"nope\"", "[out]"],
        ),
        (
            "",
            "[[connection]]\nfrom = \"a.out\"\nto = \"b.out\"",
            &["connection #1", "no input port \"out\""],
        ),
        (
            "",
            "[[connection]]\nfrom = \"aout\"\nto = \"b.in\"",
            &["must be written \"process.port\""],
        ),
        (
            "capabilites = [\"log\"]",
            "",
            &["unknown field", "capabilites"],
        ),
    ];
    for (process, rest, needles) in cases {
        let (_d, result) = with_module(process, rest);
        let err = result.expect_err(&format!("{process} {rest} should be rejected"));
        for needle in *needles {
            assert!(
                err.contains(needle),
                "error for `{process}{rest}` lacks {needle:?}: {err}"
            );
        }
    }
}

#[test]
fn missing_module_and_duplicates_are_reported() {
    let dir = tempdir().unwrap();
    let err = parse(
        dir.path(),
        "name = \"x\"\n[[process]]\nname = \"p\"\nmodule = \"nowhere.wasm\"",
    )
    .unwrap_err();
    assert!(
        err.contains("process #1 (\"p\")")
            && err.contains("nowhere.wasm")
            && err.contains("not found"),
        "{err}"
    );
    std::fs::write(dir.path().join("m.wasm"), b"").unwrap();
    let err = parse(dir.path(), "name = \"x\"\n[[process]]\nname = \"p\"\nmodule = \"m.wasm\"\n[[process]]\nname = \"p\"\nmodule = \"m.wasm\"").unwrap_err();
    assert!(
        err.contains("process #2") && err.contains("duplicate"),
        "{err}"
    );
    let err = parse(dir.path(), "name = \"x\"\n[[process]\n").unwrap_err();
    assert!(err.contains("app.toml"), "{err}");
}
