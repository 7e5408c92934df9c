//! The write-ahead log: records `[u32 length][u32 crc32][payload]` (little endian), appended and
//! fsynced before a write is answered. Replay streams the file and stops at the first record
//! that is torn (shorter than its header says) or corrupt (wrong checksum, unreadable
//! payload); the file is cut there: everything before it was acknowledged, nothing after it
//! was.
//!
//! Compaction replaces the whole log with a shorter one holding the same live state, in two
//! steps so that the long one needs no lock: [`write_rewrite`] writes the live state as of
//! some log length to a temp file `<log>.<n>.compact` and fsyncs it (the collection's lock
//! is not held: queries and writes go on); [`Wal::finish_rewrite`] (under the lock) appends
//! the records written since that length, fsyncs, renames it over the log, fsyncs the folder
//! and appends to the new file from then on. A crash at any step leaves either the old log
//! or the new one whole, each with every acknowledged record; a leftover `.compact` file is
//! removed at the next open.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A record longer than this is taken for garbage.
const MAX_RECORD: u32 = 1 << 30;
const HEADER: usize = 8;

/// The environment variable naming a step at which compaction stops as if the process had
/// crashed there (a test hook): `compact-torn` leaves a half-written temp file beside the old
/// log, `compact-before-tail` a whole one without the records written meanwhile,
/// `compact-before-rename` a whole one with them, and `compact-after-rename` the new log in
/// place with the old file still the one appended to (the process must end there).
pub const FAILPOINT_ENV: &str = "BKG_BRAINML_FAILPOINT";

pub struct Wal {
    path: PathBuf,
    file: File,
    len: u64,
}

/// What replaying a log found.
#[derive(Debug, PartialEq)]
pub struct Replay {
    /// The payloads of the intact records, in order.
    pub records: Vec<Vec<u8>>,
    /// Where the log was cut and why, when its tail was torn or corrupt.
    pub cut: Option<Cut>,
}

#[derive(Debug, PartialEq)]
pub struct Cut {
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Read into `buf` until it is full or the input ends; the number of bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Stream the records of a log of `total` bytes from `r`, handing each intact payload to
/// `each` (which answers false for a payload it cannot read: the log is cut there). Read
/// errors are errors, never a cut.
pub fn scan_stream(
    r: &mut dyn Read,
    total: u64,
    each: &mut dyn FnMut(&[u8]) -> bool,
) -> std::io::Result<Option<Cut>> {
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    loop {
        let got = read_full(r, &mut header)?;
        if got == 0 {
            return Ok(None);
        }
        let reason = if got < HEADER {
            format!("a torn record header ({got} of {HEADER} bytes)")
        } else {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let left = total.saturating_sub(at + HEADER as u64);
            if len > MAX_RECORD {
                format!("a record length of {len} bytes, more than any record")
            } else if (len as u64) > left {
                // Read no further than the file holds (never allocate a garbage length).
                let left = left.min(len as u64) as usize;
                payload.resize(left, 0);
                let got = read_full(r, &mut payload)?;
                format!("a torn record ({got} of {len} bytes)")
            } else {
                payload.resize(len as usize, 0);
                let got = read_full(r, &mut payload)?;
                if got < len as usize {
                    format!("a torn record ({got} of {len} bytes)")
                } else if crc32fast::hash(&payload) != crc {
                    "a checksum mismatch".to_string()
                } else if !each(&payload) {
                    "a record that does not parse".to_string()
                } else {
                    at += (HEADER + len as usize) as u64;
                    continue;
                }
            }
        };
        return Ok(Some(Cut { offset: at, dropped_bytes: total.saturating_sub(at), reason }));
    }
}

/// Split `bytes` into intact records; `valid` checks a payload (e.g. that it parses).
pub fn scan(bytes: &[u8], valid: &dyn Fn(&[u8]) -> bool) -> Replay {
    let mut records = Vec::new();
    let mut keep = |p: &[u8]| {
        let ok = valid(p);
        if ok {
            records.push(p.to_vec());
        }
        ok
    };
    let cut = scan_stream(&mut std::io::Cursor::new(bytes), bytes.len() as u64, &mut keep)
        .expect("reading from memory does not fail");
    Replay { records, cut }
}

/// Replay the log at `path` (absent: empty) without changing it: each intact payload goes to
/// `each`; answers where the log must be cut, if anywhere.
pub fn replay(path: &Path, each: &mut dyn FnMut(&[u8]) -> bool) -> std::io::Result<Option<Cut>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let total = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    scan_stream(&mut r, total, each)
}

