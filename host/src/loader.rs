//! The loader: the only module that opens and closes shared libraries, and the only one
//! with `unsafe` code.
//!
//! Every candidate file is copied to a unique shadow path (a sequence number in the name) and
//! opened from there, so that a file being replaced in the plugins folder can
//! never change code that is already mapped, and each version gets its own `dlopen` handle.
//! Opening goes through abi_stable's lower-level path (`RawLibrary`, then
//! `lib_header_from_raw_library`, then `init_root_module`), which keeps every check but,
//! unlike `RootModule::load_from_file`, neither caches nor leaks the library.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use bkg_abi::ffi::PluginModRef;
use bkg_abi::heap::{HeapCounter, HeapExport, HEAP_EXPORT_SYMBOL};
use sha2::{Digest, Sha256};

/// Why a file could not be loaded. Messages are short and say what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("empty file: nothing to load")]
    Empty,
    #[error("not a shared library: {0}")]
    NotALibrary(String),
    #[error("truncated library: {0}")]
    Truncated(String),
    #[error("cannot write shadow copy {path}: {source}")]
    Shadow { path: PathBuf, source: std::io::Error },
    #[error("cannot open library: {0}")]
    Open(String),
    #[error("not a bkg plugin: {0}")]
    NotAPlugin(String),
    #[error("incompatible plugin interface: {0}")]
    Incompatible(String),
    #[error("plugin module failed to initialise: {0}")]
    Init(String),
}

/// Whether a closed library really left the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    /// No longer mapped: its code and statics are gone.
    Unloaded,
    /// `dlclose` returned but the library is still mapped (e.g. a thread it started still
    /// runs, or a thread-local destructor it registered is pending). It stays until exit.
    Pinned,
    /// This platform gives no way to tell.
    Unknown,
}

