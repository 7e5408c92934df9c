//! BM25 over chunks: a lowercase tokenizer that splits on anything not alphanumeric, an
//! inverted index from term to (chunk slot, term frequency), updated in place on every write.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A term's postings: slot -> term frequency, hashed by a multiply (slots are small integers
/// we assign, so SipHash's flood resistance buys nothing for them).
type Postings = HashMap<usize, u32, BuildHasherDefault<SlotHasher>>;

#[derive(Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Lowercased words: runs of alphanumeric characters.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[derive(Debug, Default)]
pub struct Bm25 {
    postings: HashMap<String, Postings>,
    /// Slot -> its length in tokens; `ABSENT` where the slot holds no text.
    lengths: Vec<u32>,
    /// Slots with a length.
    count: usize,
    total_len: u64,
}

const ABSENT: u32 = u32::MAX;

impl Bm25 {
    pub fn insert(&mut self, slot: usize, text: &str) {
        let tokens = tokenize(text);
        if self.lengths.len() <= slot {
            self.lengths.resize(slot + 1, ABSENT);
        }
        if self.lengths[slot] == ABSENT {
            self.count += 1;
        } else {
            self.total_len -= self.lengths[slot] as u64;
        }
        let len = tokens.len().min(ABSENT as usize - 1) as u32;
        self.lengths[slot] = len;
        self.total_len += len as u64;
        for t in tokens {
            *self.postings.entry(t).or_default().entry(slot).or_insert(0) += 1;
        }
    }

    pub fn remove(&mut self, slot: usize, text: &str) {
        if let Some(len) = self.lengths.get_mut(slot).filter(|l| **l != ABSENT) {
            self.total_len -= *len as u64;
            *len = ABSENT;
            self.count -= 1;
        }
        for t in tokenize(text) {
            if let Some(p) = self.postings.get_mut(&t) {
                p.remove(&slot);
                if p.is_empty() {
                    self.postings.remove(&t);
                }
            }
        }
    }

    /// Scores of the chunks that contain a query term and pass `keep`.
    pub fn search(
        &self,
        query: &str,
        k1: f64,
        b: f64,
        keep: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, f64)> {
        let n = self.count as f64;
        if n == 0.0 {
            return Vec::new();
        }
        let avg = (self.total_len as f64 / n).max(1.0);
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        // Scores by slot, and the slots scored (NaN = not scored yet, and not allowed ones
        // stay NaN after a first look: `keep` is asked once per slot).
        let mut scores = vec![f64::NAN; self.lengths.len()];
        let mut seen = vec![false; self.lengths.len()];
        let mut scored = Vec::new();
        for t in terms {
            let Some(p) = self.postings.get(&t) else { continue };
            let df = p.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (&slot, &tf) in p {
                if !seen[slot] {
                    seen[slot] = true;
                    if !keep(slot) {
                        continue;
                    }
                    scores[slot] = 0.0;
                    scored.push(slot);
                } else if scores[slot].is_nan() {
                    continue;
                }
                let len = self.lengths[slot] as f64;
                let tf = tf as f64;
                scores[slot] += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avg));
            }
        }
        scored.into_iter().map(|slot| (slot, scores[slot])).collect()
    }

    /// A rough count of the bytes the index holds.
    pub fn bytes(&self) -> u64 {
        let terms: usize = self.postings.iter().map(|(t, p)| t.len() + 48 + p.len() * 24).sum();
        (terms + self.lengths.capacity() * 4) as u64
    }
}

/// Reciprocal-rank fusion: each ranking (best first) adds `1 / (k + rank)` (rank from 1).
pub fn rrf(rankings: &[Vec<usize>], k: f64) -> Vec<(usize, f64)> {
    let mut scores: HashMap<usize, f64> = HashMap::new();
    for ranking in rankings {
        for (i, &slot) in ranking.iter().enumerate() {
            *scores.entry(slot).or_insert(0.0) += 1.0 / (k + (i + 1) as f64);
        }
    }
    let mut out: Vec<(usize, f64)> = scores.into_iter().collect();
    sort_best_first(&mut out);
    out
}

/// Sort (slot, score) best first; ties by slot so answers are stable.
pub fn sort_best_first(v: &mut [(usize, f64)]) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizer_lowercases_and_splits_on_non_alphanumerics() {
        assert_eq!(
            tokenize("Hello, World! It's 2024-v2"),
            ["hello", "world", "it", "s", "2024", "v2"]
        );
        assert!(tokenize(" ,.;").is_empty());
    }

    #[test]
    fn rarer_terms_and_denser_matches_rank_higher() {
        let mut idx = Bm25::default();
        idx.insert(0, "the cat sat on the mat");
        idx.insert(1, "the dog chased the cat around the garden and the house");
        idx.insert(2, "the quick brown fox");
        idx.insert(3, "a warranty disclaimer: there is no warranty");
        let mut hits = idx.search("cat", 1.2, 0.75, &|_| true);
        sort_best_first(&mut hits);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1], "the shorter chunk first");
        let mut hits = idx.search("warranty fox", 1.2, 0.75, &|_| true);
        sort_best_first(&mut hits);
        assert_eq!(hits[0].0, 3, "two occurrences beat one: {hits:?}");
        // A common word weighs less than a rare one.
        let mut hits = idx.search("the fox", 1.2, 0.75, &|_| true);
        sort_best_first(&mut hits);
        assert_eq!(hits[0].0, 2, "{hits:?}");
        // The filter and removal take chunks out.
        assert!(idx.search("fox", 1.2, 0.75, &|s| s != 2).is_empty());
        idx.remove(2, "the quick brown fox");
        assert!(idx.search("fox", 1.2, 0.75, &|_| true).is_empty());
        assert_eq!(idx.search("the", 1.2, 0.75, &|_| true).len(), 2);
    }

    #[test]
    fn rrf_rewards_agreement_between_rankings() {
        let fused = rrf(&[vec![1, 2, 3], vec![4, 2, 3]], 60.0);
        let order: Vec<usize> = fused.iter().map(|f| f.0).collect();
        assert_eq!(order, [2, 3, 1, 4], "found by both beats first in one: {fused:?}");
        assert!((fused[0].1 - 2.0 / 62.0).abs() < 1e-12, "{fused:?}");
        assert!((fused[1].1 - 2.0 / 63.0).abs() < 1e-12, "{fused:?}");
        assert!((fused[2].1 - 1.0 / 61.0).abs() < 1e-12, "{fused:?}");
    }
}