/// One record as written.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A temp file of its own for one compaction of the log at `path`: `<log>.<n>.compact`, never
/// the name of another compaction's file (two `Collection`s of one folder can compact at once
/// for a moment: a dropped one whose folder a restore replaced, and the new one).
fn compact_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{nanos:x}-{n}.compact"));
    path.with_file_name(name)
}

/// The temp files of compactions of the log at `path` that never finished (`<log>.compact`,
/// `<log>.<n>.compact`).
pub fn compact_leftovers(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(log)) = (path.parent(), path.file_name()) else { return Vec::new() };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{}.", log.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with(&prefix) && name.ends_with(".compact")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Where a compaction stops early as if it had crashed (see [`FAILPOINT_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failpoint {
    /// The temp file is half written.
    Torn,
    /// The temp file holds the whole live state, fsynced, but not the records written since.
    BeforeTail,
    /// The temp file is whole (with the records written since) and fsynced, not yet renamed.
    BeforeRename,
    /// The new log is renamed in and the folder fsynced; nothing in memory switched to it (the
    /// process must be taken for dead: its appends would go to the old file).
    AfterRename,
}

impl Failpoint {
    pub fn from_env() -> Option<Failpoint> {
        match std::env::var(FAILPOINT_ENV).ok()?.as_str() {
            "compact-torn" => Some(Failpoint::Torn),
            "compact-before-tail" => Some(Failpoint::BeforeTail),
            "compact-before-rename" => Some(Failpoint::BeforeRename),
            "compact-after-rename" => Some(Failpoint::AfterRename),
            _ => None,
        }
    }

    fn hit(self) -> std::io::Error {
        let name = match self {
            Failpoint::Torn => "compact-torn",
            Failpoint::BeforeTail => "compact-before-tail",
            Failpoint::BeforeRename => "compact-before-rename",
            Failpoint::AfterRename => "compact-after-rename",
        };
        std::io::Error::other(format!("failpoint {name}"))
    }
}

/// A compacted log written and fsynced beside the log, not yet in use: [`Wal::finish_rewrite`]
/// completes it, [`Rewrite::abandon`] removes it.
pub struct Rewrite {
    tmp: PathBuf,
    file: File,
    len: u64,
}

impl Rewrite {
    /// Give the compaction up: remove its temp file (the log stays as it is).
    pub fn abandon(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// The compacted log's length so far (without the records written since).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Write `records` (a compacted log) to a new temp file beside the log at `log` and fsync it.
/// It touches neither the log nor its `Wal`, so it runs without the collection's lock; it
/// stops with an `Interrupted` error (removing the file) once `cancelled` answers true. On an
/// error the temp file is removed, except at a failpoint (left as a crash would leave it).
pub fn write_rewrite(
    log: &Path,
    records: &mut dyn Iterator<Item = Vec<u8>>,
    failpoint: Option<Failpoint>,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<Rewrite> {
    let tmp = compact_path(log);
    let written = write_new(&tmp, records, failpoint, cancelled);
    match written {
        Ok((file, len)) => Ok(Rewrite { tmp, file, len }),
        Err(e) => {
            if failpoint.is_none() {
                let _ = std::fs::remove_file(&tmp);
            }
            Err(e)
        }
    }
}

fn write_new(
    tmp: &Path,
    records: &mut dyn Iterator<Item = Vec<u8>>,
    failpoint: Option<Failpoint>,
    cancelled: &dyn Fn() -> bool,
) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut len = 0u64;
    for payload in records {
        if cancelled() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the compaction was cancelled",
            ));
        }
        if payload.len() as u64 > MAX_RECORD as u64 {
            return Err(std::io::Error::other("a compacted record is too large"));
        }
        let framed = frame(&payload);
        if failpoint == Some(Failpoint::Torn) && len > 0 {
            out.write_all(&framed[..framed.len() / 2])?;
            out.flush()?;
            return Err(Failpoint::Torn.hit());
        }
        out.write_all(&framed)?;
        len += framed.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((file, len))
}

