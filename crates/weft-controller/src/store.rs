//! The controller's durable desired state, in one redb file
//! (`<data-dir>/controller.redb`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `apps` | app name | JSON [`StoredApp`] |
//! | `modules` | digest (lowercase hex SHA-256) | module bytes |
//! | `assignments` | (app, process) | node name |
//! | `checkpoints` | (app, process) | tag (`u64` LE) followed by the snapshot bytes |
//! | `drained` | node name | `()` |
//!
//! Every mutation is exactly one committed write transaction, so a
//! controller killed with `kill -9` loses nothing it has acknowledged.
//! Every error names what was being done and the database file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const APPS: TableDefinition<&str, &str> = TableDefinition::new("apps");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const ASSIGNMENTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("assignments");
const CHECKPOINTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("checkpoints");
const DRAINED: TableDefinition<&str, ()> = TableDefinition::new("drained");

/// File name of the database inside the data directory.
pub const FILE_NAME: &str = "controller.redb";

/// One app as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredApp {
    /// The manifest text, module paths already rewritten to `<digest>.wasm`.
    pub manifest: String,
    /// 1 at creation, bumped on every manifest change.
    pub generation: u64,
    /// Wall-clock time of the app's tag 0 (ns since the Unix epoch); kept
    /// across updates.
    pub epoch_unix_ns: u64,
}

/// The latest checkpoint of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tag: u64,
    pub snapshot: Vec<u8>,
}

