//! `repoagent`'s repository map (`code.map`) in a real host, on a copy of a crate nobody here
//! wrote (serde_json from the cargo registry, the version this workspace's Cargo.lock pins):
//! - the map fits its budget (the estimate recounted here), lists its files in its text, and
//!   holds the crate's most referenced type (counted here from the source text, independently
//!   of the plugin);
//! - a larger budget gives a superset; focus on a file or a name brings its definitions in;
//! - a repeated call with no change is `cached`; after a one-file change only that file's
//!   contribution is recomputed (`updated: 1`); a new function called from many files
//!   appears (bounded poll);
//! - unknown repositories are 404, a budget out of range or an unknown focus 400;
//! - after all that (indexing, watching, maps), deleting the plugin's file unloads it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::code_trees::{copy_tree, registry_crate, repoagent_lib};
use crate::repoagent_stats::{call, ok, repoagent_host};
use crate::support::Host;

/// The plugin's token estimate, recounted: a run of letters, digits and `_` is one token per 4
/// characters (rounded up); any other character but a space or tab is one.
fn estimate(text: &str) -> usize {
    let (mut n, mut run) = (0, 0usize);
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            run += 1;
        } else {
            n += run.div_ceil(4);
            run = 0;
            if c != ' ' && c != '\t' {
                n += 1;
            }
        }
    }
    n + run.div_ceil(4)
}

fn idents(line: &str) -> Vec<&str> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect()
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// Among the types (struct, enum, trait) defined in exactly one place of the crate's `src`
/// (counting every `struct`/`enum`/`trait`/`type`/`fn`/`union` of that name) whose names aider's
/// rule weighs up (camelCase, 8 characters or more: x10), the one the most other files name (in
/// `src` and `tests`, as the graph sees them): (name, files naming it). Comment lines are
/// skipped.
fn most_referenced_type(root: &Path) -> (String, usize) {
    let mut files = Vec::new();
    rust_files(&root.join("src"), root, &mut files);
    rust_files(&root.join("tests"), root, &mut files);
    let code = |l: &str| !l.trim_start().starts_with("//");
    let mut defs: BTreeMap<&str, (usize, bool, BTreeSet<&str>)> = BTreeMap::new();
    for (path, text) in &files {
        for line in text.lines().filter(|l| code(l)) {
            let words = idents(line);
            for w in words.windows(2) {
                if ["struct", "enum", "trait", "type", "fn", "union"].contains(&w[0]) {
                    let d = defs.entry(w[1]).or_insert((0, false, BTreeSet::new()));
                    d.0 += 1;
                    d.1 |= ["struct", "enum", "trait"].contains(&w[0]);
                    d.2.insert(path.as_str());
                }
            }
        }
    }
    let mut best = (String::new(), 0);
    for (name, (count, is_type, at)) in &defs {
        let boosted = name.len() >= 8
            && name.starts_with(|c: char| c.is_ascii_uppercase())
            && name.chars().any(|c| c.is_lowercase());
        if *count != 1 || !is_type || !boosted || !at.iter().all(|p| p.starts_with("src/")) {
            continue;
        }
        let naming = files
            .iter()
            .filter(|(p, t)| {
                !at.contains(p.as_str()) && t.lines().any(|l| code(l) && idents(l).contains(name))
            })
            .count();
        if naming > best.1 {
            best = (name.to_string(), naming);
        }
    }
    best
}

fn map(host: &Host, body: Value) -> Value {
    let v = ok(host, "code.map", body.clone());
    let budget = body["tokens"].as_u64().unwrap_or(1024) as usize;
    let text = v["map"].as_str().unwrap();
    let tokens = v["tokens"].as_u64().unwrap() as usize;
    assert!(tokens <= budget, "{body}: {tokens} tokens for a budget of {budget}");
    assert_eq!(tokens, estimate(text), "{body}: the count given is the estimate of the text");
    for f in v["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        assert!(text.contains(&format!("{path}:\n")), "{path} is in the text:\n{text}");
        assert!(!f["symbols"].as_array().unwrap().is_empty(), "{path} without symbols");
    }
    v
}

