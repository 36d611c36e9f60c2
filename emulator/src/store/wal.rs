//! The write-ahead log that makes writes durable. sled 0.34 makes every `apply_batch` and
//! every `flush` seal an I/O buffer and hand it to its thread pool, which wakes all seven of
//! its idle threads; at a few thousand small durable writes per second that cost more CPU
//! than the requests themselves. So durability comes from this file instead: each writer
//! cycle appends one checksummed record holding the final value of every key it touches,
//! then `fdatasync`s once, and only then applies the record to sled with plain inserts and
//! removes. sled itself is flushed only at checkpoints, after which the log starts again.
//!
//! Record: `len: u32 LE | crc32(payload): u32 LE | payload`. Payload: operations, each
//! `tag: u8 | key len: u32 LE | key | (value len: u32 LE | value, for puts)`, where tag bit 0
//! is the tree (0 entities, 1 messages) and bit 1 is put (1) or remove (0). Replay stops at
//! the first record that is short or fails its checksum: that is the torn tail of a write
//! that was never acknowledged.
//!
//! At a checkpoint the writer does not stop: it renames the log to `<name>.old` and goes
//! on in a new file, and the applier deletes the old one once sled holds and has flushed
//! everything in it. A start replays the old file (if a crash left it), then the current.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// One operation of a record: the final state of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Op {
    /// The `messages` tree (else `entities`).
    pub(super) messages: bool,
    pub(super) key: Vec<u8>,
    /// `None` removes the key. Shared (not copied) by the overlay and sled's insert.
    pub(super) value: Option<sled::IVec>,
}

const HEADER: usize = 8;
const TREE_BIT: u8 = 1;
const PUT_BIT: u8 = 2;

/// The open log file, positioned at its end.
#[derive(Debug)]
pub(super) struct Wal {
    file: File,
    len: u64,
    path: PathBuf,
}

/// Where the log being checkpointed lies while a new one is written.
pub(super) fn old_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// The intact records of a log file (none when it does not exist).
pub(super) fn read_records(path: &Path) -> std::io::Result<Vec<Vec<Op>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(parse(&bytes).0)
}

/// The intact records at the start of `bytes`, and where they end.
fn parse(bytes: &[u8]) -> (Vec<Vec<Op>>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((ops, next)) = record_at(bytes, at) {
        records.push(ops);
        at = next;
    }
    (records, at)
}

/// Deletes a log file that is durable elsewhere now, durably.
pub(super) fn remove(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    sync_dir(path)
}

/// Makes a file's creation, rename or removal in `dir` durable.
fn sync_dir(file: &Path) -> std::io::Result<()> {
    match file.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

impl Wal {
    /// Opens (or creates) the log and reads every intact record; a torn tail is cut off.
    pub(super) fn open(path: &Path) -> std::io::Result<(Self, Vec<Vec<Op>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, at) = parse(&bytes);
        if at < bytes.len() {
            tracing::warn!(
                kept = at,
                dropped = bytes.len() - at,
                "write-ahead log ends in a torn record (a write never acknowledged); cut off"
            );
            file.set_len(at as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(at as u64))?;
        Ok((
            Wal {
                file,
                len: at as u64,
                path: path.to_path_buf(),
            },
            records,
        ))
    }

    /// Appends one record (not yet durable: see [`Wal::sync`]).
    /// Returns the record's length in bytes.
    pub(super) fn append(&mut self, ops: &[Op]) -> std::io::Result<usize> {
        // The payload is encoded after room for the header, which is filled in then.
        let mut record = encode(ops, HEADER);
        let len = u32_len(record.len() - HEADER)?;
        let crc = crc32fast::hash(&record[HEADER..]);
        record[..4].copy_from_slice(&len.to_le_bytes());
        record[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&record)?;
        self.len += record.len() as u64;
        Ok(record.len())
    }

    /// Makes every appended record durable.
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Bytes in the log.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Goes on in a new, empty file; the current one becomes [`old_path`], for the caller
    /// to delete once everything in it is durable elsewhere. Call only when no old file is
    /// left. Returns the old file's path.
    pub(super) fn rotate(&mut self) -> std::io::Result<PathBuf> {
        let old = old_path(&self.path);
        std::fs::rename(&self.path, &old)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        sync_dir(&self.path)?;
        self.file = file;
        self.len = 0;
        Ok(old)
    }

    /// Empties the log; call only once everything in it is durable elsewhere.
    pub(super) fn reset(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }
}

fn u32_len(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "write-ahead log record over 4 GiB",
        )
    })
}

