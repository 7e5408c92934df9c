//! A repository's index on disk: `<data-dir>/plugin-data/repoagent/index/<repo>.bin`, so a
//! restart or a swap answers at once from it (and then re-reads only the files that changed,
//! `index::refresh`).
//!
//! The format is our own, written field by field (no serde: the index holds tokei's and our
//! enums, and a compact, checked binary form costs little code):
//!
//! ```text
//! magic  b"BKGRAIDX"            8 bytes
//! format u32 LE                 FORMAT: bumped when the layout or what an entry means changes
//! rules  u64 LE                 fingerprint(): the queries' text and FORMAT (a new query set
//!                               makes every saved index foreign)
//! body                          the index (varints, length-prefixed strings; per file its
//!                               names once, its definitions and references by index)
//! check  u64 LE                 a 64-bit FNV-1a of everything before it
//! ```
//!
//! Written atomically (a temp file, fsync, rename, fsync of the folder). Read whole, checked
//! (magic, format, fingerprint, checksum, every length against what is left) before anything is
//! built: a damaged or foreign file is an `Err` naming why, never a panic. Metrics are not saved
//! (computed again on first use).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bkg_abi::Error;

use crate::index::{FileEntry, RepoIndex};
use crate::lang::Lang;
use crate::stats::Counts;
use crate::symbols::{FileSymbols, Kind, Ref, RefKind, Symbol};

/// The folder under the plugin's data dir.
pub const DIR: &str = "index";
const MAGIC: &[u8; 8] = b"BKGRAIDX";
/// Bump when the layout changes or what a saved entry means does (counting or extraction
/// rules): every saved index of another format is indexed again from scratch. A test pins
/// what a fixed sample saves with this number, and fails until it is bumped.
pub const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8;
const TRAILER: usize = 8;

/// Where the index of repository `name` is saved, under the plugin's data dir.
pub fn path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(DIR).join(format!("{name}.bin"))
}

/// 64-bit FNV-1a, streamed.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// What the saved entries depend on besides the layout: the symbol queries (a new one finds
/// other definitions) and FORMAT.
pub fn fingerprint() -> u64 {
    let mut h = Fnv::new();
    h.update(&FORMAT.to_le_bytes());
    for lang in Lang::ALL {
        h.update(lang.name().as_bytes());
        h.update(crate::symbols::query_source(lang).as_bytes());
    }
    h.0
}

/// The writer: buffered, the checksum kept as the bytes go out.
struct Enc {
    file: std::fs::File,
    buf: Vec<u8>,
    hash: Fnv,
}

const FLUSH_AT: usize = 256 * 1024;

impl Enc {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.hash.update(&self.buf);
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
    fn u8(&mut self, v: u8) -> std::io::Result<()> {
        self.bytes(&[v])
    }
    fn var(&mut self, mut v: u64) -> std::io::Result<()> {
        let mut out = [0u8; 10];
        let mut n = 0;
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out[n] = low;
                n += 1;
                break;
            }
            out[n] = low | 0x80;
            n += 1;
        }
        self.bytes(&out[..n])
    }
    fn str(&mut self, s: &[u8]) -> std::io::Result<()> {
        self.var(s.len() as u64)?;
        self.bytes(s)
    }
    fn set(&mut self, set: &BTreeSet<String>) -> std::io::Result<()> {
        self.var(set.len() as u64)?;
        for s in set {
            self.str(s.as_bytes())?;
        }
        Ok(())
    }
    fn opt_index(&mut self, v: Option<usize>) -> std::io::Result<()> {
        self.var(v.map_or(0, |i| i as u64 + 1))
    }
}

fn lang_index(l: Lang) -> usize {
    Lang::ALL.iter().position(|x| *x == l).unwrap_or(0)
}

fn kind_index(k: Kind) -> u8 {
    Kind::ALL.iter().position(|x| *x == k).unwrap_or(0) as u8
}

const REF_KINDS: [RefKind; 3] = [RefKind::Call, RefKind::Type, RefKind::Other];

fn ref_kind_index(k: RefKind) -> u8 {
    REF_KINDS.iter().position(|x| *x == k).unwrap_or(2) as u8
}

