//! The store's own tests: writes, reads, the log, checkpoints and snapshots.
use super::*;
use crate::model::Address;

fn on_disk(folder: PathBuf, durability: Durability) -> Options {
    Options {
        location: Location::Directory(folder),
        cache_bytes: 1 << 20,
        durability,
    }
}

fn memory() -> Store {
    Store::open(&Options {
        location: Location::InMemory,
        cache_bytes: 1 << 20,
        durability: Durability::Full,
    })
    .unwrap()
}

#[tokio::test]
async fn put_get_scan_delete_prefix() {
    let store = memory();
    let t = Address::Topic("t".into());
    let sub = |t: &str, s: &str| Address::Subscription(t.into(), s.into());
    store
        .apply(vec![
            Write::put(t.clone(), &"topic"),
            Write::put(sub("t", "a"), &"s1"),
            Write::put(sub("t", "b"), &"s2"),
            Write::put(sub("t2", "a"), &"other"),
            Write::put(
                Address::Rule("t".into(), "a".into(), "$default".into()),
                &"rule",
            ),
            Write::put(Key::Message(7, 1), &"m"),
            Write::put(Key::Message(7, 2), &"m2"),
            Write::put(Key::Message(8, 1), &"other"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.get::<String>(t.clone()).unwrap().as_deref(),
        Some("topic")
    );
    assert_eq!(store.scan::<String>(Key::Messages(7)).unwrap(), ["m", "m2"]);
    assert_eq!(store.scan::<String>(sub("t", "")).unwrap(), ["s1", "s2"]);
    assert_eq!(store.count(sub("t", "")).unwrap(), 2);
    store
        .apply(vec![
            Write::delete(t.clone()),
            Write::delete_prefix(sub("t", "")),
            Write::delete_prefix(Address::Rule("t".into(), String::new(), String::new())),
            Write::delete_prefix(Key::Messages(7)),
        ])
        .await
        .unwrap();
    assert!(store.get::<String>(t).unwrap().is_none());
    assert_eq!(store.count(Key::Messages(7)).unwrap(), 0);
    assert_eq!(store.count(Key::Messages(8)).unwrap(), 1);
    assert_eq!(store.count(sub("t", "")).unwrap(), 0);
    assert_eq!(store.count(sub("t2", "")).unwrap(), 1);
}

#[tokio::test]
async fn raised_counters_never_go_back() {
    let store = memory();
    let n = Key::NextSequence(3);
    // Out of order within one batch, then a lower value in a later batch.
    store
        .apply(vec![Write::raise(n.clone(), 7), Write::raise(n.clone(), 6)])
        .await
        .unwrap();
    assert_eq!(store.get::<u64>(n.clone()).unwrap(), Some(7));
    store.apply(vec![Write::raise(n.clone(), 5)]).await.unwrap();
    assert_eq!(store.get::<u64>(n.clone()).unwrap(), Some(7));
    store.apply(vec![Write::raise(n.clone(), 9)]).await.unwrap();
    assert_eq!(store.get::<u64>(n).unwrap(), Some(9));
}

#[tokio::test]
async fn many_concurrent_writers_share_flushes() {
    let store = memory();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.apply(vec![Write::put(Key::Message(1, i), &i)]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.count(Key::Messages(1)).unwrap(), 64);
}

#[tokio::test]
async fn later_writes_in_a_cycle_win() {
    let store = memory();
    store
        .apply(vec![
            Write::put(Key::Message(9, 1), &"before"),
            Write::delete_prefix(Key::Messages(9)),
            Write::put(Key::Message(9, 2), &"after"),
            Write::put(Key::Message(9, 3), &"first"),
            Write::put(Key::Message(9, 3), &"second"),
            Write::put(Key::Message(9, 4), &"gone"),
            Write::delete(Key::Message(9, 4)),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.scan::<String>(Key::Messages(9)).unwrap(),
        ["after", "second"]
    );
}

#[tokio::test]
async fn opening_replays_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("db");
    let options = on_disk(folder.clone(), Durability::Full);
    let store = Store::open(&options).unwrap();
    store
        .apply(vec![
            Write::put(Key::Message(1, 1), &"kept"),
            Write::put(Key::Message(1, 2), &"removed by the log"),
        ])
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    // What a killed process leaves: records in the log that sled never made durable.
    {
        let (mut log, records) = wal::Wal::open(&folder.join(WAL_FILE)).unwrap();
        assert!(records.is_empty(), "close checkpoints and empties the log");
        let op = |key: Key, value: Option<Vec<u8>>| wal::Op {
            messages: true,
            key: key.to_bytes(),
            value: value.map(sled::IVec::from),
        };
        log.append(&[
            op(Key::Message(1, 2), None),
            op(Key::Message(1, 3), Some(codec::encode(&"replayed"))),
        ])
        .unwrap();
        log.sync().unwrap();
    }
    let store = Store::open(&options).unwrap();
    assert_eq!(
        store.scan::<String>(Key::Messages(1)).unwrap(),
        ["kept", "replayed"]
    );
    assert!(
        wal::read_records(&folder.join(WAL_FILE))
            .unwrap()
            .is_empty()
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_log_rotated_before_a_crash_is_replayed_before_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("db");
    let options = on_disk(folder.clone(), Durability::Full);
    Store::open(&options).unwrap().close().await.unwrap();
    // What a kill during a checkpoint leaves: the rotated log and the current one.
    let op = |seq: u64, value: Option<&str>| wal::Op {
        messages: true,
        key: Key::Message(1, seq).to_bytes(),
        value: value.map(|v| codec::encode(&v).into()),
    };
    let current = folder.join(WAL_FILE);
    {
        let (mut old, _) = wal::Wal::open(&wal::old_path(&current)).unwrap();
        old.append(&[op(1, Some("old")), op(2, Some("old, then removed"))])
            .unwrap();
        old.sync().unwrap();
        let (mut log, _) = wal::Wal::open(&current).unwrap();
        log.append(&[op(1, Some("new")), op(2, None), op(3, Some("newest"))])
            .unwrap();
        log.sync().unwrap();
    }
    let store = Store::open(&options).unwrap();
    assert_eq!(
        store.scan::<String>(Key::Messages(1)).unwrap(),
        ["new", "newest"]
    );
    assert!(!wal::old_path(&current).exists());
    assert!(wal::read_records(&current).unwrap().is_empty());
    store.close().await.unwrap();
}

#[tokio::test]
async fn checkpoints_run_beside_the_writer_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("db");
    let options = on_disk(folder.clone(), Durability::Full);
    let store = Store::open(&options).unwrap();
    let big = "x".repeat(64 << 10);
    // 6 MiB through a log that rotates past 1 MiB (in unit tests): several
    // checkpoints, each while later writes go on.
    for round in 0..6u64 {
        let writes = (0..16)
            .map(|i| Write::put(Key::Message(2, round * 16 + i), &big))
            .collect();
        store.apply(writes).await.unwrap();
        assert_eq!(store.count(Key::Messages(2)).unwrap(), (round + 1) * 16);
    }
    store.close().await.unwrap();
    // Read after the close, which waits for the applier's queue (checkpoints included).
    let stats = store.writer_stats();
    assert!(stats.checkpoint > std::time::Duration::ZERO, "{stats:?}");
    drop(store);
    let store = Store::open(&options).unwrap();
    let all: Vec<String> = store.scan(Key::Messages(2)).unwrap();
    assert_eq!(all.len(), 96);
    assert!(all.iter().all(|v| *v == big));
    assert!(!wal::old_path(&folder.join(WAL_FILE)).exists());
    store.close().await.unwrap();
}

#[tokio::test]
async fn an_index_snapshot_is_kept_only_by_a_quiet_close_and_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = on_disk(dir.path().join("db"), Durability::Full);
    let reopen = |store: Store| {
        drop(store);
        Store::open(&options).unwrap()
    };
    // A write after the mark: the index may not match, so none is kept.
    let store = Store::open(&options).unwrap();
    let mark = store.submitted();
    store
        .apply(vec![Write::put(Key::Message(1, 1), &"late")])
        .await
        .unwrap();
    store
        .close_with_snapshot(mark, &b"stale".to_vec())
        .await
        .unwrap();
    let store = reopen(store);
    assert_eq!(store.take_snapshot::<Vec<u8>>(), None);
    // A quiet close keeps it for exactly one open.
    let mark = store.submitted();
    store
        .close_with_snapshot(mark, &b"index".to_vec())
        .await
        .unwrap();
    let store = reopen(store);
    assert_eq!(
        store.take_snapshot::<Vec<u8>>().as_deref(),
        Some(&b"index"[..])
    );
    assert_eq!(store.take_snapshot::<Vec<u8>>(), None);
    store.close().await.unwrap();
    let store = reopen(store);
    assert_eq!(
        store.take_snapshot::<Vec<u8>>(),
        None,
        "deleted as the store opened"
    );
    // In memory there is nowhere to keep one.
    let memory = memory();
    memory
        .close_with_snapshot(memory.submitted(), &b"x".to_vec())
        .await
        .unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn reopen_keeps_records_and_close_refuses_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = on_disk(dir.path().join("db"), Durability::None);
    {
        let store = Store::open(&options).unwrap();
        store
            .apply(vec![Write::put(Address::Queue("q".into()), &42u32)])
            .await
            .unwrap();
        store.close().await.unwrap();
        assert!(matches!(store.apply(vec![]).await, Err(Error::ShutDown)));
    }
    let store = Store::open(&options).unwrap();
    assert_eq!(
        store.get::<u32>(Address::Queue("q".into())).unwrap(),
        Some(42)
    );
}

#[tokio::test]
async fn keys_written_rewritten_and_removed_at_once_keep_their_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let options = on_disk(dir.path().join("db"), Durability::None);
    let store = Store::open(&options).unwrap();
    // Many small cycles in flight at once, each key written, rewritten and some removed,
    // while the applier catches up behind the writer: reads and a reopen see last values.
    let writers: Vec<_> = (0..16u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50u64 {
                    let key = Key::Message(3, w * 100 + i);
                    store
                        .apply(vec![Write::put(key.clone(), &"first")])
                        .await
                        .unwrap();
                    store
                        .apply(vec![Write::put(key.clone(), &"second")])
                        .await
                        .unwrap();
                    if i % 2 == 0 {
                        store.apply(vec![Write::delete(key)]).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let check = |store: &Store| {
        let kept: Vec<(Vec<u8>, String)> = store.scan_with_keys(Key::Messages(3)).unwrap();
        assert_eq!(kept.len(), 16 * 25);
        assert!(kept.iter().all(|(_, v)| v == "second"));
    };
    check(&store);
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(&options).unwrap();
    check(&store);
    store.close().await.unwrap();
}