/// The payload of `ops`, after `room` zero bytes.
fn encode(ops: &[Op], room: usize) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|o| 9 + o.key.len() + o.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    let mut out = Vec::with_capacity(room + size);
    out.resize(room, 0);
    for op in ops {
        let tag =
            if op.messages { TREE_BIT } else { 0 } | if op.value.is_some() { PUT_BIT } else { 0 };
        out.push(tag);
        // Keys and values are bounded by the message size limit, far below 4 GiB.
        out.extend_from_slice(&(op.key.len() as u32).to_le_bytes());
        out.extend_from_slice(&op.key);
        if let Some(value) = &op.value {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    out
}

/// The record starting at `at` and where the next one starts, if it is intact.
fn record_at(bytes: &[u8], at: usize) -> Option<(Vec<Op>, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((decode(payload)?, at + HEADER + len))
}

fn decode(mut payload: &[u8]) -> Option<Vec<Op>> {
    fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (input.get(..n)?, input.get(n..)?);
        *input = tail;
        Some(head)
    }
    fn sized(input: &mut &[u8]) -> Option<Vec<u8>> {
        let n = u32::from_le_bytes(take(input, 4)?.try_into().ok()?) as usize;
        Some(take(input, n)?.to_vec())
    }
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        let key = sized(&mut payload)?;
        let value = if tag & PUT_BIT != 0 {
            Some(sized(&mut payload)?.into())
        } else {
            None
        };
        ops.push(Op {
            messages: tag & TREE_BIT != 0,
            key,
            value,
        });
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(messages: bool, key: &[u8], value: Option<&[u8]>) -> Op {
        Op {
            messages,
            key: key.to_vec(),
            value: value.map(sled::IVec::from),
        }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let first = vec![op(false, b"T1", Some(b"topic")), op(true, b"M1", None)];
        let second = vec![op(true, b"D1", Some(b""))];
        {
            let (mut wal, records) = Wal::open(&path).unwrap();
            assert!(records.is_empty());
            wal.append(&first).unwrap();
            wal.append(&second).unwrap();
            wal.sync().unwrap();
        }
        let intact = std::fs::metadata(&path).unwrap().len();
        // A record torn in the middle: only part of it reached the disk.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[20, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(file);
        let (mut wal, records) = Wal::open(&path).unwrap();
        assert_eq!(records, vec![first, second.clone()]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), intact);
        // Appends continue after the last intact record.
        wal.append(&second).unwrap();
        drop(wal);
        let (mut wal, records) = Wal::open(&path).unwrap();
        assert_eq!(records.len(), 3);
        wal.reset().unwrap();
        drop(wal);
        assert!(Wal::open(&path).unwrap().1.is_empty());
    }

    #[test]
    fn a_flipped_bit_ends_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        {
            let (mut wal, _) = Wal::open(&path).unwrap();
            wal.append(&[op(true, b"a", Some(b"1"))]).unwrap();
            wal.append(&[op(true, b"b", Some(b"2"))]).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(records, vec![vec![op(true, b"a", Some(b"1"))]]);
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            vec![],
            vec![0; 3],
            vec![255; 64],
            vec![4, 0, 0, 0, 0, 0, 0, 0, 2, 9],
        ] {
            let _ = record_at(&bytes, 0);
            let _ = decode(&bytes);
        }
    }
}
