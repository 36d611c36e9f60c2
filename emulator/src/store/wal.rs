//! The write-ahead log that makes writes durable. sled 0.34 makes every `apply_batch` and
//! every `flush` seal an I/O buffer and hand it to its thread pool, which wakes all seven of
//! its idle threads; at a few thousand small durable writes per second that cost more CPU
//! than the requests themselves. So durability comes from this file instead: each writer
//! cycle appends one checksummed record holding the final value of every key it touches,
//! then `fdatasync`s once, and only then applies the record to sled with plain inserts and
//! removes. sled itself is flushed only at checkpoints, after which the log starts again.
//!
//! File: `magic: 8 bytes | generation: u64 LE`, then records. Record: `len: u32 LE |
//! crc32(generation LE, payload): u32 LE | payload`. Payload: operations, each `tag: u8 |
//! key len: u32 LE | key | (value len: u32 LE | value, for puts)`, where tag bit 0 is the
//! tree (0 entities, 1 messages) and bit 1 is put (1) or remove (0). Replay stops at the
//! first record that is short or fails its checksum: that is the torn tail of a write that
//! was never acknowledged, or where this generation's records end in a recycled file. (A
//! file without the magic is the older format, whose checksum covers the payload alone: it
//! is read, and written on, until its next reset or rotation.)
//!
//! At a checkpoint the writer does not stop: it renames the log to `<name>.old` and goes
//! on in another file, and the applier renames the old one to `<name>.spare` once sled
//! holds and has flushed everything in it. The next rotation writes on the spare again,
//! under a new generation, so the stale records in it fail their checksums. Files are
//! recycled rather than deleted because freeing a 32 MiB file stalls the disk: with ext4's
//! `discard` (this machine's mount) a log sync beside the delete took 6-9 ms against a
//! 2-3 ms worst case without one. A start replays the old file (if a crash left it), then
//! the current.

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

/// A record's header: length and checksum.
const HEADER: usize = 8;
/// What a file in this format starts with.
const MAGIC: &[u8; 8] = b"sbe-wal2";
/// The file's header: [`MAGIC`] and the generation.
const FILE_HEADER: u64 = 16;
const TREE_BIT: u8 = 1;
const PUT_BIT: u8 = 2;

/// The open log file, positioned at its end.
#[derive(Debug)]
pub(super) struct Wal {
    file: File,
    len: u64,
    path: PathBuf,
    /// What the records' checksums cover besides the payload (`None`: the older format,
    /// a file without a header).
    generation: Option<u64>,
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where the log being checkpointed lies while a new one is written.
pub(super) fn old_path(path: &Path) -> PathBuf {
    suffixed(path, ".old")
}

/// Where a checkpointed log waits to be written on again.
fn spare_path(path: &Path) -> PathBuf {
    suffixed(path, ".spare")
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

/// The generation in `bytes`' file header, or `None` for the older format without one.
fn generation(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..FILE_HEADER as usize)?;
    let (magic, generation) = header.split_at(MAGIC.len());
    (magic == MAGIC).then(|| u64::from_le_bytes(generation.try_into().unwrap_or_default()))
}

/// The file's generation, its intact records, and where they end.
fn parse(bytes: &[u8]) -> (Vec<Vec<Op>>, usize, Option<u64>) {
    let generation = generation(bytes);
    let mut records = Vec::new();
    let mut at = if generation.is_some() {
        FILE_HEADER as usize
    } else {
        0
    };
    while let Some((ops, next)) = record_at(bytes, at, generation) {
        records.push(ops);
        at = next;
    }
    (records, at, generation)
}

/// A record payload's checksum in a file of `generation`.
fn checksum(generation: Option<u64>, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if let Some(generation) = generation {
        hasher.update(&generation.to_le_bytes());
    }
    hasher.update(payload);
    hasher.finalize()
}

/// Writes `file`'s header for `generation` at its start and syncs it, so that whatever
/// the file held before no longer passes as records (their checksums cover another
/// generation).
fn start_generation(file: &mut File, generation: u64) -> std::io::Result<()> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&generation.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header)?;
    file.sync_data()
}