fn write_body(e: &mut Enc, index: &RepoIndex) -> std::io::Result<()> {
    e.str(index.name.as_bytes())?;
    e.str(index.root.as_os_str().as_bytes())?;
    e.var(index.generation)?;
    e.var(index.indexed_at)?;
    e.var(index.indexed_ms)?;
    // tokei's languages by name (stable across tokei's releases, unlike its enum's order).
    let mut tokei: Vec<tokei::LanguageType> =
        index.files.values().filter_map(|f| f.tokei).collect();
    tokei.sort();
    tokei.dedup();
    e.var(tokei.len() as u64)?;
    for t in &tokei {
        e.str(t.name().as_bytes())?;
    }
    e.set(&index.dirs)?;
    e.set(&index.skipped_large)?;
    e.set(&index.skipped_binary)?;
    e.var(index.files.len() as u64)?;
    for (rel, f) in &index.files {
        e.str(rel.as_bytes())?;
        e.opt_index(f.lang.map(lang_index))?;
        e.opt_index(f.tokei.and_then(|t| tokei.binary_search(&t).ok()))?;
        e.var(f.bytes)?;
        e.bytes(&f.mtime_ns.to_le_bytes())?;
        e.var(f.inode)?;
        match f.counts {
            Some(c) => {
                e.u8(1)?;
                for v in [c.lines, c.code, c.comments, c.blanks] {
                    e.var(v)?;
                }
            }
            None => e.u8(0)?,
        }
        let s = &f.symbols;
        // The file's names once (a name is referenced on many lines), then indices into them.
        let mut names: Vec<&str> = Vec::new();
        let mut ids: HashMap<&str, u64> = HashMap::new();
        let all =
            s.defs.iter().flat_map(|d| std::iter::once(d.name.as_str()).chain(d.parent.as_deref()));
        for n in all.chain(s.refs.iter().map(|r| r.name.as_str())) {
            ids.entry(n).or_insert_with(|| {
                names.push(n);
                names.len() as u64 - 1
            });
        }
        e.var(names.len() as u64)?;
        for n in &names {
            e.str(n.as_bytes())?;
        }
        e.var(s.defs.len() as u64)?;
        for d in &s.defs {
            e.u8(kind_index(d.kind))?;
            e.var(ids[d.name.as_str()])?;
            e.var(u64::from(d.line))?;
            e.var(u64::from(d.end_line))?;
            e.var(d.parent.as_deref().map_or(0, |p| ids[p] + 1))?;
            e.str(d.signature.as_bytes())?;
            e.opt_index(d.parent_index.map(|i| i as usize))?;
        }
        e.var(s.refs.len() as u64)?;
        for r in &s.refs {
            e.var(ids[r.name.as_str()])?;
            e.var(u64::from(r.line))?;
            e.u8(ref_kind_index(r.kind))?;
        }
    }
    Ok(())
}

/// Save `index` into `data_dir`'s index folder atomically; the bytes written.
pub fn save(data_dir: &Path, index: &RepoIndex) -> Result<u64, Error> {
    let io = |what: String, e: std::io::Error| Error::internal(format!("{what}: {e}"));
    let dir = data_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| io(format!("creating {}", dir.display()), e))?;
    let path = path(data_dir, &index.name);
    let tmp = dir.join(format!(".{}.bin.tmp", index.name));
    let file = std::fs::File::create(&tmp).map_err(|e| io(format!("{}", tmp.display()), e))?;
    let mut e = Enc { file, buf: Vec::with_capacity(FLUSH_AT + 4096), hash: Fnv::new() };
    let written = (|| {
        e.bytes(MAGIC)?;
        e.bytes(&FORMAT.to_le_bytes())?;
        e.bytes(&fingerprint().to_le_bytes())?;
        write_body(&mut e, index)?;
        e.flush()?;
        let check = e.hash.0.to_le_bytes();
        e.file.write_all(&check)?;
        e.file.sync_all()?;
        e.file.metadata().map(|m| m.len())
    })();
    let bytes = match written {
        Ok(b) => b,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(format!("writing {}", tmp.display()), err));
        }
    };
    drop(e);
    std::fs::rename(&tmp, &path).map_err(|e| io(format!("renaming to {}", path.display()), e))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}