/// A library's heap counter (`bkg_abi::heap`), readable while the library is open. Reading
/// it runs no plugin code: it sums counters in the library's memory, holding the gauge's read
/// lock for the whole sum. [`LoadedLibrary::close`] takes the write lock to detach it before
/// the library is unmapped, so a close waits for every read in progress, and a reader that
/// comes later sees `None` instead of touching freed memory.
#[derive(Debug)]
pub struct HeapGauge(RwLock<Option<&'static HeapCounter>>);

impl HeapGauge {
    /// Bytes the library holds through its global allocator; `None` when it does not count
    /// them (built before bkg-abi 0.1.1, or with `heap = untracked`) or once it is closed.
    pub fn bytes(&self) -> Option<u64> {
        // The guard lives until the sum is done: the counter's memory belongs to the
        // library, which `close` cannot unmap while a reader holds the lock.
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        let bytes = (*guard).map(HeapCounter::live_bytes);
        drop(guard);
        bytes
    }

    /// Detach the counter. Returns once no reader is summing it any more.
    fn detach(&self) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// An opened plugin library. Field order matters: `library` is dropped last.
pub struct LoadedLibrary {
    module: PluginModRef,
    heap: Arc<HeapGauge>,
    pub source: PathBuf,
    pub shadow: PathBuf,
    /// The copy's SHA-256, when it was hashed before opening (see [`Staged::sha256`]).
    pub sha256: Option<String>,
    pub size: u64,
    /// What the copy still lacks (see [`stage`]), until [`LoadedLibrary::fill_and_hash`].
    rest: std::sync::Mutex<Option<Rest>>,
    library: RawLibrary,
}

/// The full sha256 of a file, hex.
pub fn hash_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The full sha256 of a file's contents, hex, read through a 256 KiB buffer (a plugin of tens
/// of MiB never sits in memory whole).
pub fn hash_file(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    let read_err = |e: std::io::Error| LoadError::Read { path: path.into(), source: e };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// Check from its headers that a file is a complete shared library of this platform (what
/// the loader checks before `dlopen`); used to refuse a bad upload before it reaches the
/// plugins folder.
pub fn check_library_file(path: &Path) -> Result<(), LoadError> {
    let read_err = |e: std::io::Error| LoadError::Read { path: path.into(), source: e };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let len = file.metadata().map_err(read_err)?.len();
    preflight(&mut file, len)
}

/// Check the file looks like this platform's shared library before asking the dynamic
/// linker, so that junk gets a one-line explanation. Reads only the headers.
fn preflight(file: &mut fs::File, len: u64) -> Result<(), LoadError> {
    if len == 0 {
        return Err(LoadError::Empty);
    }
    let mut head = vec![0u8; len.min(64) as usize];
    read_at(file, 0, &mut head)?;
    let (magic, what): (&[&[u8]], &str) = if cfg!(target_os = "linux") {
        (&[b"\x7fELF"], "an ELF file")
    } else if cfg!(target_os = "macos") {
        (&[b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe"], "a Mach-O file")
    } else {
        (&[b"MZ"], "a PE file")
    };
    if !magic.iter().any(|m| head.starts_with(m)) {
        return Err(LoadError::NotALibrary(format!("the file ({len} bytes) is not {what}")));
    }
    if cfg!(target_os = "linux") {
        check_elf_complete(file, &head, len)?;
    }
    Ok(())
}

fn read_at(file: &mut fs::File, offset: u64, buf: &mut [u8]) -> Result<(), LoadError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| LoadError::NotALibrary(format!("cannot read its headers: {e}"));
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    file.read_exact(buf).map_err(io)
}

/// A truncated ELF file can still `dlopen` (the dynamic linker maps what the program headers
/// name and never looks at the section table at the end) and then fault when a missing page
/// is touched. So check that every byte the headers refer to is present.
fn check_elf_complete(file: &mut fs::File, head: &[u8], len: u64) -> Result<(), LoadError> {
    let truncated = |needed: u64| {
        LoadError::Truncated(format!(
            "the file is {len} bytes but its ELF headers need {needed} (a copy that has not finished?)"
        ))
    };
    if head.len() < 64 {
        return Err(truncated(64));
    }
    // 64-bit little-endian only; other layouts are left to the dynamic linker.
    if head[4] != 2 || head[5] != 1 {
        return Ok(());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(x)
    };
    let (phoff, shoff) = (u64_at(head, 0x20), u64_at(head, 0x28));
    let (phentsize, phnum) = (u16_at(head, 0x36), u16_at(head, 0x38));
    let (shentsize, shnum) = (u16_at(head, 0x3a), u16_at(head, 0x3c));
    let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    if sh_end > len {
        return Err(truncated(sh_end));
    }
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > len {
        return Err(truncated(ph_end));
    }
    if phentsize < 0x28 {
        return Err(LoadError::NotALibrary("its ELF program headers are malformed".into()));
    }
    // At most 65535 entries of at most 65535 bytes: read the table, not the file.
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    read_at(file, phoff, &mut table)?;
    for entry in table.chunks_exact(phentsize as usize) {
        let end = u64_at(entry, 0x08).saturating_add(u64_at(entry, 0x20));
        if end > len {
            return Err(truncated(end));
        }
    }
    Ok(())
}

/// [`hash_file`] on a thread of its own at a low CPU priority (nice 10, on Linux), waited for.
/// The registry hashes a swapped-in copy right after the switch, while the new generation
/// answers its first calls: at the normal priority the hash (about 0.5 ms per MiB) took the CPU
/// from those calls on a busy machine. It still runs when nothing else wants the CPU, and gets
/// about a tenth of a CPU against busy threads of the normal priority.
pub fn hash_file_in_background(path: &Path) -> Result<String, LoadError> {
    let owned = path.to_path_buf();
    run_in_background(move || hash_file(&owned))
}

/// Run `work` on a thread of its own at nice 10 and wait for it (here, if no thread starts).
fn run_in_background(
    work: impl FnOnce() -> Result<String, LoadError> + Send + 'static,
) -> Result<String, LoadError> {
    let work = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
    let take =
        |work: &std::sync::Mutex<Option<_>>| work.lock().unwrap_or_else(|p| p.into_inner()).take();
    let theirs = work.clone();
    let spawned = std::thread::Builder::new().name("bkg-hash".into()).spawn(move || {
        lower_priority(10);
        take(&theirs).map(|work| work())
    });
    let done = match spawned {
        Ok(thread) => thread.join().ok().flatten(),
        Err(e) => {
            tracing::debug!("cannot start a thread to hash a library, hashing here: {e}");
            None
        }
    };
    match done {
        Some(result) => result,
        None => match take(&work) {
            Some(work) => work(),
            None => Err(LoadError::Init("the thread hashing the library panicked".into())),
        },
    }
}

/// Lower the calling thread's CPU priority to nice `nice` (Linux keeps a nice value per
/// thread). Best effort: on failure the thread keeps its priority.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = nix::unistd::gettid().as_raw() as nix::libc::id_t;
        // SAFETY: setpriority reads and writes no memory of this process; it only changes
        // the scheduling priority of the thread `tid`, which is the calling thread.
        let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, nice) };
        if rc != 0 {
            tracing::debug!(
                "cannot lower the thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// A candidate copied into the shadow folder, not yet opened.
pub struct Staged {
    pub source: PathBuf,
    pub shadow: PathBuf,
    /// The copy's SHA-256: `None` until [`Staged::hash`] (or the registry, after a swap's
    /// switch) computes it. Hashing costs about 0.5 ms per MiB, so it is kept off a swap's path
    /// unless the registry needs it to decide (a file whose size matches the loaded one's).
    pub sha256: Option<String>,
    /// The source's size: the copy's, once it is whole.
    pub size: u64,
    /// What [`stage`] left out of the copy, to be filled in by [`Staged::fill`] or
    /// [`LoadedLibrary::fill_and_hash`]; `None` once the copy is whole.
    rest: Option<Rest>,
}

/// Bytes `[start, end)` of a source that [`stage`] did not copy (a hole in the copy), with the
/// source still open: a file renamed over it meanwhile does not change what is filled in.
struct Rest {
    from: fs::File,
    start: u64,
    end: u64,
}

impl Rest {
    fn copy_into(self, source: &Path, shadow: &Path) -> Result<(), LoadError> {
        let Rest { from, start, end } = self;
        copy_range(&from, source, shadow, start, end)
    }
}

/// Copy bytes `[start, end)` of `from` to the same place in the existing file `shadow`, by
/// the kernel where it can.
fn copy_range(
    from: &fs::File,
    source: &Path,
    shadow: &Path,
    start: u64,
    end: u64,
) -> Result<(), LoadError> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |e: std::io::Error| LoadError::Read { path: source.into(), source: e };
    let shadow_err = |e: std::io::Error| LoadError::Shadow { path: shadow.into(), source: e };
    let mut out = fs::OpenOptions::new().write(true).open(shadow).map_err(shadow_err)?;
    let mut input = from;
    input.seek(SeekFrom::Start(start)).map_err(read_err)?;
    out.seek(SeekFrom::Start(start)).map_err(shadow_err)?;
    let copied = std::io::copy(&mut input.take(end - start), &mut out).map_err(shadow_err)?;
    if copied != end - start {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file shrank while it was copied (bytes {start}..{end} of it expected)"),
        )));
    }
    Ok(())
}

