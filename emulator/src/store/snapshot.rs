//! The index snapshot: what the messaging runtime knew at a clean shutdown, so the next
//! start does not have to read every delivery record to rebuild it.
//!
//! It is valid only for the exact state it was taken from. It is written after the
//! shutdown's final checkpoint, only if no write was submitted after the runtime took it,
//! and it is deleted as the store opens, before any write, so a store changed afterwards
//! (and then killed) is never read with a stale snapshot. A start that replays records from
//! the write-ahead log has changed since the snapshot too and ignores it.
//!
//! File: `MAGIC | crc32 (u32 BE) of the body | body`; the body's encoding is the caller's.

use std::fs;
use std::io::Write as _;
use std::path::Path;

/// File name inside the store folder (sled ignores files it does not own).
pub(super) const FILE: &str = "index.snapshot";
const MAGIC: &[u8; 8] = b"SBIDX\x00\x00\x01";

/// Writes `body` durably: a temporary file, synced, renamed over the old one, and the
/// folder synced.
pub(super) fn write(dir: &Path, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&crc32fast::hash(body).to_be_bytes())?;
    file.write_all(body)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Reads and deletes the snapshot: its body when the file is whole, `None` when there is
/// none or it is damaged (a torn or foreign file is never trusted).
pub(super) fn take(dir: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let path = dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    fs::remove_file(&path)?;
    fs::File::open(dir)?.sync_all()?;
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .and_then(|rest| rest.split_at_checked(4))
        .filter(|(crc, body)| crc32fast::hash(body).to_be_bytes() == **crc)
        .map(|(_, body)| body.to_vec());
    if body.is_none() {
        tracing::warn!("index snapshot damaged; rebuilding the index from the records");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_once_and_only_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), b"index").unwrap();
        assert_eq!(take(dir.path()).unwrap().as_deref(), Some(&b"index"[..]));
        assert_eq!(take(dir.path()).unwrap(), None, "deleted when read");
        write(dir.path(), b"index").unwrap();
        let path = dir.path().join(FILE);
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(take(dir.path()).unwrap(), None, "a flipped bit");
        fs::write(&path, b"SB").unwrap();
        assert_eq!(take(dir.path()).unwrap(), None, "torn");
        assert!(!path.exists());
    }
}