impl Wal {
    /// Open (creating) the log at `path` for appending after its last byte, removing the temp
    /// file of an interrupted compaction. Replay it with [`replay`] and [`Wal::cut`] it before
    /// the first append.
    pub fn open(path: &Path) -> std::io::Result<Wal> {
        for tmp in compact_leftovers(path) {
            std::fs::remove_file(&tmp)?;
        }
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        Ok(Wal { path: path.to_path_buf(), file, len })
    }

    /// Cut the file at `offset` (a torn or corrupt tail found by replay) and fsync it.
    pub fn cut(&mut self, offset: u64) -> std::io::Result<()> {
        self.file.set_len(offset)?;
        self.file.sync_all()?;
        self.len = offset;
        Ok(())
    }

    /// The log's length in bytes: every acknowledged record lies before it.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A second handle on the log's current file and its length now: the bytes before that
    /// length never change, even when a compaction replaces the file later (the handle keeps
    /// the old one).
    pub fn reader(&self) -> std::io::Result<(File, u64)> {
        // A handle of its own (a cloned one would share the appender's file offset).
        Ok((File::open(&self.path)?, self.len))
    }

    /// Append one record and fsync it.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if payload.len() as u64 > MAX_RECORD as u64 {
            return Err(std::io::Error::other("the record is too large"));
        }
        let framed = frame(payload);
        self.file.seek(SeekFrom::Start(self.len))?;
        let written = self.file.write_all(&framed).and_then(|_| self.file.sync_data());
        if let Err(e) = written {
            // Leave no half record behind for the next append to follow.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += framed.len() as u64;
        Ok(())
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace the log with one holding exactly `records` (compaction in one go, under the
    /// caller's lock): [`write_rewrite`], then [`Wal::finish_rewrite`]. On an error the old
    /// log stays as it was and in use.
    pub fn rewrite(
        &mut self,
        records: &mut dyn Iterator<Item = Vec<u8>>,
        failpoint: Option<Failpoint>,
    ) -> std::io::Result<()> {
        let new = write_rewrite(&self.path, records, failpoint, &|| false)?;
        self.finish_rewrite(new, self.len, failpoint).map(drop)
    }

    /// Complete a compaction whose records hold the live state as of log length `from`:
    /// append the records written since (bytes `from..len` of the log, copied as they are) to
    /// the temp file, fsync it, rename it over the log, fsync the folder, and append to the
    /// new file from then on. Run it under the lock that orders appends (no append may come
    /// between). On an error before the rename the old log stays as it was and in use.
    /// Answers the old file's handle: drop it after letting go of the lock (closing the last
    /// handle of a large unlinked file frees its blocks, which takes a while).
    pub fn finish_rewrite(
        &mut self,
        new: Rewrite,
        from: u64,
        failpoint: Option<Failpoint>,
    ) -> std::io::Result<File> {
        if from > self.len {
            new.abandon();
            return Err(std::io::Error::other(format!(
                "the compacted state is of a log of {from} bytes; the log holds {}",
                self.len
            )));
        }
        if failpoint == Some(Failpoint::BeforeTail) {
            return Err(Failpoint::BeforeTail.hit());
        }
        let tail = self.len - from;
        let copied = (|| {
            let mut buf = vec![0u8; tail.min(1 << 20) as usize];
            let mut done = 0u64;
            while done < tail {
                let n = (tail - done).min(buf.len() as u64) as usize;
                self.file.read_exact_at(&mut buf[..n], from + done)?;
                new.file.write_all_at(&buf[..n], new.len + done)?;
                done += n as u64;
            }
            new.file.sync_all()
        })();
        if let Err(e) = copied {
            new.abandon();
            return Err(e);
        }
        if failpoint == Some(Failpoint::BeforeRename) {
            return Err(Failpoint::BeforeRename.hit());
        }
        if let Err(e) = std::fs::rename(&new.tmp, &self.path) {
            new.abandon();
            return Err(e);
        }
        // The new file is the log now, whatever the folder's fsync answers: appends must go
        // to it (to the old, unlinked one they would be lost at the next open).
        let synced = sync_dir(&self.path);
        if failpoint == Some(Failpoint::AfterRename) {
            return Err(Failpoint::AfterRename.hit());
        }
        let old = std::mem::replace(&mut self.file, new.file);
        self.len = new.len + tail;
        synced.map(|_| old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &[u8]) -> bool {
        true
    }

    fn log(records: &[&[u8]]) -> Vec<u8> {
        records.iter().flat_map(|r| frame(r)).collect()
    }

    /// Open, replay and cut, the way a collection does.
    fn open(path: &Path) -> (Wal, Replay) {
        let mut records = Vec::new();
        let cut = replay(path, &mut |p| {
            records.push(p.to_vec());
            true
        })
        .unwrap();
        let mut wal = Wal::open(path).unwrap();
        if let Some(c) = &cut {
            wal.cut(c.offset).unwrap();
        }
        (wal, Replay { records, cut })
    }

    #[test]
    fn intact_records_replay_in_order() {
        let r = scan(&log(&[b"one", b"two", b""]), &ok);
        assert_eq!(r.records, vec![b"one".to_vec(), b"two".to_vec(), vec![]]);
        assert_eq!(r.cut, None);
    }

    #[test]
    fn a_torn_tail_is_cut_after_the_last_whole_record() {
        let whole = log(&[b"one", b"two"]);
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&frame(b"three")[..10]);
        let r = scan(&bytes, &ok);
        assert_eq!(r.records.len(), 2);
        let cut = r.cut.unwrap();
        assert_eq!(cut.offset, whole.len() as u64);
        assert_eq!(cut.dropped_bytes, 10);
        assert!(cut.reason.contains("torn"), "{}", cut.reason);
        // A torn header too.
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&[1, 2, 3]);
        let r = scan(&bytes, &ok);
        assert_eq!((r.records.len(), r.cut.unwrap().offset), (2, whole.len() as u64));
    }

    #[test]
    fn a_crc_mismatch_is_cut_with_everything_after_it() {
        let first = frame(b"one");
        let mut bytes = log(&[b"one", b"two", b"three"]);
        bytes[first.len() + HEADER] ^= 0x01; // flip a bit in "two"
        let r = scan(&bytes, &ok);
        assert_eq!(r.records, vec![b"one".to_vec()]);
        let cut = r.cut.unwrap();
        assert_eq!(cut.offset, first.len() as u64);
        assert!(cut.reason.contains("checksum"), "{}", cut.reason);
    }

    #[test]
    fn garbage_lengths_and_unparsable_payloads_are_cut() {
        let mut bytes = log(&[b"one"]);
        bytes.extend_from_slice(&[0xff; 32]);
        let r = scan(&bytes, &ok);
        assert_eq!(r.records.len(), 1);
        assert!(r.cut.unwrap().reason.contains("length"));
        // A plausible length longer than the file: torn, and nothing that large is allocated.
        let mut bytes = log(&[b"one"]);
        bytes.extend_from_slice(&(100_000_000u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let r = scan(&bytes, &ok);
        let cut = r.cut.unwrap();
        assert!(cut.reason.contains("torn record (8 of 100000000"), "{}", cut.reason);
        assert_eq!(cut.dropped_bytes, 16);
        let r = scan(&log(&[b"{}", b"not json"]), &|p| p.starts_with(b"{"));
        assert_eq!(r.records.len(), 1);
        assert!(r.cut.unwrap().reason.contains("parse"));
    }

    #[test]
    fn open_truncates_the_file_and_appends_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        {
            let (mut wal, r) = open(&path);
            assert!(r.records.is_empty() && r.cut.is_none());
            wal.append(b"one").unwrap();
            wal.append(b"two").unwrap();
        }
        let good = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage at the end").unwrap();
        drop(f);
        let (mut wal, r) = open(&path);
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.cut.as_ref().unwrap().offset, good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        wal.append(b"three").unwrap();
        drop(wal);
        let (_, r) = open(&path);
        assert_eq!(r.records.last().unwrap(), b"three");
        assert!(r.cut.is_none());
    }

    #[test]
    fn rewrite_replaces_the_log_and_appends_go_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (mut wal, _) = open(&path);
        for r in [&b"a1"[..], b"a2", b"a3", b"b1"] {
            wal.append(r).unwrap();
        }
        // A reader taken before keeps seeing the old bytes.
        let (mut old, old_len) = wal.reader().unwrap();
        wal.rewrite(&mut vec![b"a3".to_vec(), b"b1".to_vec()].into_iter(), None).unwrap();
        wal.append(b"c1").unwrap();
        let mut bytes = Vec::new();
        old.read_to_end(&mut bytes).unwrap();
        assert_eq!(scan(&bytes[..old_len as usize], &ok).records.len(), 4);
        drop(wal);
        let (_, r) = open(&path);
        assert_eq!(r.records, [b"a3".to_vec(), b"b1".to_vec(), b"c1".to_vec()]);
        assert!(compact_leftovers(&path).is_empty());
    }

    #[test]
    fn a_rewrite_written_without_the_log_gets_the_records_appended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (mut wal, _) = open(&path);
        for r in [&b"a1"[..], b"a2", b"b1"] {
            wal.append(r).unwrap();
        }
        let from = wal.len();
        let new = write_rewrite(
            &path,
            &mut vec![b"a2".to_vec(), b"b1".to_vec()].into_iter(),
            None,
            &|| false,
        )
        .unwrap();
        // Written while the compacted log was being written: copied into it at the end.
        wal.append(b"c1").unwrap();
        wal.append(b"a3").unwrap();
        wal.finish_rewrite(new, from, None).unwrap();
        wal.append(b"d1").unwrap();
        drop(wal);
        let (_, r) = open(&path);
        let want: Vec<Vec<u8>> =
            [&b"a2"[..], b"b1", b"c1", b"a3", b"d1"].iter().map(|r| r.to_vec()).collect();
        assert_eq!(r.records, want);
        assert!(r.cut.is_none() && compact_leftovers(&path).is_empty());
    }

    #[test]
    fn a_cancelled_rewrite_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (mut wal, _) = open(&path);
        wal.append(b"a1").unwrap();
        let e = write_rewrite(&path, &mut vec![b"a1".to_vec()].into_iter(), None, &|| true)
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted);
        assert!(compact_leftovers(&path).is_empty());
        assert_eq!(std::fs::read(&path).unwrap(), frame(b"a1"));
    }

    #[test]
    fn a_snapshot_reader_starts_at_byte_0_and_leaves_appends_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let (mut wal, _) = open(&path);
        wal.append(b"one").unwrap();
        let (mut reader, len) = wal.reader().unwrap();
        let mut first = [0u8; 4];
        reader.read_exact(&mut first).unwrap(); // reading moves no offset of the log's own
        wal.append(b"two").unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(&first[..], &frame(b"one")[..4]);
        assert_eq!(scan(&[&first[..], &rest[..len as usize - 4]].concat(), &ok).records, [b"one"]);
        drop(wal);
        assert_eq!(open(&path).1.records, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_compaction_that_stops_early_leaves_the_old_log_whole() {
        for failpoint in [Failpoint::Torn, Failpoint::BeforeTail, Failpoint::BeforeRename] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("wal.log");
            let (mut wal, _) = open(&path);
            for r in [&b"a1"[..], b"a2", b"b1"] {
                wal.append(r).unwrap();
            }
            let new = vec![b"a2".to_vec(), b"b1".to_vec()];
            let e = wal.rewrite(&mut new.into_iter(), Some(failpoint)).unwrap_err();
            assert!(e.to_string().contains("failpoint"), "{e}");
            // As if the process died here: the temp file is left behind.
            assert_eq!(compact_leftovers(&path).len(), 1, "{failpoint:?}");
            drop(wal);
            let (mut wal, r) = open(&path);
            assert_eq!(r.records, [b"a1".to_vec(), b"a2".to_vec(), b"b1".to_vec()]);
            assert!(r.cut.is_none());
            assert!(compact_leftovers(&path).is_empty(), "the leftover temp file is removed");
            wal.append(b"c1").unwrap();
            drop(wal);
            assert_eq!(open(&path).1.records.len(), 4);
        }
    }
}