/// Handle on the database. Cheap to share behind an `Arc`; every method is
/// blocking (call it from `spawn_blocking` in async code when it may write
/// much).
pub struct Store {
    db: Database,
    path: PathBuf,
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

impl Store {
    /// Opens (or creates) `<data_dir>/controller.redb`, creating the
    /// directory and every table.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!(
                "cannot create the controller data directory {}",
                data_dir.display()
            )
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(err)
            .with_context(|| format!("cannot open the controller database {}", path.display()))?;
        let store = Store { db, path };
        store.write("create the tables", |tx| {
            tx.open_table(APPS)?;
            tx.open_table(MODULES)?;
            tx.open_table(ASSIGNMENTS)?;
            tx.open_table(CHECKPOINTS)?;
            tx.open_table(DRAINED)?;
            Ok(())
        })?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction and commits it.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let context = || format!("cannot {what} in {}", self.path.display());
        let tx = self.db.begin_write().map_err(err).with_context(context)?;
        let value = f(&tx).map_err(err).with_context(context)?;
        tx.commit().map_err(err).with_context(context)?;
        Ok(value)
    }

    fn read<T>(
        &self,
        what: &str,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let context = || format!("cannot {what} in {}", self.path.display());
        let tx = self.db.begin_read().map_err(err).with_context(context)?;
        f(&tx).map_err(err).with_context(context)
    }

    /// Stores an app together with any modules it brings, in one transaction.
    pub fn put_app(
        &self,
        name: &str,
        app: &StoredApp,
        modules: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let json = serde_json::to_string(app).context("cannot serialise the app record")?;
        self.write(&format!("store app \"{name}\""), |tx| {
            let mut table = tx.open_table(MODULES)?;
            for (digest, bytes) in modules {
                table.insert(digest.as_str(), bytes.as_slice())?;
            }
            tx.open_table(APPS)?.insert(name, json.as_str())?;
            Ok(())
        })
    }

    /// Every app by name. A record that does not decode is an error naming it.
    pub fn apps(&self) -> Result<BTreeMap<String, StoredApp>> {
        let raw = self.read("list the apps", |tx| {
            let table = tx.open_table(APPS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_string()));
            }
            Ok(out)
        })?;
        raw.into_iter()
            .map(|(name, json)| {
                let app = serde_json::from_str(&json).with_context(|| {
                    format!(
                        "corrupt record of app \"{name}\" in {}",
                        self.path.display()
                    )
                })?;
                Ok((name, app))
            })
            .collect()
    }

    /// Removes an app, its assignments and its checkpoints (modules stay:
    /// other apps may share them). Returns whether the app existed.
    pub fn remove_app(&self, name: &str) -> Result<bool> {
        self.write(&format!("remove app \"{name}\""), |tx| {
            let existed = tx.open_table(APPS)?.remove(name)?.is_some();
            tx.open_table(ASSIGNMENTS)?
                .retain(|(app, _), _| app != name)?;
            tx.open_table(CHECKPOINTS)?
                .retain(|(app, _), _| app != name)?;
            Ok(existed)
        })
    }

    pub fn module(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        self.read(&format!("read module {digest}"), |tx| {
            Ok(tx
                .open_table(MODULES)?
                .get(digest)?
                .map(|v| v.value().to_vec()))
        })
    }

    pub fn has_module(&self, digest: &str) -> Result<bool> {
        self.read(&format!("look up module {digest}"), |tx| {
            Ok(tx.open_table(MODULES)?.get(digest)?.is_some())
        })
    }

    /// Replaces the whole assignment (process -> node) of one app.
    pub fn set_assignments(&self, app: &str, placement: &BTreeMap<String, String>) -> Result<()> {
        self.set_many_assignments(&[(app.to_string(), placement.clone())])
    }

    /// Replaces the assignments of several apps in one transaction.
    pub fn set_many_assignments(&self, apps: &[(String, BTreeMap<String, String>)]) -> Result<()> {
        self.write("store assignments", |tx| {
            let mut table = tx.open_table(ASSIGNMENTS)?;
            for (app, placement) in apps {
                table.retain(|(a, _), _| a != app.as_str())?;
                for (process, node) in placement {
                    table.insert((app.as_str(), process.as_str()), node.as_str())?;
                }
            }
            Ok(())
        })
    }

    /// All assignments: app -> (process -> node).
    pub fn assignments(&self) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        self.read("list the assignments", |tx| {
            let table = tx.open_table(ASSIGNMENTS)?;
            let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (app, process) = k.value();
                out.entry(app.to_string())
                    .or_default()
                    .insert(process.to_string(), v.value().to_string());
            }
            Ok(out)
        })
    }

    /// Stores a checkpoint if it is newer (higher tag) than the stored one.
    /// Returns whether it was stored.
    pub fn put_checkpoint(
        &self,
        app: &str,
        process: &str,
        tag: u64,
        snapshot: &[u8],
    ) -> Result<bool> {
        self.write(&format!("store the checkpoint of {app}/{process}"), |tx| {
            let mut table = tx.open_table(CHECKPOINTS)?;
            let newer = match table.get((app, process))? {
                Some(old) => decode_checkpoint(old.value()).is_none_or(|c| tag > c.tag),
                None => true,
            };
            if newer {
                let mut value = Vec::with_capacity(8 + snapshot.len());
                value.extend_from_slice(&tag.to_le_bytes());
                value.extend_from_slice(snapshot);
                table.insert((app, process), value.as_slice())?;
            }
            Ok(newer)
        })
    }

    pub fn checkpoint(&self, app: &str, process: &str) -> Result<Option<StoredCheckpoint>> {
        let raw = self.read(&format!("read the checkpoint of {app}/{process}"), |tx| {
            Ok(tx
                .open_table(CHECKPOINTS)?
                .get((app, process))?
                .map(|v| v.value().to_vec()))
        })?;
        match raw {
            None => Ok(None),
            Some(bytes) => decode_checkpoint(&bytes).map(Some).ok_or_else(|| {
                anyhow!(
                    "corrupt checkpoint record of {app}/{process} in {} ({} bytes)",
                    self.path.display(),
                    bytes.len()
                )
            }),
        }
    }

    /// Marks a node drained (returns whether it was not already).
    pub fn drain(&self, node: &str) -> Result<bool> {
        self.write(&format!("mark node \"{node}\" drained"), |tx| {
            Ok(tx.open_table(DRAINED)?.insert(node, ())?.is_none())
        })
    }

    /// Clears the drained mark of a node (returns whether it was set).
    pub fn undrain(&self, node: &str) -> Result<bool> {
        self.write(
            &format!("clear the drained mark of node \"{node}\""),
            |tx| Ok(tx.open_table(DRAINED)?.remove(node)?.is_some()),
        )
    }

    pub fn drained(&self) -> Result<BTreeSet<String>> {
        self.read("list the drained nodes", |tx| {
            let table = tx.open_table(DRAINED)?;
            let mut out = BTreeSet::new();
            for entry in table.iter()? {
                out.insert(entry?.0.value().to_string());
            }
            Ok(out)
        })
    }
}