/// Delete the saved index of `name` (none saved is fine).
pub fn remove(data_dir: &Path, name: &str) -> Result<(), Error> {
    let path = path(data_dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::internal(format!("deleting {}: {e}", path.display()))),
    }
}

/// The reader over the checked body: every read bounds-checked.
struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

type R<T> = Result<T, String>;

fn short() -> String {
    "it ends early".to_string()
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(short)?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn var(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number is too long".into())
    }
    fn u32(&mut self) -> R<u32> {
        u32::try_from(self.var()?).map_err(|_| "a line number is out of range".to_string())
    }
    /// A count of items each at least `min` bytes long: never more than what is left.
    fn count(&mut self, min: usize) -> R<usize> {
        let n = self.var()?;
        let left = (self.b.len() - self.at) / min.max(1);
        usize::try_from(n).ok().filter(|&n| n <= left).ok_or_else(short)
    }
    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.count(1)?;
        self.take(n)
    }
    fn string(&mut self) -> R<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }
    fn set(&mut self) -> R<BTreeSet<String>> {
        let n = self.count(1)?;
        (0..n).map(|_| self.string()).collect()
    }
    fn opt_index(&mut self, len: usize, what: &str) -> R<Option<usize>> {
        match self.var()? {
            0 => Ok(None),
            i if i <= len as u64 => Ok(Some(i as usize - 1)),
            i => Err(format!("{what} {i} is out of range")),
        }
    }
}

fn read_body(d: &mut Dec<'_>) -> R<RepoIndex> {
    let name = d.string()?;
    let root = PathBuf::from(std::ffi::OsString::from_vec(d.bytes()?.to_vec()));
    let generation = d.var()?;
    let indexed_at = d.var()?;
    let indexed_ms = d.var()?;
    let by_name: BTreeMap<&str, tokei::LanguageType> =
        tokei::LanguageType::list().iter().map(|(t, _)| (t.name(), *t)).collect();
    let n = d.count(1)?;
    let mut tokei = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.string()?;
        let t = by_name.get(name.as_str()).ok_or_else(|| format!("unknown language {name:?}"))?;
        tokei.push(*t);
    }
    let dirs = d.set()?;
    let skipped_large = d.set()?;
    let skipped_binary = d.set()?;
    let n = d.count(1)?;
    let mut files = BTreeMap::new();
    for _ in 0..n {
        let rel = d.string()?;
        let lang = d.opt_index(Lang::ALL.len(), "language")?.map(|i| Lang::ALL[i]);
        let tokei = d.opt_index(tokei.len(), "tokei language")?.map(|i| tokei[i]);
        let bytes = d.var()?;
        let mtime: [u8; 16] = d.take(16)?.try_into().map_err(|_| short())?;
        let inode = d.var()?;
        let counts = match d.u8()? {
            0 => None,
            1 => Some(Counts {
                lines: d.var()?,
                code: d.var()?,
                comments: d.var()?,
                blanks: d.var()?,
            }),
            x => return Err(format!("a counts flag is {x}")),
        };
        let nn = d.count(1)?;
        let names: Vec<String> = (0..nn).map(|_| d.string()).collect::<R<_>>()?;
        let name_at = |i: u64| {
            names.get(i as usize).cloned().ok_or_else(|| format!("name {i} is out of range"))
        };
        let nd = d.count(6)?;
        let mut defs = Vec::with_capacity(nd);
        for _ in 0..nd {
            let k = usize::from(d.u8()?);
            let kind = *Kind::ALL.get(k).ok_or_else(|| format!("kind {k} is out of range"))?;
            let name = name_at(d.var()?)?;
            let (line, end_line) = (d.u32()?, d.u32()?);
            let parent = match d.var()? {
                0 => None,
                i => Some(name_at(i - 1)?),
            };
            let signature = d.string()?;
            let parent_index = d.opt_index(nd, "a parent index")?.map(|i| i as u32);
            defs.push(Symbol { kind, name, line, end_line, parent, signature, parent_index });
        }
        let nr = d.count(3)?;
        let mut refs = Vec::with_capacity(nr);
        for _ in 0..nr {
            let name = name_at(d.var()?)?;
            let line = d.u32()?;
            let k = usize::from(d.u8()?);
            let kind = *REF_KINDS.get(k).ok_or_else(|| format!("ref kind {k} is out of range"))?;
            refs.push(Ref { name, line, kind });
        }
        let entry = FileEntry {
            lang,
            tokei,
            bytes,
            mtime_ns: i128::from_le_bytes(mtime),
            inode,
            counts,
            symbols: Arc::new(FileSymbols { defs, refs }),
            metrics: None,
        };
        files.insert(rel, entry);
    }
    Ok(RepoIndex {
        name,
        root,
        files,
        generation,
        dirs,
        skipped_large,
        skipped_binary,
        indexed_at,
        indexed_ms,
    })
}