/// (path, name, line) of every definition the map chose.
fn chosen(v: &Value) -> BTreeSet<(String, String, u64)> {
    let mut out = BTreeSet::new();
    for f in v["files"].as_array().unwrap() {
        for s in f["symbols"].as_array().unwrap() {
            out.insert((
                f["path"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
                s["line"].as_u64().unwrap(),
            ));
        }
    }
    out
}

fn names(v: &Value) -> BTreeSet<String> {
    chosen(v).into_iter().map(|(_, n, _)| n).collect()
}

fn paths(v: &Value) -> BTreeSet<String> {
    chosen(v).into_iter().map(|(p, _, _)| p).collect()
}

fn within(host: &Host, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out waiting for {what}\n--- host log ---\n{}", host.log());
}

#[test]
fn repoagent_map_ranks_a_real_crate_fits_budgets_follows_focus_and_edits_and_unloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let sj = root.join("serde_json");
    copy_tree(&registry_crate("serde_json"), &sj);
    let (central, naming) = most_referenced_type(&sj);
    assert!(naming >= 5, "{central} named by {naming} files: too few for a meaningful check");
    let host = repoagent_host(&root);
    ok(&host, "repo.add", json!({"path": sj.to_str().unwrap(), "name": "sj"}));

    // (1) The default budget (1024): fits, holds the most referenced type; cached when asked
    // again with nothing changed.
    let small = map(&host, json!({"repo": "sj"}));
    assert_eq!(small["cached"], false);
    assert!(small["updated"].as_u64().unwrap() >= 20, "the first map reads every file: {small}");
    let included = small["included"].as_u64().unwrap();
    assert!(included >= 10 && included < small["ranked"].as_u64().unwrap(), "{small}");
    let units: BTreeSet<(String, String)> =
        chosen(&small).into_iter().map(|(p, n, _)| (p, n)).collect();
    assert_eq!(units.len() as u64, included, "one (file, name) per ranked definition included");
    assert!(
        names(&small).contains(&central),
        "{central} (named by {naming} other files) is in the map:\n{}",
        small["map"].as_str().unwrap()
    );
    let tokens = small["tokens"].as_u64().unwrap();
    assert!(tokens > 1024 * 3 / 4, "the budget is used ({tokens} of 1024)");
    let again = map(&host, json!({"repo": "sj", "tokens": 1024}));
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!((&again["map"], again["updated"].as_u64()), (&small["map"], Some(0)));

    // (2) A larger budget gives a superset.
    let large = map(&host, json!({"repo": "sj", "tokens": 4096}));
    assert_eq!(large["cached"], false);
    assert!(chosen(&small).is_subset(&chosen(&large)), "4096's map holds 1024's");
    assert!(chosen(&large).len() > chosen(&small).len());
    let huge = map(&host, json!({"repo": "sj", "tokens": 65536}));

    // (3) Focus on a file the small map leaves out: its definitions come in, within budget.
    let small_paths = paths(&small);
    let outside = paths(&huge)
        .into_iter()
        .find(|p| !small_paths.contains(p) && p.starts_with("src/"))
        .expect("a file the small map leaves out");
    let focused = map(&host, json!({"repo": "sj", "focus": [outside], "tokens": 1024}));
    assert!(paths(&focused).contains(&outside), "{outside} in the focused map: {focused}");
    // A name the small map leaves out.
    let small_names = names(&small);
    let name = names(&huge)
        .into_iter()
        .find(|n| !small_names.contains(n) && n.len() > 3)
        .expect("a name the small map leaves out");
    let focused = map(&host, json!({"repo": "sj", "focus": [name], "tokens": 1024}));
    assert!(names(&focused).contains(&name), "{name} in the focused map: {focused}");

    // (4) One file changes (renamed into place: one event): only its contribution is redone.
    let g0 = small["generation"].as_u64().unwrap();
    let staging = root.join("staging.rs");
    let mut text = std::fs::read_to_string(sj.join("src/read.rs")).unwrap();
    text.push_str("\npub fn ramap_single_edit() {}\n");
    std::fs::write(&staging, text).unwrap();
    std::fs::rename(&staging, sj.join("src/read.rs")).unwrap();
    let mut updated = 0;
    within(&host, "the edit of src/read.rs in the map", || {
        let v = map(&host, json!({"repo": "sj"}));
        updated += v["updated"].as_u64().unwrap();
        v["generation"].as_u64().unwrap() > g0
    });
    assert_eq!(updated, 1, "only src/read.rs's contribution was recomputed");

    // (5) A new function called from many files appears in the 1024-token map.
    let probe = "ramap_probe_helper";
    assert!(!names(&small).contains(probe));
    std::fs::write(
        sj.join("src/ramap_probe.rs"),
        format!("pub fn {probe}(x: u32) -> u32 {{ x }}\n"),
    )
    .unwrap();
    let mut callers = 0;
    for (i, f) in ["de.rs", "ser.rs", "error.rs", "map.rs", "read.rs", "iter.rs", "macros.rs"]
        .iter()
        .enumerate()
    {
        let p = sj.join("src").join(f);
        let mut t = std::fs::read_to_string(&p).unwrap();
        t.push_str(&format!(
            "\nfn ramap_caller_{i}() -> u32 {{ {probe}(1) + {probe}(2) + {probe}(3) }}\n"
        ));
        std::fs::write(&p, t).unwrap();
        callers += 1;
    }
    assert_eq!(callers, 7);
    let mut last = Value::Null;
    within(&host, "the new function in the map", || {
        last = map(&host, json!({"repo": "sj"}));
        names(&last).contains(probe)
    });
    assert!(paths(&last).contains("src/ramap_probe.rs"), "{last}");

    // (6) Bad requests.
    let (status, v) = call(&host, "code.map", json!({"repo": "nope"}));
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("nope"), "{v}");
    for tokens in [0u64, 15, 65537, 1 << 40] {
        let (status, v) = call(&host, "code.map", json!({"repo": "sj", "tokens": tokens}));
        assert_eq!(status, 400, "tokens {tokens}: {v}");
        assert!(v.to_string().contains("tokens"), "{v}");
    }
    let (status, v) = call(&host, "code.map", json!({"repo": "sj", "focus": ["no/such_file.rs"]}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("no/such_file.rs"), "{v}");
    let (status, v) = call(&host, "code.map", json!({"repo": "sj", "focus": "src/de.rs"}));
    assert_eq!(status, 400, "focus must be a list: {v}");
    let (status, v) = call(&host, "code.map", json!({"repo": "sj", "budget": 10}));
    assert_eq!(status, 400, "an unknown field: {v}");

    // (7) Deleting the plugin's file unloads it after all that.
    host.remove(&repoagent_lib());
    let p = host.wait_residency("repoagent");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}
