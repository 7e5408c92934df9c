//! The write-ahead log: records `[u32 length][u32 crc32][payload]` (little endian), appended and
//! fsynced before a write is answered. Replay stops at the first record that is torn (shorter
//! than its header says) or corrupt (wrong checksum, unreadable payload) and cuts the file
//! there: everything before it was acknowledged, nothing after it was.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// A record longer than this is taken for garbage.
const MAX_RECORD: u32 = 1 << 30;
const HEADER: usize = 8;

pub struct Wal {
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

/// Split `bytes` into intact records; `valid` checks a payload (e.g. that it parses).
pub fn scan(bytes: &[u8], valid: &dyn Fn(&[u8]) -> bool) -> Replay {
    let mut records = Vec::new();
    let mut at = 0usize;
    let cut = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break None;
        }
        let reason = if rest.len() < HEADER {
            Some(format!("a torn record header ({} of {HEADER} bytes)", rest.len()))
        } else {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
            if len > MAX_RECORD {
                Some(format!("a record length of {len} bytes, more than any record"))
            } else if rest.len() - HEADER < len as usize {
                Some(format!("a torn record ({} of {len} bytes)", rest.len() - HEADER))
            } else {
                let payload = &rest[HEADER..HEADER + len as usize];
                if crc32fast::hash(payload) != crc {
                    Some("a checksum mismatch".to_string())
                } else if !valid(payload) {
                    Some("a record that does not parse".to_string())
                } else {
                    records.push(payload.to_vec());
                    at += HEADER + len as usize;
                    None
                }
            }
        };
        if let Some(reason) = reason {
            break Some(Cut {
                offset: at as u64,
                dropped_bytes: (bytes.len() - at) as u64,
                reason,
            });
        }
    };
    Replay { records, cut }
}

/// One record as written.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl Wal {
    /// Open (creating) the log at `path`, replay it and cut a bad tail off the file.
    pub fn open(path: &Path, valid: &dyn Fn(&[u8]) -> bool) -> std::io::Result<(Wal, Replay)> {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let replay = scan(&bytes, valid);
        let len = match &replay.cut {
            Some(cut) => {
                file.set_len(cut.offset)?;
                file.sync_all()?;
                cut.offset
            }
            None => bytes.len() as u64,
        };
        Ok((Wal { file, len }, replay))
    }

    /// Append one record and fsync it.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom};
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
        let r = scan(&log(&[b"{}", b"not json"]), &|p| p.starts_with(b"{"));
        assert_eq!(r.records.len(), 1);
        assert!(r.cut.unwrap().reason.contains("parse"));
    }

    #[test]
    fn open_truncates_the_file_and_appends_after_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        {
            let (mut wal, r) = Wal::open(&path, &ok).unwrap();
            assert!(r.records.is_empty() && r.cut.is_none());
            wal.append(b"one").unwrap();
            wal.append(b"two").unwrap();
        }
        let good = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage at the end").unwrap();
        drop(f);
        let (mut wal, r) = Wal::open(&path, &ok).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.cut.as_ref().unwrap().offset, good);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        wal.append(b"three").unwrap();
        drop(wal);
        let (_, r) = Wal::open(&path, &ok).unwrap();
        assert_eq!(r.records.last().unwrap(), b"three");
        assert!(r.cut.is_none());
    }
}