/// Load the saved index of repository `name` at `root`: `Ok(None)` when none is saved, `Err`
/// saying why one cannot be used (damaged, foreign, another repository's).
pub fn load(data_dir: &Path, name: &str, root: &Path) -> Result<Option<RepoIndex>, String> {
    let path = path(data_dir, name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("it cannot be read: {e}")),
    };
    let index = decode(&bytes)?;
    drop(bytes);
    if index.name != name {
        return Err(format!("it holds repository {:?}", index.name));
    }
    if index.root != root {
        return Err(format!("it was saved for folder {}", index.root.display()));
    }
    Ok(Some(index))
}

/// Check and decode a saved index.
pub fn decode(bytes: &[u8]) -> R<RepoIndex> {
    if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
        return Err("it is not a repoagent index (no header)".into());
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| short())?);
    if format != FORMAT {
        return Err(format!("it has format {format}, this build reads {FORMAT}"));
    }
    let (data, check) = bytes.split_at(bytes.len() - TRAILER);
    let mut h = Fnv::new();
    h.update(data);
    if h.0.to_le_bytes() != check {
        return Err("its checksum does not match (the file is damaged)".into());
    }
    let rules = u64::from_le_bytes(bytes[12..20].try_into().map_err(|_| short())?);
    if rules != fingerprint() {
        return Err("it was made with other symbol queries (another build)".into());
    }
    let mut d = Dec { b: data, at: HEADER };
    let index = read_body(&mut d)?;
    if d.at != data.len() {
        return Err(format!("{} bytes are left over", data.len() - d.at));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn sample(root: &Path) -> RepoIndex {
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(
            root.join("src/lib.rs"),
            "/// Doc.\npub struct P { x: u32 }\nimpl P {\n    pub fn get(&self) -> u32 { self.x }\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("a.py"), "def f():\n    return g()\n").unwrap();
        std::fs::write(root.join("notes.txt"), "hi\n").unwrap();
        std::fs::write(root.join("bin.dat"), b"a\0b").unwrap();
        std::fs::write(root.join("big.rs"), vec![b'a'; 3000]).unwrap();
        let reader = crate::index::Reader::default();
        let walked = crate::walk::walk(root, root, 1000, &|| false).unwrap();
        let done = AtomicUsize::new(0);
        crate::index::build("r", root, walked, 1000, &reader, &done, &|| false).unwrap()
    }

    fn same(a: &RepoIndex, b: &RepoIndex) {
        assert_eq!((&a.name, &a.root, a.generation), (&b.name, &b.root, b.generation));
        assert_eq!((a.indexed_at, a.indexed_ms), (b.indexed_at, b.indexed_ms));
        assert_eq!(
            (&a.dirs, &a.skipped_large, &a.skipped_binary),
            (&b.dirs, &b.skipped_large, &b.skipped_binary)
        );
        assert_eq!(a.files.keys().collect::<Vec<_>>(), b.files.keys().collect::<Vec<_>>());
        for (k, x) in &a.files {
            let y = &b.files[k];
            assert_eq!(
                (x.lang, x.tokei, x.bytes, x.mtime_ns, x.inode),
                (y.lang, y.tokei, y.bytes, y.mtime_ns, y.inode)
            );
            assert_eq!(x.counts, y.counts);
            // Symbols compared by their JSON (parent_index is skipped there: compared apart).
            assert_eq!(
                serde_json::to_value(&*x.symbols).unwrap(),
                serde_json::to_value(&*y.symbols).unwrap()
            );
            let pi = |s: &FileSymbols| s.defs.iter().map(|d| d.parent_index).collect::<Vec<_>>();
            assert_eq!(pi(&x.symbols), pi(&y.symbols));
        }
    }

    #[test]
    fn a_saved_index_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("repo");
        let index = sample(&root);
        assert!(index.files["src/lib.rs"].symbols.defs.iter().any(|d| d.parent_index.is_some()));
        assert!(index.files["src/lib.rs"].inode != 0);
        let data = dir.path().join("data");
        assert!(matches!(load(&data, "r", &root), Ok(None)));
        let bytes = save(&data, &index).unwrap();
        assert_eq!(std::fs::metadata(path(&data, "r")).unwrap().len(), bytes);
        assert!(!data.join(DIR).join(".r.bin.tmp").exists());
        let back = load(&data, "r", &root).unwrap().unwrap();
        same(&index, &back);
        // Another repository's name or folder is refused.
        assert!(load(&data, "r", &root.join("x")).unwrap_err().contains("saved for folder"));
        remove(&data, "r").unwrap();
        remove(&data, "r").unwrap();
        assert!(matches!(load(&data, "r", &root), Ok(None)));
    }

    /// FORMAT and a hash of the body saved for [`sample`] (its folder, times and inodes fixed).
    const PINNED: (u32, u64) = (1, 0x81e5c326f7fffb07);

    /// What a fixed sample saves is pinned with the FORMAT it was saved under, so that a change
    /// to the layout, or to what counting or extraction put into an entry, fails here until
    /// FORMAT is bumped (every index saved in the old format is then indexed again) and the
    /// pin is updated. FORMAT was bumped by hand only, and a forgotten bump would have loaded
    /// old entries as if they were new.
    #[test]
    fn the_body_saved_for_a_fixed_sample_is_pinned_with_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("repo");
        let mut index = sample(&root);
        index.root = PathBuf::from("/pinned/repo");
        (index.indexed_at, index.indexed_ms) = (0, 0);
        for f in index.files.values_mut() {
            (f.mtime_ns, f.inode) = (0, 0);
        }
        let data = dir.path().join("data");
        save(&data, &index).unwrap();
        let bytes = std::fs::read(path(&data, "r")).unwrap();
        let mut h = Fnv::new();
        h.update(&bytes[HEADER..bytes.len() - TRAILER]);
        assert_eq!(
            (FORMAT, h.0),
            PINNED,
            "the saved body of the sample changed: if the layout or what an entry means \
             changed, bump FORMAT (old indexes are then indexed again); if only the symbol \
             queries changed (fingerprint() already makes old indexes foreign), keep FORMAT; \
             then pin ({FORMAT}, {:#x})",
            h.0
        );
    }

    #[test]
    fn a_damaged_or_foreign_index_is_refused_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("repo");
        let index = sample(&root);
        let data = dir.path().join("data");
        save(&data, &index).unwrap();
        let good = std::fs::read(path(&data, "r")).unwrap();
        // Every single byte flipped, anywhere: refused, never a panic.
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            assert!(decode(&bad).is_err(), "byte {at} flipped was accepted");
        }
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(decode(&bad).unwrap_err().contains("checksum"));
        // Cut short, anywhere.
        for len in (0..good.len()).step_by(7) {
            assert!(decode(&good[..len]).is_err(), "cut at {len} was accepted");
        }
        // Another format, with a valid checksum: named.
        let mut other = good[..good.len() - TRAILER].to_vec();
        other[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        let mut h = Fnv::new();
        h.update(&other);
        other.extend_from_slice(&h.0.to_le_bytes());
        assert!(decode(&other).unwrap_err().contains("format 2"), "{:?}", decode(&other).err());
        // Other queries.
        let mut other = good[..good.len() - TRAILER].to_vec();
        other[12] ^= 1;
        let mut h = Fnv::new();
        h.update(&other);
        other.extend_from_slice(&h.0.to_le_bytes());
        assert!(decode(&other).unwrap_err().contains("symbol queries"));
        assert!(decode(b"not an index at all, no").unwrap_err().contains("not a repoagent index"));
    }
}