impl Staged {
    /// A copy that is already whole (a new name for another staged copy).
    pub fn whole(source: PathBuf, shadow: PathBuf, sha256: Option<String>, size: u64) -> Staged {
        Staged { source, shadow, sha256, size, rest: None }
    }

    /// Remove the copy without opening it.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.shadow);
    }

    /// Copy in what [`stage`] left out: the copy is the whole file from here on (what a child
    /// process opening it, or a hash, needs).
    pub fn fill(&mut self) -> Result<(), LoadError> {
        match self.rest.take() {
            Some(rest) => rest.copy_into(&self.source, &self.shadow),
            None => Ok(()),
        }
    }

    /// The copy's SHA-256, computed now (the copy filled first) if it was not yet.
    pub fn hash(&mut self) -> Result<&str, LoadError> {
        if self.sha256.is_none() {
            self.fill()?;
            self.sha256 = Some(hash_file(&self.shadow)?);
        }
        Ok(self.sha256.as_deref().unwrap_or_default())
    }
}

/// Holes smaller than this are copied with the rest.
const MIN_HOLE: u64 = 1 << 20;

/// The bytes of a 64-bit little-endian ELF file that nothing reads to open it, check it or
/// read its isolation hint: after every segment the program headers name and every section
/// that is loaded (`SHF_ALLOC`), and before the section header table and the sections after
/// it. In a library built with debug information that is most of the file (its `.debug_*`
/// sections). `None` for anything else, or when the hole would be small.
fn unread_range(file: &mut fs::File, len: u64) -> Option<(u64, u64)> {
    const PAGE: u64 = 64 * 1024;
    let mut head = [0u8; 64];
    read_at(file, 0, &mut head).ok()?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
    let (phoff, shoff) = (u64_at(&head, 0x20), u64_at(&head, 0x28));
    let (phentsize, phnum) = (u16_at(&head, 0x36), u16_at(&head, 0x38));
    let (shentsize, shnum) = (u16_at(&head, 0x3a), u16_at(&head, 0x3c));
    if phentsize < 0x38 || shentsize < 0x40 || shnum == 0 {
        return None;
    }
    let ph_end = phoff.checked_add(phentsize * phnum)?;
    let sh_end = shoff.checked_add(shentsize * shnum)?;
    if ph_end > len || sh_end > len {
        return None;
    }
    let mut programs = vec![0u8; (phentsize * phnum) as usize];
    read_at(file, phoff, &mut programs).ok()?;
    let mut sections = vec![0u8; (shentsize * shnum) as usize];
    read_at(file, shoff, &mut sections).ok()?;
    // Everything up to `start` is copied: the headers, every segment, every loaded section.
    let mut start = ph_end.max(64);
    for ph in programs.chunks_exact(phentsize as usize) {
        start = start.max(u64_at(ph, 0x08).checked_add(u64_at(ph, 0x20))?);
    }
    let mut end = shoff;
    for sh in sections.chunks_exact(shentsize as usize) {
        const SHF_ALLOC: u64 = 2;
        const SHT_NOBITS: u32 = 8;
        let kind = u32::from_le_bytes(sh[4..8].try_into().unwrap_or([0; 4]));
        let (offset, size) = (u64_at(sh, 0x18), u64_at(sh, 0x20));
        let size = if kind == SHT_NOBITS { 0 } else { size };
        let section_end = offset.checked_add(size)?;
        if u64_at(sh, 0x08) & SHF_ALLOC != 0 {
            start = start.max(section_end);
        } else if section_end > start && offset < end && section_end > end {
            // A section that runs over the end of the hole: the hole stops before it.
            end = end.min(offset);
        }
    }
    // Whole pages past the last mapped one: writing the hole later never touches a page that
    // is mapped (64 KiB covers every page size Linux uses).
    let start = start.checked_next_multiple_of(PAGE)?;
    (end > start && end - start >= MIN_HOLE).then_some((start, end))
}

