//! A collection's f32 vectors: in memory, or (while an int8 index searches on its codes) in
//! the file `vectors.f32` of the collection's folder, read back with positioned reads for
//! exact rescoring, exact search and log compaction. The file is derived state: the log is
//! the truth, and the file is rewritten from memory whenever the vectors move to disk.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const FILE: &str = "vectors.f32";

#[derive(Default)]
pub struct Vectors {
    dim: usize,
    slots: usize,
    /// Slot `i`'s vector is `ram[i * dim..]` (empty while on disk).
    ram: Vec<f32>,
    disk: Option<Disk>,
}

struct Disk {
    file: File,
    path: PathBuf,
    /// Vectors whose write to the file failed: kept here instead.
    overlay: HashMap<usize, Vec<f32>>,
}

/// Make room for `need` elements growing by an eighth, not doubling: the memory a vector
/// takes stays within 1.125x of its size (appends still cost amortized O(1)).
pub fn grow_gently<T>(v: &mut Vec<T>, need: usize) {
    if need > v.capacity() {
        let extra = (need - v.len()).max(v.len() / 8);
        v.reserve_exact(extra);
    }
}

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Vectors {
    /// Vectors held in memory: `v` is `slots * dim` long.
    pub fn from_vec(dim: usize, v: Vec<f32>) -> Vectors {
        Vectors { dim, slots: v.len() / dim.max(1), ram: v, disk: None }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// All vectors, when they are in memory.
    pub fn ram(&self) -> Option<&[f32]> {
        self.disk.is_none().then_some(self.ram.as_slice())
    }

    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// `slots` zero vectors of `dim` (a compacted log's layout).
    pub fn reset(&mut self, slots: usize, dim: usize) {
        self.dim = dim;
        self.slots = slots;
        match &mut self.disk {
            None => self.ram = vec![0.0; slots * dim],
            Some(d) => {
                d.overlay.clear();
                let _ = d.file.set_len(0).and_then(|_| d.file.set_len((slots * dim * 4) as u64));
            }
        }
    }

    /// One more (zero) slot.
    pub fn push_slot(&mut self, dim: usize) {
        self.dim = dim;
        self.slots += 1;
        match &mut self.disk {
            None => {
                grow_gently(&mut self.ram, self.slots * dim);
                self.ram.resize(self.slots * dim, 0.0);
            }
            Some(d) => {
                if d.file.set_len((self.slots * dim * 4) as u64).is_err() {
                    d.overlay.insert(self.slots - 1, vec![0.0; dim]);
                }
            }
        }
    }

    pub fn set(&mut self, slot: usize, v: &[f32]) {
        let dim = self.dim;
        match &mut self.disk {
            None => self.ram[slot * dim..(slot + 1) * dim].copy_from_slice(v),
            Some(d) => {
                if d.file.write_all_at(&bytes(v), (slot * dim * 4) as u64).is_ok() {
                    d.overlay.remove(&slot);
                } else {
                    d.overlay.insert(slot, v.to_vec());
                }
            }
        }
    }

    /// Slot `slot`'s vector (zeros if the file cannot be read).
    pub fn get(&self, slot: usize) -> Cow<'_, [f32]> {
        let dim = self.dim;
        match &self.disk {
            None => Cow::Borrowed(&self.ram[slot * dim..(slot + 1) * dim]),
            Some(d) => {
                if let Some(v) = d.overlay.get(&slot) {
                    return Cow::Owned(v.clone());
                }
                let mut buf = vec![0u8; dim * 4];
                if d.file.read_exact_at(&mut buf, (slot * dim * 4) as u64).is_err() {
                    return Cow::Owned(vec![0.0; dim]);
                }
                Cow::Owned(
                    buf.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            }
        }
    }

    /// Every slot's vector in order (from the file in blocks when on disk).
    pub fn for_each(&self, mut f: impl FnMut(usize, &[f32])) {
        let dim = self.dim.max(1);
        match &self.disk {
            None => self.ram.chunks_exact(dim).enumerate().for_each(|(i, v)| f(i, v)),
            Some(d) => {
                const BLOCK: usize = 1024;
                let mut buf = vec![0u8; BLOCK * dim * 4];
                let mut row = vec![0f32; dim];
                for start in (0..self.slots).step_by(BLOCK) {
                    let n = BLOCK.min(self.slots - start);
                    let b = &mut buf[..n * dim * 4];
                    let ok = d.file.read_exact_at(b, (start * dim * 4) as u64).is_ok();
                    for i in 0..n {
                        let slot = start + i;
                        if let Some(v) = d.overlay.get(&slot) {
                            f(slot, v);
                            continue;
                        }
                        for (j, x) in row.iter_mut().enumerate() {
                            let o = (i * dim + j) * 4;
                            *x = if ok {
                                f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
                            } else {
                                0.0
                            };
                        }
                        f(slot, &row);
                    }
                }
            }
        }
    }

    /// A copy of every vector, in memory.
    pub fn copy_all(&self) -> Vec<f32> {
        match self.ram() {
            Some(r) => r.to_vec(),
            None => {
                let mut out = Vec::with_capacity(self.slots * self.dim);
                self.for_each(|_, v| out.extend_from_slice(v));
                out
            }
        }
    }

    /// Move the vectors to `dir/vectors.f32` and free the memory they held.
    pub fn to_disk(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.disk.is_some() {
            return Ok(());
        }
        let path = dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for (i, block) in self.ram.chunks(1024 * self.dim.max(1)).enumerate() {
            file.write_all_at(&bytes(block), (i * 1024 * self.dim * 4) as u64)?;
        }
        self.ram = Vec::new();
        self.disk = Some(Disk { file, path, overlay: HashMap::new() });
        Ok(())
    }

    /// Read the vectors back into memory and remove the file.
    pub fn to_ram(&mut self) {
        if self.disk.is_none() {
            return;
        }
        let all = self.copy_all();
        if let Some(d) = self.disk.take() {
            let _ = std::fs::remove_file(&d.path);
        }
        self.ram = all;
    }

    /// Give back the memory growth reserved ahead.
    pub fn shrink(&mut self) {
        self.ram.shrink_to_fit();
    }

    pub fn bytes_in_memory(&self) -> usize {
        self.ram.capacity() * 4
            + self.disk.as_ref().map_or(0, |d| d.overlay.len() * (self.dim * 4 + 48))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_read_back_the_same_from_disk_and_return_to_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = Vectors::default();
        v.reset(3, 4);
        for s in 0..3 {
            v.set(s, &[s as f32, 1.0, 2.0, 3.5]);
        }
        let before = v.copy_all();
        v.to_disk(dir.path()).unwrap();
        assert!(v.on_disk() && v.ram().is_none() && v.bytes_in_memory() == 0);
        assert_eq!(v.copy_all(), before);
        v.push_slot(4);
        v.set(3, &[9.0, 9.0, 9.0, 9.0]);
        v.set(1, &[7.0, 7.0, 7.0, 7.0]);
        assert_eq!(&*v.get(3), &[9.0, 9.0, 9.0, 9.0]);
        assert_eq!(&*v.get(1), &[7.0, 7.0, 7.0, 7.0]);
        let mut seen = Vec::new();
        v.for_each(|s, x| seen.push((s, x[0])));
        assert_eq!(seen, [(0, 0.0), (1, 7.0), (2, 2.0), (3, 9.0)]);
        v.to_ram();
        assert!(!dir.path().join(FILE).exists());
        assert_eq!(v.ram().unwrap()[12..16], [9.0, 9.0, 9.0, 9.0]);
    }
}
