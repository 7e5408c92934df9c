//! Retrieval quality of `brainml` on a labelled set nobody here wrote: the Debian package
//! descriptions in /var/lib/dpkg/status. Each package's long description (the indented lines
//! after `Description:`) is a document whose id is the package name; its one-line summary is
//! the query, and the one relevant document is that package's. Real host, real `candle`, real
//! all-MiniLM-L6-v2. The figures are recorded in docs/benchmarks-brainml.md.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use crate::brainml::{brain_host, hit_ids, ok};

const STATUS: &str = "/var/lib/dpkg/status";
/// At most this many packages (evenly spread over the name-sorted list), so embedding stays
/// fast on two cores.
const MAX_DOCS: usize = 400;
/// A long description shorter than this many words is left out.
const MIN_WORDS: usize = 20;

/// One package: (name, summary, long description with its whitespace collapsed).
pub(crate) type Package = (String, String, String);

/// The packages of a dpkg status file with a summary and a long description.
pub(crate) fn packages(status: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let (mut name, mut summary, mut long, mut in_description) = (None, None, Vec::new(), false);
        for line in stanza.lines() {
            if let Some(n) = line.strip_prefix("Package:") {
                name = Some(n.trim().to_string());
            }
            if let Some(s) = line.strip_prefix("Description:") {
                summary = Some(s.trim().to_string());
                in_description = true;
            } else if in_description && line.starts_with(' ') {
                // " ." is an empty line between paragraphs.
                let l = line.trim();
                long.push(if l == "." { "" } else { l });
            } else {
                in_description = false;
            }
        }
        if let (Some(name), Some(summary)) = (name, summary) {
            let long = long.join(" ").split_whitespace().collect::<Vec<_>>().join(" ");
            out.push((name, summary, long));
        }
    }
    out
}

/// The labelled set: packages whose long description has at least [`MIN_WORDS`] words and
/// does not contain the summary verbatim (BM25 would win trivially), whose long description
/// and summary are no other package's (the one relevant document is unambiguous), sorted by
/// name and thinned evenly to at most [`MAX_DOCS`].
pub(crate) fn labelled_set(all: Vec<Package>) -> Vec<Package> {
    let lower = |s: &str| s.to_lowercase();
    let mut longs: HashMap<String, usize> = HashMap::new();
    let mut summaries: HashMap<String, usize> = HashMap::new();
    for (_, s, l) in &all {
        *longs.entry(l.clone()).or_default() += 1;
        *summaries.entry(lower(s)).or_default() += 1;
    }
    let mut kept: BTreeMap<String, Package> = BTreeMap::new();
    for p in all {
        let (_, s, l) = &p;
        if l.split(' ').count() >= MIN_WORDS
            && !lower(l).contains(&lower(s))
            && longs[l] == 1
            && summaries[&lower(s)] == 1
        {
            kept.insert(p.0.clone(), p);
        }
    }
    let kept: Vec<Package> = kept.into_values().collect();
    let n = kept.len();
    if n <= MAX_DOCS {
        return kept;
    }
    (0..MAX_DOCS).map(|i| kept[i * n / MAX_DOCS].clone()).collect()
}

/// The reciprocal rank of `want` among the first ten distinct documents of a query's hits
/// (a document of several chunks can be hit more than once), 0 if it is not among them.
fn reciprocal_rank(v: &Value, want: &str) -> f64 {
    let mut seen = HashSet::new();
    let docs: Vec<String> = hit_ids(v).into_iter().filter(|id| seen.insert(id.clone())).collect();
    docs.iter().take(10).position(|id| id == want).map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

#[test]
fn brainml_quality_parses_dpkg_stanzas_and_keeps_only_unambiguous_packages() {
    let status = "Package: a\nStatus: ok\nDescription: tool to frob widgets\n first line of\n  \
                  the long text\n .\n second paragraph\nHomepage: x\n\nPackage: b\n\
                  Description: no long text\n\nPackage: c\nDescription: nothing here\n";
    let all = packages(status);
    assert_eq!(
        all,
        [
            (
                "a".into(),
                "tool to frob widgets".into(),
                "first line of the long text second paragraph".into()
            ),
            ("b".into(), "no long text".into(), "".into()),
            ("c".into(), "nothing here".into(), "".into()),
        ]
    );
    let words = (0..MIN_WORDS).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
    let p = |n: &str, s: &str, l: &str| (n.to_string(), s.to_string(), l.to_string());
    let set = labelled_set(vec![
        p("keep", "a summary", &format!("{words} kept")),
        p("short", "short one", "too few words"),
        p("repeats", "W1 w2", &format!("{words} repeats")),
        p("twin-1", "twin one", &format!("{words} twin")),
        p("twin-2", "twin two", &format!("{words} twin")),
        p("same-1", "Same summary", &format!("{words} same 1")),
        p("same-2", "same summary", &format!("{words} same 2")),
    ]);
    assert_eq!(set.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["keep"]);
}

#[test]
fn brainml_quality_hybrid_has_a_higher_mrr_at_10_than_dense_or_bm25_on_debian_descriptions() {
    let status = std::fs::read_to_string(STATUS)
        .unwrap_or_else(|e| panic!("{STATUS} (every Debian or Ubuntu machine has it): {e}"));
    let set = labelled_set(packages(&status));
    assert!(set.len() >= 200, "only {} usable packages in {STATUS}", set.len());

    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "debian" }));
    for batch in set.chunks(100) {
        let documents: Vec<Value> =
            batch.iter().map(|(name, _, long)| json!({ "id": name, "text": long })).collect();
        let v = ok(&host, "index", json!({ "collection": "debian", "documents": documents }));
        assert_eq!(v["indexed"], batch.len(), "{v}");
    }

    let mut mrr = BTreeMap::new();
    for mode in ["hybrid", "dense", "bm25"] {
        let mut sum = 0.0;
        for (name, summary, _) in &set {
            let v = ok(
                &host,
                "query",
                json!({ "collection": "debian", "text": summary, "mode": mode,
                        "k": 20, "with_text": false }),
            );
            sum += reciprocal_rank(&v, name);
        }
        mrr.insert(mode, sum / set.len() as f64);
    }
    let (hybrid, dense, bm25) = (mrr["hybrid"], mrr["dense"], mrr["bm25"]);
    println!(
        "MRR@10 over {} Debian package summaries -> their long descriptions: \
         hybrid {hybrid:.4}, dense {dense:.4}, bm25 {bm25:.4}",
        set.len()
    );
    assert!(hybrid > dense, "hybrid {hybrid:.4} <= dense {dense:.4} (bm25 {bm25:.4})");
    assert!(hybrid > bm25, "hybrid {hybrid:.4} <= bm25 {bm25:.4} (dense {dense:.4})");
}