fn decode_checkpoint(bytes: &[u8]) -> Option<StoredCheckpoint> {
    let tag = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some(StoredCheckpoint {
        tag,
        snapshot: bytes[8..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(generation: u64) -> StoredApp {
        StoredApp {
            manifest: "name = \"a\"\n".into(),
            generation,
            epoch_unix_ns: 42,
        }
    }

    #[test]
    fn round_trip_and_persistence_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .put_app("a", &app(1), &[("d1".into(), vec![1, 2, 3])])
                .unwrap();
            store.put_app("b", &app(2), &[]).unwrap();
            let placement: BTreeMap<_, _> = [
                ("p".to_string(), "n1".to_string()),
                ("q".into(), "n2".into()),
            ]
            .into();
            store.set_assignments("a", &placement).unwrap();
            store
                .set_assignments("b", &[("x".to_string(), "n1".to_string())].into())
                .unwrap();
            assert!(store.put_checkpoint("a", "p", 10, b"snap10").unwrap());
            assert!(
                !store.put_checkpoint("a", "p", 5, b"old").unwrap(),
                "older tag is ignored"
            );
            assert!(
                !store.put_checkpoint("a", "p", 10, b"same").unwrap(),
                "same tag is ignored"
            );
            assert!(store.drain("n3").unwrap());
            assert!(!store.drain("n3").unwrap());
            // Replace a's assignment entirely.
            store
                .set_assignments("a", &[("p".to_string(), "n2".to_string())].into())
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let apps = store.apps().unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps["a"], app(1));
        assert_eq!(apps["b"].generation, 2);
        assert_eq!(store.module("d1").unwrap(), Some(vec![1, 2, 3]));
        assert!(store.has_module("d1").unwrap());
        assert_eq!(store.module("nope").unwrap(), None);
        let assignments = store.assignments().unwrap();
        assert_eq!(
            assignments["a"],
            [("p".to_string(), "n2".to_string())].into()
        );
        assert_eq!(assignments["b"]["x"], "n1");
        assert_eq!(
            store.checkpoint("a", "p").unwrap(),
            Some(StoredCheckpoint {
                tag: 10,
                snapshot: b"snap10".to_vec()
            })
        );
        assert_eq!(store.checkpoint("a", "q").unwrap(), None);
        assert_eq!(store.drained().unwrap(), ["n3".to_string()].into());

        assert!(store.remove_app("a").unwrap());
        assert!(!store.remove_app("a").unwrap());
        assert!(!store.assignments().unwrap().contains_key("a"));
        assert_eq!(store.checkpoint("a", "p").unwrap(), None);
        assert!(
            store.module("d1").unwrap().is_some(),
            "modules outlive apps"
        );
        assert!(store.undrain("n3").unwrap());
        assert!(store.drained().unwrap().is_empty());
    }

    #[test]
    fn unusable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = Store::open(&file.join("sub")).err().expect("must fail");
        assert!(
            format!("{e:#}").contains("cannot create the controller data directory"),
            "{e:#}"
        );
    }
}
