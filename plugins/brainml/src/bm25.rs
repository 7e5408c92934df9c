//! BM25 over chunks: a lowercase tokenizer that splits on anything not alphanumeric, an
//! inverted index from term to (chunk slot, term frequency), updated in place on every write.

use std::collections::HashMap;

/// Lowercased words: runs of alphanumeric characters.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[derive(Debug, Default)]
pub struct Bm25 {
    postings: HashMap<String, HashMap<usize, u32>>,
    lengths: HashMap<usize, u32>,
    total_len: u64,
}

impl Bm25 {
    pub fn insert(&mut self, slot: usize, text: &str) {
        let tokens = tokenize(text);
        self.lengths.insert(slot, tokens.len() as u32);
        self.total_len += tokens.len() as u64;
        for t in tokens {
            *self.postings.entry(t).or_default().entry(slot).or_insert(0) += 1;
        }
    }

    pub fn remove(&mut self, slot: usize, text: &str) {
        if let Some(len) = self.lengths.remove(&slot) {
            self.total_len -= len as u64;
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
        let n = self.lengths.len() as f64;
        if n == 0.0 {
            return Vec::new();
        }
        let avg = (self.total_len as f64 / n).max(1.0);
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        let mut scores: HashMap<usize, f64> = HashMap::new();
        for t in terms {
            let Some(p) = self.postings.get(&t) else { continue };
            let df = p.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (&slot, &tf) in p {
                if !keep(slot) {
                    continue;
                }
                let len = self.lengths.get(&slot).copied().unwrap_or(0) as f64;
                let tf = tf as f64;
                let s = idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avg));
                *scores.entry(slot).or_insert(0.0) += s;
            }
        }
        scores.into_iter().collect()
    }

    /// A rough count of the bytes the index holds.
    pub fn bytes(&self) -> u64 {
        let terms: usize = self.postings.iter().map(|(t, p)| t.len() + 48 + p.len() * 24).sum();
        (terms + self.lengths.len() * 24) as u64
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