/// Sets aside the log file a rotation left at `old` ([`old_path`]), durable elsewhere now,
/// for the next rotation to write on again (see the module's notes for why it is not
/// deleted).
pub(super) fn retire(old: &Path) -> std::io::Result<()> {
    // `<name>.old` without its last extension is the log's own name.
    std::fs::rename(old, spare_path(&old.with_extension("")))?;
    sync_dir(old)
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
        let (records, at, generation) = parse(&bytes);
        let mut wal = Wal {
            file,
            len: at as u64,
            path: path.to_path_buf(),
            generation,
        };
        if at == 0 {
            // New, emptied, or holding nothing intact: a fresh file of this format.
            wal.reset()?;
        } else if at < bytes.len() {
            tracing::warn!(
                kept = at,
                dropped = bytes.len() - at,
                "write-ahead log ends in bytes that are no intact record of its generation \
                 (a write never acknowledged, or a recycled file's older records); cut off"
            );
            wal.file.set_len(at as u64)?;
            wal.file.sync_data()?;
        }
        wal.file.seek(SeekFrom::Start(wal.len))?;
        Ok((wal, records))
    }

    /// Appends one record (not yet durable: see [`Wal::sync`]).
    /// Returns the record's length in bytes.
    pub(super) fn append(&mut self, ops: &[Op]) -> std::io::Result<usize> {
        // The payload is encoded after room for the header, which is filled in then.
        let mut record = encode(ops, HEADER);
        let len = u32_len(record.len() - HEADER)?;
        let crc = checksum(self.generation, &record[HEADER..]);
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

    /// The next generation: one that no record written so far carries.
    fn next_generation(&self) -> u64 {
        self.generation.map_or(1, |g| g.wrapping_add(1))
    }

    /// Goes on in another file (the spare a checkpoint set aside, or a new one); the
    /// current one becomes [`old_path`], for the caller to [`retire`] once everything in
    /// it is durable elsewhere. Call only when no old file is left. Returns the old
    /// file's path.
    pub(super) fn rotate(&mut self) -> std::io::Result<PathBuf> {
        let (old, spare) = (old_path(&self.path), spare_path(&self.path));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&spare)?;
        // Durable before the file takes the log's name: a crash must never find the
        // spare's stale records under the log's name with the generation they were
        // written in.
        let generation = self.next_generation();
        start_generation(&mut file, generation)?;
        std::fs::rename(&self.path, &old)?;
        std::fs::rename(&spare, &self.path)?;
        sync_dir(&self.path)?;
        self.file = file;
        self.len = FILE_HEADER;
        self.generation = Some(generation);
        Ok(old)
    }

    /// Empties the log (and lets go of a spare); call only once everything in it is
    /// durable elsewhere.
    pub(super) fn reset(&mut self) -> std::io::Result<()> {
        let generation = self.next_generation();
        self.file.set_len(0)?;
        start_generation(&mut self.file, generation)?;
        self.len = FILE_HEADER;
        self.generation = Some(generation);
        match std::fs::remove_file(spare_path(&self.path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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

/// The record starting at `at` and where the next one starts, if it is intact in a file
/// of `generation`.
fn record_at(bytes: &[u8], at: usize, generation: Option<u64>) -> Option<(Vec<Op>, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    if checksum(generation, payload) != crc {
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
    fn a_recycled_file_replays_only_what_its_generation_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let stale = vec![op(true, b"stale", Some(&[7; 4096]))];
        let (b, c) = (vec![op(true, b"b", Some(b"2"))], vec![op(true, b"c", None)]);
        {
            let (mut wal, _) = Wal::open(&path).unwrap();
            for _ in 0..3 {
                wal.append(&stale).unwrap();
            }
            wal.sync().unwrap();
            let old = wal.rotate().unwrap();
            retire(&old).unwrap();
            wal.append(&b).unwrap();
            wal.sync().unwrap();
            // Writes on the file that held `stale`, under a new generation.
            let old = wal.rotate().unwrap();
            assert_eq!(read_records(&old).unwrap(), vec![b]);
            wal.append(&c).unwrap();
            wal.sync().unwrap();
        }
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(
            on_disk > 3 * 4096,
            "the stale records are still there: {on_disk} B"
        );
        assert_eq!(read_records(&path).unwrap(), vec![c.clone()]);
        let (mut wal, records) = Wal::open(&path).unwrap();
        assert_eq!(records, vec![c.clone()]);
        // Opening cut the stale bytes off; appends go on after `c`.
        wal.append(&c).unwrap();
        drop(wal);
        assert_eq!(read_records(&path).unwrap(), vec![c.clone(), c]);
        // A reset lets go of the spare and leaves an empty log.
        retire(&old_path(&path)).unwrap();
        assert!(spare_path(&path).exists());
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.reset().unwrap();
        assert!(!spare_path(&path).exists());
        drop(wal);
        assert!(read_records(&path).unwrap().is_empty());
    }

    #[test]
    fn a_log_in_the_older_format_is_read_and_written_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let first = vec![op(false, b"T1", Some(b"topic"))];
        // A record as the format without a file header wrote it.
        let mut record = encode(&first, HEADER);
        let len = (record.len() - HEADER) as u32;
        let crc = crc32fast::hash(&record[HEADER..]);
        record[..4].copy_from_slice(&len.to_le_bytes());
        record[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &record).unwrap();
        let (mut wal, records) = Wal::open(&path).unwrap();
        assert_eq!(records, vec![first.clone()]);
        let second = vec![op(true, b"M1", None)];
        wal.append(&second).unwrap();
        drop(wal);
        assert_eq!(read_records(&path).unwrap(), vec![first, second]);
    }

    #[test]
    fn garbage_never_panics() {
        for bytes in [
            vec![],
            vec![0; 3],
            vec![255; 64],
            vec![4, 0, 0, 0, 0, 0, 0, 0, 2, 9],
        ] {
            let _ = record_at(&bytes, 0, None);
            let _ = record_at(&bytes, 0, Some(1));
            let _ = parse(&bytes);
            let _ = decode(&bytes);
        }
    }
}
