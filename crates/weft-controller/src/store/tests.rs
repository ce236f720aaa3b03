//! The store keeps what it acknowledged across a reopen.

use super::*;
use crate::model::{Handover, MoveIntent};
use weft_types::Role;

fn app(generation: u64) -> StoredApp {
    StoredApp {
        manifest: "name = \"a\"\n".into(),
        generation,
        epoch_unix_ns: 42,
    }
}

fn name<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn unit(process: &str, role: Role) -> Unit {
    Unit {
        process: name(process),
        role,
    }
}

#[test]
fn round_trip_and_persistence_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b): (AppName, AppName) = (name("a"), name("b"));
    let digest = ModuleDigest([1; 32]);
    let who: ProcessRef = name("a/p");
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .put_app(&a, &app(1), &BTreeMap::from([(digest, vec![1, 2, 3])]))
            .unwrap();
        store.put_app(&b, &app(2), &BTreeMap::new()).unwrap();
        let mut first = Current::default();
        first.placed.insert(
            a.clone(),
            Placed::from([
                (unit("p", Role::Primary), name("n1")),
                (unit("p", Role::Standby), name("n2")),
            ]),
        );
        first.placed.insert(
            b.clone(),
            Placed::from([(unit("x", Role::Primary), name("n1"))]),
        );
        first.moves.insert(
            who.clone(),
            MoveIntent {
                to: name("n3"),
                since_ms: 7,
            },
        );
        store.save_current(&Current::default(), &first).unwrap();
        assert!(store.drain(&name("n3")).unwrap());
        assert!(!store.drain(&name("n3")).unwrap());
        // Replace a's placement entirely, finish the move, start a handover.
        let mut second = first.clone();
        second.placed.insert(
            a.clone(),
            Placed::from([(unit("p", Role::Primary), name("n2"))]),
        );
        second.moves.clear();
        second.handovers.insert(
            who.clone(),
            Handover {
                from: name("n1"),
                since_ms: 9,
            },
        );
        store.save_current(&first, &second).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let apps = store.apps().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[&a], app(1));
    assert_eq!(apps[&b].generation, 2);
    assert_eq!(store.module(&digest).unwrap(), Some(vec![1, 2, 3]));
    assert!(store.has_module(&digest).unwrap());
    assert_eq!(store.module(&ModuleDigest([9; 32])).unwrap(), None);
    let current = store.current().unwrap();
    assert_eq!(
        current.placed[&a],
        Placed::from([(unit("p", Role::Primary), name("n2"))])
    );
    assert_eq!(current.placed[&b][&unit("x", Role::Primary)], "n1");
    assert!(current.moves.is_empty());
    assert_eq!(current.handovers[&who].from, "n1");
    assert_eq!(store.drained().unwrap(), [name("n3")].into());

    assert!(store.remove_app(&a).unwrap());
    assert!(!store.remove_app(&a).unwrap());
    let current = store.current().unwrap();
    assert!(!current.placed.contains_key(&a) && current.handovers.is_empty());
    assert!(
        store.module(&digest).unwrap().is_some(),
        "modules outlive apps"
    );
    assert!(store.undrain(&name("n3")).unwrap());
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

/// A store written by a controller that kept checkpoints loses that table
/// (and its space) when opened: checkpoints live on the nodes now.
#[test]
fn an_old_checkpoint_table_is_dropped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(OLD_CHECKPOINTS)
            .unwrap()
            .insert(("a", "p"), vec![7u8; 1 << 20].as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    drop(Store::open(dir.path()).unwrap());
    let db = redb::Database::create(&path).unwrap();
    let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
    assert!(
        tx.open_table(OLD_CHECKPOINTS).is_err(),
        "the old table is gone"
    );
}

/// Events survive a reopen, only the newest `keep` stay, and a damaged
/// record loses only itself.
#[test]
fn events_are_kept_bounded_across_reopen_and_a_damaged_one_is_left_out() {
    use weft_types::EventKind;
    let dir = tempfile::tempdir().unwrap();
    let event = |seq: u64| EventEntry {
        seq,
        ..EventEntry::new(EventKind::NodeUp, format!("event {seq}"))
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let first: Vec<EventEntry> = (1..=6).map(event).collect();
        store.append_events(&first, 4).unwrap();
        store.append_events(&[event(7)], 4).unwrap();
        store.append_events(&[], 4).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let seqs: Vec<u64> = store.events().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 5, 6, 7]);
    store
        .write("damage an event", |tx| {
            tx.open_table(EVENTS)?.insert(5, "{not json")?;
            Ok(())
        })
        .unwrap();
    let seqs: Vec<u64> = store.events().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [4, 6, 7]);
}
