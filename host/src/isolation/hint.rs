//! The isolation mode a plugin library suggests (`export_plugin!(MyPlugin, isolation =
//! process)`), read from the file without loading it or running any of its code.
//!
//! The library exports a 16-byte plain-data static, `bkg_isolation_hint_v1`
//! (`bkg_abi::isolation::IsolationHint`: a magic, a version, the mode). This module finds the
//! symbol in the ELF file's dynamic symbol table (`SHT_DYNSYM` and its string table) and reads
//! the bytes at its address through the `PT_LOAD` program header that maps it. Every offset
//! and size is checked against the file before it is read, so a truncated or garbage file is
//! an error naming what is wrong, never a panic or a huge allocation.
//!
//! A file without the symbol suggests nothing (`Ok(None)`: every library built before the
//! option existed). A symbol that is there but malformed is an `Err`: the caller treats it
//! as no suggestion and logs a warning with the message.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use bkg_abi::isolation::{IsolationHint, ISOLATION_HINT_MAGIC, ISOLATION_HINT_SYMBOL};

use super::IsolationMode;

const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const SHN_UNDEF: u16 = 0;
const EHDR_SIZE: u64 = 64;
const SHDR_SIZE: u64 = 64;
const PHDR_SIZE: u64 = 56;
const SYM_SIZE: u64 = 24;

/// The mode the library at `path` suggests: `Ok(None)` when it has no
/// `bkg_isolation_hint_v1` symbol, `Err` (what is wrong) when the file cannot be read as a
/// 64-bit ELF file or the symbol is malformed.
pub fn read_hint(path: &Path) -> Result<Option<IsolationMode>, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| format!("cannot stat {}: {e}", path.display()))?.len();
    read_from(&mut FileAt { file: &mut file, len })
}

/// [`read_hint`] on the bytes of a file.
pub fn read_hint_bytes(mut bytes: &[u8]) -> Result<Option<IsolationMode>, String> {
    read_from(&mut bytes)
}

/// Random access to a file's bytes, each read checked against its length.
trait At {
    fn len(&self) -> u64;
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

struct FileAt<'a> {
    file: &'a mut File,
    len: u64,
}

impl At for FileAt<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(buf)
    }
}

impl At for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()).and_then(|end| self.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// `size` bytes at `offset`, or why they are not in the file (`what` names them).
fn read_range(src: &mut dyn At, offset: u64, size: u64, what: &str) -> Result<Vec<u8>, String> {
    let len = src.len();
    if offset.checked_add(size).is_none_or(|end| end > len) {
        return Err(format!(
            "its {what} (offset {offset}, {size} bytes) lies past the end of the file ({len} bytes)"
        ));
    }
    let mut buf = vec![0u8; size as usize];
    src.read_exact_at(offset, &mut buf).map_err(|e| format!("cannot read its {what}: {e}"))?;
    Ok(buf)
}

/// Integers in the file's byte order.
#[derive(Clone, Copy)]
struct Endian {
    little: bool,
}

impl Endian {
    fn u16(self, b: &[u8], o: usize) -> u16 {
        let x = [b[o], b[o + 1]];
        if self.little {
            u16::from_le_bytes(x)
        } else {
            u16::from_be_bytes(x)
        }
    }
    fn u32(self, b: &[u8], o: usize) -> u32 {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[o..o + 4]);
        if self.little {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    }
    fn u64(self, b: &[u8], o: usize) -> u64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        if self.little {
            u64::from_le_bytes(x)
        } else {
            u64::from_be_bytes(x)
        }
    }
}