/// Copy `source` into `shadow_dir` as `<stem>-<seq>.<ext>`, by the kernel where it can
/// (`copy_file_range`: no pass through this process's memory; a reflink on file systems that
/// share blocks). The copy is not hashed here (see [`Staged::sha256`]) and not synced: it is
/// a scratch file the host removes at start, never read back after a crash.
///
/// Of a library with a large part that nothing reads to open it (see [`unread_range`]: its
/// debug information), that part is left out as a hole in the copy, filled in after the swap's
/// switch ([`LoadedLibrary::fill_and_hash`]) or before a child process opens the copy
/// ([`Staged::fill`]). The loaded segments are in the copy before anything opens it, and the
/// hole lies in pages no mapping covers.
pub fn stage(source: &Path, shadow_dir: &Path, seq: u64) -> Result<Staged, LoadError> {
    let read_err = |e: std::io::Error| LoadError::Read { path: source.into(), source: e };
    let mut input = fs::File::open(source).map_err(read_err)?;
    let size = input.metadata().map_err(read_err)?.len();
    let part = shadow_dir.join(format!(".stage-{seq}.part"));
    fs::File::create(&part).map_err(|e| LoadError::Shadow { path: part.clone(), source: e })?;
    let hole = if cfg!(target_os = "linux") { unread_range(&mut input, size) } else { None };
    let copied = match hole {
        Some((start, end)) => copy_range(&input, source, &part, 0, start)
            .and_then(|()| copy_range(&input, source, &part, end, size)),
        None => copy_range(&input, source, &part, 0, size),
    };
    if let Err(e) = copied {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let ext =
        source.extension().and_then(|s| s.to_str()).unwrap_or(std::env::consts::DLL_EXTENSION);
    let shadow = shadow_dir.join(format!("{stem}-{seq}.{ext}"));
    if let Err(e) = fs::rename(&part, &shadow) {
        let _ = fs::remove_file(&part);
        return Err(LoadError::Shadow { path: shadow, source: e });
    }
    let rest = hole.map(|(start, end)| Rest { from: input, start, end });
    Ok(Staged { source: source.into(), shadow, sha256: None, size, rest })
}

/// Shorten abi_stable's error reports (the layout report runs to hundreds of lines).
fn summarize(err: &LibraryError) -> LoadError {
    match err {
        LibraryError::OpenError { err, .. } => LoadError::Open(one_line(&err.to_string())),
        LibraryError::GetSymbolError { .. } => {
            LoadError::NotAPlugin("the library exports no abi_stable root module".into())
        }
        LibraryError::InvalidAbiHeader(h) => {
            LoadError::Incompatible(format!("built with an incompatible abi_stable (header {h:?})"))
        }
        LibraryError::IncompatibleVersionNumber {
            library_name,
            expected_version,
            actual_version,
        } => LoadError::Incompatible(format!(
            "{library_name}: the plugin was built against interface {actual_version}, \
                 this host speaks {expected_version}"
        )),
        LibraryError::AbiInstability(report) => {
            let text = report.to_string();
            tracing::debug!(report = %text, "full abi_stable layout report");
            LoadError::Incompatible(format!(
                "type layout differs from the host's ({})",
                layout_hint(&text)
            ))
        }
        LibraryError::RootModule { err, .. } => LoadError::Init(one_line(&err.to_string())),
        other => LoadError::Incompatible(one_line(&other.to_string())),
    }
}

fn one_line(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut out: String = line.chars().take(300).collect();
    if line.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Pull the most telling parts (the first error and the mismatched values) out of the report:
/// `Error:<what>` then `Expected:` and `Found:`, each with its value on the same or next line.
fn layout_hint(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let value_after = |i: usize, label: &str| -> String {
        let inline = lines[i][label.len()..].trim();
        if !inline.is_empty() {
            return inline.to_string();
        }
        lines[i + 1..].iter().find(|l| !l.is_empty()).map(|l| l.to_string()).unwrap_or_default()
    };
    let Some(err) = lines.iter().position(|l| l.starts_with("Error:")) else {
        return one_line(report);
    };
    let mut parts = vec![value_after(err, "Error:")];
    for label in ["Expected:", "Found:"] {
        if let Some(i) = lines[err..].iter().position(|l| l.starts_with(label)).map(|i| i + err) {
            parts.push(format!(
                "{} {}",
                label.trim_end_matches(':').to_lowercase(),
                value_after(i, label)
            ));
        }
    }
    one_line(&parts.join("; "))
}

impl LoadedLibrary {
    /// Copy `source` to a fresh shadow path in `shadow_dir` and open it.
    pub fn open(source: &Path, shadow_dir: &Path, seq: u64) -> Result<Self, LoadError> {
        Self::open_staged(stage(source, shadow_dir, seq)?)
    }

    /// Check and open a staged copy.
    pub fn open_staged(staged: Staged) -> Result<Self, LoadError> {
        Self::open_checked(staged, true)
    }

    /// Open a shadow copy another process staged (a plugin's child process opening what the
    /// host staged for it) with the same checks. The file is the host's: it is never removed
    /// here, whatever happens.
    pub fn open_shadow(shadow: &Path) -> Result<Self, LoadError> {
        let size = fs::metadata(shadow)
            .map_err(|e| LoadError::Shadow { path: shadow.into(), source: e })?
            .len();
        let staged = Staged::whole(shadow.into(), shadow.into(), None, size);
        Self::open_checked(staged, false)
    }

    fn open_checked(staged: Staged, owned: bool) -> Result<Self, LoadError> {
        let Staged { source, shadow, sha256, size, rest } = staged;
        let began = std::time::Instant::now();
        let remove = |shadow: &Path| {
            if owned {
                let _ = fs::remove_file(shadow);
            }
        };
        let checked = fs::File::open(&shadow)
            .map_err(|e| LoadError::Shadow { path: shadow.clone(), source: e })
            .and_then(|mut f| preflight(&mut f, size));
        if let Err(e) = checked {
            remove(&shadow);
            return Err(e);
        }
        let checked_at = std::time::Instant::now();
        let library = match RawLibrary::load_at(&shadow) {
            Ok(lib) => lib,
            Err(e) => {
                let err = summarize(&e);
                remove(&shadow);
                return Err(err);
            }
        };
        let opened_at = std::time::Instant::now();
        // SAFETY: the header and the module reference point into `library`. Both are kept
        // only inside this struct, which drops `library` last, and `close` is the only way
        // the library is closed; callers must have dropped every value obtained through the
        // module (the registry joins the instance's threads first).
        let module = match unsafe { lib_header_from_raw_library(&library) }
            .and_then(|header| header.init_root_module::<PluginModRef>())
        {
            Ok(module) => module,
            Err(e) => {
                // Turn the error into owned text before the library goes away: some
                // variants borrow from it.
                let err = summarize(&e);
                drop(e);
                drop(library);
                remove(&shadow);
                return Err(err);
            }
        };
        let module_at = std::time::Instant::now();
        let heap = Arc::new(HeapGauge(RwLock::new(heap_counter(&library))));
        tracing::debug!(
            shadow = %shadow.display(),
            preflight_us = checked_at.duration_since(began).as_micros() as u64,
            dlopen_us = opened_at.duration_since(checked_at).as_micros() as u64,
            root_module_us = module_at.duration_since(opened_at).as_micros() as u64,
            heap_symbol_us = module_at.elapsed().as_micros() as u64,
            "library opened"
        );
        let rest = std::sync::Mutex::new(rest);
        Ok(Self { module, heap, source, shadow, sha256, size, rest, library })
    }

    /// The plugin's root module. Valid only while `self` is alive.
    pub fn module(&self) -> PluginModRef {
        self.module
    }

    /// Fill in what the copy lacks (see [`stage`]), then hash it, on a thread of low priority
    /// ([`hash_file_in_background`]). The hole lies past every mapped page, so writing it
    /// changes nothing the library runs.
    pub fn fill_and_hash(&self) -> Result<String, LoadError> {
        let rest = self.rest.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (source, shadow) = (self.source.clone(), self.shadow.clone());
        run_in_background(move || {
            if let Some(rest) = rest {
                rest.copy_into(&source, &shadow)?;
            }
            hash_file(&shadow)
        })
    }

    /// The library's heap counter (see [`HeapGauge`]).
    pub fn heap(&self) -> Arc<HeapGauge> {
        self.heap.clone()
    }

    /// Close the library and report whether it really left the process. The caller must have
    /// joined every thread that ran plugin code and dropped every value from the plugin.
    pub fn close(self) -> Residency {
        let LoadedLibrary { shadow, library, heap, .. } = self;
        // Waits for any heap read in progress (see `HeapGauge`), then no reader can start.
        heap.detach();
        drop(library);
        let residency = residency(&shadow);
        let _ = fs::remove_file(&shadow);
        residency
    }
}

impl LoadedLibrary {
    /// Never close the library: a thread of the plugin is still running its code. The
    /// library stays mapped until the process exits (the shadow file stays too).
    pub fn abandon(self) -> Residency {
        tracing::warn!(shadow = %self.shadow.display(), "library abandoned in memory: a plugin thread is stuck");
        std::mem::forget(self.library);
        Residency::Pinned
    }
}

/// The library's heap counter, if it exports a valid one (`bkg_abi::heap::HeapExport`).
fn heap_counter(library: &RawLibrary) -> Option<&'static HeapCounter> {
    let symbol = format!("{HEAP_EXPORT_SYMBOL}\0");
    // SAFETY: `export_plugin!` defines this symbol as a `static HeapExport`; dlsym gives its
    // address, which is what a `&HeapExport` is. A foreign library could define the name
    // otherwise: the magic value, version and shard count must match before the counter is
    // used. The `'static` references point into `library`; the gauge holding them is detached
    // in `LoadedLibrary::close` before the library is unmapped.
    let export: &'static HeapExport =
        unsafe { *library.get::<&'static HeapExport>(symbol.as_bytes()).ok()? };
    if export.is_valid() {
        Some(export.counter)
    } else {
        tracing::warn!(
            symbol = HEAP_EXPORT_SYMBOL,
            "the library exports an unknown heap counter; its heap is not shown"
        );
        None
    }
}

/// Look the shadow path up in the process's memory map.
pub fn residency(shadow: &Path) -> Residency {
    if !cfg!(target_os = "linux") {
        return Residency::Unknown;
    }
    match fs::read_to_string("/proc/self/maps") {
        Ok(maps) => {
            let needle = shadow.to_string_lossy();
            if maps.lines().any(|l| l.contains(needle.as_ref())) {
                Residency::Pinned
            } else {
                Residency::Unloaded
            }
        }
        Err(_) => Residency::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_bytes(bytes: &[u8]) -> Result<(), LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candidate.so");
        fs::write(&path, bytes).unwrap();
        preflight(&mut fs::File::open(&path).unwrap(), bytes.len() as u64)
    }

    #[test]
    fn preflight_rejects_empty_and_junk() {
        assert!(matches!(check_bytes(b""), Err(LoadError::Empty)));
        let err = check_bytes(b"hello world, not a library").unwrap_err();
        assert!(err.to_string().starts_with("not a shared library"), "{err}");
    }

    #[test]
    fn preflight_spots_a_truncated_copy_of_a_real_library() {
        // The running test binary is a complete ELF file; any cut of it must be refused.
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_bytes(&exe).is_ok());
        for cut in [10, 100, exe.len() / 3, exe.len() - 1] {
            let err = check_bytes(&exe[..cut]).unwrap_err();
            assert!(matches!(err, LoadError::Truncated(_)), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn staging_copies_and_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("p.so");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&source, &data).unwrap();
        let mut staged = stage(&source, dir.path(), 7).unwrap();
        assert_eq!(staged.sha256, None, "hashed on the path");
        assert_eq!(staged.size, data.len() as u64);
        assert_eq!(fs::read(&staged.shadow).unwrap(), data);
        assert_eq!(staged.shadow.file_name().unwrap().to_str().unwrap(), "p-7.so");
        assert_eq!(staged.hash().unwrap(), hash_bytes(&data));
        assert_eq!(hash_file(&source).unwrap(), hash_bytes(&data));
        staged.discard();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only the source is left");
    }

    /// Regression (issue 15, swap latency): a library is staged without the part nothing
    /// reads to open it (its debug information), and filled in later to the same bytes.
    #[test]
    fn a_library_is_staged_without_its_unread_part_and_filled_in_to_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("p.so");
        // The running test binary: an ELF file with debug information.
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        fs::write(&source, &exe).unwrap();
        let mut staged = stage(&source, dir.path(), 3).unwrap();
        let (start, end) = staged.rest.as_ref().map(|r| (r.start, r.end)).expect("a hole");
        let (start, end) = (start as usize, end as usize);
        let copy = fs::read(&staged.shadow).unwrap();
        assert_eq!(copy.len(), exe.len());
        assert!(copy[..start] == exe[..start] && copy[end..] == exe[end..]);
        assert!(copy[start..end].iter().all(|b| *b == 0), "the hole was copied");
        assert!(exe[start..end].iter().any(|b| *b != 0));
        // The copy passes the checks made before dlopen as it is.
        preflight(&mut fs::File::open(&staged.shadow).unwrap(), staged.size).unwrap();
        // Renaming another file over the source changes nothing that is filled in.
        fs::write(dir.path().join("other.so"), b"another file").unwrap();
        fs::rename(dir.path().join("other.so"), &source).unwrap();
        assert_eq!(staged.hash().unwrap(), hash_bytes(&exe));
        assert_eq!(fs::read(&staged.shadow).unwrap(), exe);
        staged.discard();
    }

    #[test]
    fn a_cut_library_is_staged_whole_and_refused_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("p.so");
        let exe = fs::read(std::env::current_exe().unwrap()).unwrap();
        fs::write(&source, &exe[..exe.len() / 2]).unwrap();
        let staged = stage(&source, dir.path(), 4).unwrap();
        assert!(staged.rest.is_none(), "a hole in a cut file");
        assert_eq!(fs::read(&staged.shadow).unwrap(), &exe[..exe.len() / 2]);
        let err = LoadedLibrary::open_staged(staged).err().expect("a cut library opened");
        assert!(matches!(err, LoadError::Truncated(_)), "{err}");
    }

    #[test]
    fn layout_hint_keeps_the_mismatch() {
        let report =
            "lots\nof\nlines\nError: Mismatched field type\nExpected: u32\nFound: u64\nmore";
        assert_eq!(layout_hint(report), "Mismatched field type; expected u32; found u64");
        let report = "x\n\nError:mismatched package\nExpected:\n    bkg-abi\nFound:\n    other\n";
        assert_eq!(layout_hint(report), "mismatched package; expected bkg-abi; found other");
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