fn read_from(src: &mut dyn At) -> Result<Option<IsolationMode>, String> {
    let len = src.len();
    if len < EHDR_SIZE {
        return Err(format!("the file is {len} bytes, too short for an ELF header (64)"));
    }
    let head = read_range(src, 0, EHDR_SIZE, "ELF header")?;
    if &head[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if head[4] != 2 {
        return Err(format!("ELF class {} is not 64-bit (2)", head[4]));
    }
    let e = match head[5] {
        1 => Endian { little: true },
        2 => Endian { little: false },
        other => return Err(format!("unknown ELF data encoding {other}")),
    };
    let (phoff, shoff) = (e.u64(&head, 0x20), e.u64(&head, 0x28));
    let (phentsize, phnum) = (e.u16(&head, 0x36) as u64, e.u16(&head, 0x38) as u64);
    let (shentsize, shnum) = (e.u16(&head, 0x3a) as u64, e.u16(&head, 0x3c) as u64);
    if shnum == 0 {
        // No section table (or more than 0xff00 sections): no dynamic symbol table to search.
        return Ok(None);
    }
    if shentsize < SHDR_SIZE {
        return Err(format!("its section header size is {shentsize}, not at least {SHDR_SIZE}"));
    }
    let sections = read_range(src, shoff, shentsize * shnum, "section header table")?;
    let section = |i: u64| &sections[(i * shentsize) as usize..((i + 1) * shentsize) as usize];
    let Some(dynsym) = (0..shnum).map(section).find(|s| e.u32(s, 4) == SHT_DYNSYM) else {
        return Ok(None);
    };
    let (sym_off, sym_size, link) = (e.u64(dynsym, 0x18), e.u64(dynsym, 0x20), e.u32(dynsym, 0x28));
    let entsize = match e.u64(dynsym, 0x38) {
        0 => SYM_SIZE,
        n if n < SYM_SIZE => {
            return Err(format!("its dynamic symbols are {n} bytes each, not at least {SYM_SIZE}"))
        }
        n => n,
    };
    if link as u64 >= shnum {
        return Err(format!(
            "its dynamic symbol table names string table {link} of {shnum} sections"
        ));
    }
    let strtab = section(link as u64);
    let (str_off, str_size) = (e.u64(strtab, 0x18), e.u64(strtab, 0x20));
    let symbols = read_range(src, sym_off, sym_size, "dynamic symbol table")?;
    let names = read_range(src, str_off, str_size, "dynamic string table")?;
    let wanted = ISOLATION_HINT_SYMBOL.as_bytes();
    let found = symbols.chunks_exact(entsize as usize).find(|sym| {
        let start = e.u32(sym, 0) as usize;
        names.get(start..).and_then(|rest| rest.split(|b| *b == 0).next()) == Some(wanted)
            && names.get(start + wanted.len()) == Some(&0)
    });
    let Some(sym) = found else {
        return Ok(None);
    };
    let (shndx, value, size) = (e.u16(sym, 6), e.u64(sym, 8), e.u64(sym, 16));
    let name = ISOLATION_HINT_SYMBOL;
    if shndx == SHN_UNDEF {
        return Err(format!(
            "{name} is an undefined symbol (the file refers to it, does not define it)"
        ));
    }
    if size != IsolationHint::SIZE as u64 {
        return Err(format!("{name} is {size} bytes, not {}", IsolationHint::SIZE));
    }
    if phentsize < PHDR_SIZE {
        return Err(format!("its program header size is {phentsize}, not at least {PHDR_SIZE}"));
    }
    let programs = read_range(src, phoff, phentsize * phnum, "program header table")?;
    let mut in_bss = false;
    let mut offset = None;
    for ph in programs.chunks_exact(phentsize as usize) {
        if e.u32(ph, 0) != PT_LOAD {
            continue;
        }
        let (p_offset, vaddr, filesz, memsz) =
            (e.u64(ph, 0x08), e.u64(ph, 0x10), e.u64(ph, 0x20), e.u64(ph, 0x28));
        let Some(rel) = value.checked_sub(vaddr) else { continue };
        if rel.checked_add(size).is_some_and(|end| end <= filesz) {
            offset = p_offset.checked_add(rel);
            break;
        }
        in_bss |= rel < memsz;
    }
    let offset = offset.ok_or_else(|| {
        if in_bss {
            format!("{name} at 0x{value:x} lies in zero-filled memory, not in the file")
        } else {
            format!("{name} at 0x{value:x} lies in no loaded segment")
        }
    })?;
    let bytes = read_range(src, offset, size, name)?;
    if bytes[..8] != ISOLATION_HINT_MAGIC {
        return Err(format!("{name} does not start with the magic {:?}", "bkgisol1"));
    }
    let version = e.u32(&bytes, 8);
    if version != IsolationHint::VERSION {
        return Err(format!(
            "{name} is version {version}; this host reads version {}",
            IsolationHint::VERSION
        ));
    }
    match e.u32(&bytes, 12) {
        IsolationHint::IN_PROCESS => Ok(Some(IsolationMode::InProcess)),
        IsolationHint::PROCESS => Ok(Some(IsolationMode::Process)),
        other => Err(format!(
            "{name} names mode {other}, not {} (in_process) or {} (process)",
            IsolationHint::IN_PROCESS,
            IsolationHint::PROCESS
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF file: a header, one PT_LOAD segment mapping the
    /// whole file at address 0x1000, a section table with a null section, `.dynsym` and its
    /// string table, and the symbol pointing at `payload` (whose size is `sym_size`).
    fn elf(payload: &[u8], sym_size: u64) -> Vec<u8> {
        let names = b"\0bkg_isolation_hint_v1\0".to_vec();
        let phoff = 64u64;
        let payload_off = phoff + 56;
        let names_off = payload_off + payload.len() as u64;
        let syms_off = names_off + names.len() as u64;
        let shoff = syms_off + 2 * 24;
        let total = shoff + 3 * 64;
        let mut f = vec![0u8; total as usize];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        let put = |f: &mut Vec<u8>, o: u64, bytes: &[u8]| {
            f[o as usize..o as usize + bytes.len()].copy_from_slice(bytes)
        };
        put(&mut f, 0x10, &3u16.to_le_bytes()); // ET_DYN
        put(&mut f, 0x20, &phoff.to_le_bytes());
        put(&mut f, 0x28, &shoff.to_le_bytes());
        put(&mut f, 0x36, &56u16.to_le_bytes());
        put(&mut f, 0x38, &1u16.to_le_bytes());
        put(&mut f, 0x3a, &64u16.to_le_bytes());
        put(&mut f, 0x3c, &3u16.to_le_bytes());
        // PT_LOAD: offset 0 at vaddr 0x1000, the whole file.
        put(&mut f, phoff, &1u32.to_le_bytes());
        put(&mut f, phoff + 0x10, &0x1000u64.to_le_bytes());
        put(&mut f, phoff + 0x20, &total.to_le_bytes());
        put(&mut f, phoff + 0x28, &total.to_le_bytes());
        put(&mut f, payload_off, payload);
        put(&mut f, names_off, &names);
        // Symbol 1 (0 is the null symbol): name at 1, defined in section 1.
        let sym = syms_off + 24;
        put(&mut f, sym, &1u32.to_le_bytes());
        put(&mut f, sym + 6, &1u16.to_le_bytes());
        put(&mut f, sym + 8, &(0x1000 + payload_off).to_le_bytes());
        put(&mut f, sym + 16, &sym_size.to_le_bytes());
        // Section 1: .dynsym, linked to section 2, the string table.
        let s1 = shoff + 64;
        put(&mut f, s1 + 4, &SHT_DYNSYM.to_le_bytes());
        put(&mut f, s1 + 0x18, &syms_off.to_le_bytes());
        put(&mut f, s1 + 0x20, &48u64.to_le_bytes());
        put(&mut f, s1 + 0x28, &2u32.to_le_bytes());
        put(&mut f, s1 + 0x38, &24u64.to_le_bytes());
        let s2 = shoff + 128;
        put(&mut f, s2 + 4, &3u32.to_le_bytes()); // SHT_STRTAB
        put(&mut f, s2 + 0x18, &names_off.to_le_bytes());
        put(&mut f, s2 + 0x20, &(names.len() as u64).to_le_bytes());
        f
    }

    fn hint(mode: u32, version: u32) -> Vec<u8> {
        let mut b = ISOLATION_HINT_MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&mode.to_le_bytes());
        b
    }

    #[test]
    fn a_well_formed_hint_is_read() {
        let process = elf(&hint(IsolationHint::PROCESS, 1), 16);
        assert_eq!(read_hint_bytes(&process), Ok(Some(IsolationMode::Process)));
        let in_process = elf(&hint(IsolationHint::IN_PROCESS, 1), 16);
        assert_eq!(read_hint_bytes(&in_process), Ok(Some(IsolationMode::InProcess)));
    }

    #[test]
    fn a_malformed_hint_names_what_is_wrong() {
        let err = |f: Vec<u8>| read_hint_bytes(&f).unwrap_err();
        assert!(err(elf(&hint(7, 1), 16)).contains("names mode 7"));
        assert!(err(elf(&hint(2, 9), 16)).contains("is version 9; this host reads version 1"));
        let mut bad_magic = hint(2, 1);
        bad_magic[0] = b'X';
        assert!(err(elf(&bad_magic, 16)).contains("does not start with the magic"));
        assert!(err(elf(&hint(2, 1), 8)).contains("is 8 bytes, not 16"));
    }

    #[test]
    fn every_cut_of_a_file_is_an_error_or_no_hint_never_a_panic() {
        let whole = elf(&hint(IsolationHint::PROCESS, 1), 16);
        for cut in 0..whole.len() {
            if let Err(message) = read_hint_bytes(&whole[..cut]) {
                assert!(!message.is_empty());
            }
        }
        assert!(read_hint_bytes(&whole[..10]).unwrap_err().contains("too short"));
        // Cut inside the section table: named.
        let cut = read_hint_bytes(&whole[..whole.len() - 1]).unwrap_err();
        assert!(cut.contains("section header table") && cut.contains("past the end"), "{cut}");
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert!(read_hint_bytes(b"").unwrap_err().contains("0 bytes"));
        assert_eq!(read_hint_bytes(&[0u8; 100]).unwrap_err(), "not an ELF file");
        let mut junk = vec![0u8; 4096];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            for b in junk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            junk[..6].copy_from_slice(b"\x7fELF\x02\x01");
            let _ = read_hint_bytes(&junk);
        }
        // Flipped bytes of a good file (offsets, sizes, counts): an answer, never a panic.
        let whole = elf(&hint(IsolationHint::PROCESS, 1), 16);
        for i in 0..whole.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut f = whole.clone();
                f[i] = v;
                let _ = read_hint_bytes(&f);
            }
        }
    }

    #[test]
    fn the_running_binary_and_a_32_bit_header_suggest_nothing_or_say_why() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(read_hint(&exe), Ok(None));
        let mut f = elf(&hint(2, 1), 16);
        f[4] = 1;
        assert!(read_hint_bytes(&f).unwrap_err().contains("not 64-bit"));
        assert!(read_hint(Path::new("/nonexistent/lib.so")).unwrap_err().contains("cannot open"));
    }
}
