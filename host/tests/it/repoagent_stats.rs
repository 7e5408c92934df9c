//! `repoagent`'s line counts and search in a real host, on real code nobody here wrote: a crate
//! of this workspace's Cargo.lock from the cargo registry (serde_json) and a package of
//! CPython's standard library (email), each copied into a folder the plugin's `roots` allow.
//! - `code.stats` equals tokei's own library (`Languages::get_statistics`, run here on the same
//!   copy with the same ignore rules) per language, per file and in total: the plumbing is under
//!   test, not tokei's counting;
//! - `code.search` finds what a plain scan of the files finds (literal, case-insensitive, with
//!   a glob), a regex finds the union of its alternatives, a bad regex is a 400 naming the
//!   parser's complaint, `max` truncates in path order, context lines are the file's own, and a
//!   hit inside `serde_json::from_str` names that function as its symbol;
//! - unknown repositories are 404, bad fields 400;
//! - after counting and searching, deleting the plugin file unloads the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::code_trees::{copy_tree, registry_crate, repoagent_lib, stdlib_dir};
use crate::support::{product_plugin, Host};

/// A copy of `from` in a new folder `<dir>/<name>`, made a git repository (so that its
/// `.gitignore` applies to tokei's walk as it does to the plugin's, which honours it anywhere).
fn repo_copy(dir: &Path, name: &str, from: &Path) -> PathBuf {
    let to = dir.join(name);
    copy_tree(from, &to);
    let st = Command::new("git").args(["init", "-q"]).current_dir(&to).status().expect("git runs");
    assert!(st.success());
    to
}

/// [files, lines, code, comments, blanks].
type Row = [u64; 5];

struct TokeiView {
    languages: BTreeMap<String, Row>,
    totals: Row,
    files: BTreeMap<String, (String, Row)>,
}

/// tokei's library on `root`, with its default configuration, as its CLI would count it.
fn tokei_view(root: &Path) -> TokeiView {
    let mut langs = tokei::Languages::new();
    langs.get_statistics(&[root], &[], &tokei::Config::default());
    let mut view = TokeiView { languages: BTreeMap::new(), totals: [0; 5], files: BTreeMap::new() };
    for (ty, lang) in langs.iter() {
        assert!(!lang.inaccurate, "tokei could not read every {} file", ty.name());
        let s = lang.summarise();
        let row = [
            lang.reports.len() as u64,
            (s.code + s.comments + s.blanks) as u64,
            s.code as u64,
            s.comments as u64,
            s.blanks as u64,
        ];
        view.languages.insert(ty.name().to_string(), row);
        for r in &lang.reports {
            let st = r.stats.summarise();
            let rel = r.name.strip_prefix(root).unwrap().to_str().unwrap().replace('\\', "/");
            let row = [
                1,
                (st.code + st.comments + st.blanks) as u64,
                st.code as u64,
                st.comments as u64,
                st.blanks as u64,
            ];
            view.files.insert(rel, (ty.name().to_string(), row));
        }
    }
    let t = langs.total();
    view.totals = [
        view.languages.values().map(|r| r[0]).sum(),
        (t.code + t.comments + t.blanks) as u64,
        t.code as u64,
        t.comments as u64,
        t.blanks as u64,
    ];
    view
}

fn row(v: &Value) -> Row {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    [n("files"), n("lines"), n("code"), n("comments"), n("blanks")]
}

/// A host running repoagent whose `roots` allow `root`.
pub(crate) fn repoagent_host(root: &Path) -> Host {
    let host = Host::start();
    host.install(&product_plugin("repoagent"), &repoagent_lib());
    host.wait_state("repoagent", "running");
    let config = json!({"roots": [root.to_str().unwrap()]});
    let (status, v) = host.post_json("/api/core/plugins/repoagent/config", &config.to_string());
    assert_eq!(status, 200, "config: {v}");
    host.wait_state("repoagent", "running");
    host
}

pub(crate) fn call(host: &Host, capability: &str, body: Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/repoagent/{capability}"), &body.to_string())
}

pub(crate) fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, body.clone());
    assert!(status == 200 || status == 201, "{capability} {body} -> {status} {v}");
    v
}

fn check_stats_equal_tokei(host: &Host, repo: &str, root: &Path) {
    let want = tokei_view(root);
    assert!(want.totals[0] >= 20, "{repo}: too few files for a meaningful check");
    let got = ok(host, "code.stats", json!({"repo": repo}));
    let mut langs = BTreeMap::new();
    let mut last_code = u64::MAX;
    for l in got["languages"].as_array().unwrap() {
        let r = row(l);
        assert!(r[2] <= last_code, "{repo}: languages not sorted by code: {got}");
        last_code = r[2];
        langs.insert(l["language"].as_str().unwrap().to_string(), r);
    }
    assert_eq!(
        langs, want.languages,
        "{repo}: per language (files, lines, code, comments, blanks)"
    );
    assert_eq!(row(&got["totals"]), want.totals, "{repo}: totals");

    let got = ok(host, "code.stats", json!({"repo": repo, "by": "file"}));
    let mut files = BTreeMap::new();
    let mut last_code = u64::MAX;
    for f in got["files"].as_array().unwrap() {
        let mut r = row(&json!({"files": 1, "lines": f["lines"], "code": f["code"],
            "comments": f["comments"], "blanks": f["blanks"]}));
        r[0] = 1;
        assert!(r[2] <= last_code, "{repo}: files not sorted by code");
        last_code = r[2];
        let lang = f["language"].as_str().unwrap().to_string();
        files.insert(f["path"].as_str().unwrap().to_string(), (lang, r));
    }
    assert_eq!(files, want.files, "{repo}: per file");
    assert_eq!(row(&got["totals"]), want.totals, "{repo}: totals by file");
}

#[test]
fn code_stats_equal_tokei_library_on_a_real_crate_and_cpython_email() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let crate_copy = repo_copy(&root, "serde_json", &registry_crate("serde_json"));
    let email_copy = repo_copy(&root, "email", &stdlib_dir("email"));
    let host = repoagent_host(&root);
    for (name, path) in [("serde_json", &crate_copy), ("email", &email_copy)] {
        let v = ok(&host, "repo.add", json!({"path": path.to_str().unwrap(), "name": name}));
        assert!(v["files"].as_u64().unwrap() > 0, "{v}");
        check_stats_equal_tokei(&host, name, path);
    }
    // The .gitignore of serde_json's package leaves its Cargo.lock out: a rule both honour.
    assert!(crate_copy.join("Cargo.lock").is_file());

    // A folder: the files under it, their sums.
    let all = ok(&host, "code.stats", json!({"repo": "serde_json", "by": "file"}));
    let mut want = [0u64; 4];
    for f in all["files"].as_array().unwrap() {
        if f["path"].as_str().unwrap().starts_with("src/value/") {
            want[0] += 1;
            want[1] += f["code"].as_u64().unwrap();
            want[2] += f["comments"].as_u64().unwrap();
            want[3] += f["blanks"].as_u64().unwrap();
        }
    }
    assert!(want[0] >= 4, "src/value has several files: {want:?}");
    let v = ok(&host, "code.stats", json!({"repo": "serde_json", "path": "src/value"}));
    let t = &v["totals"];
    assert_eq!(
        [
            t["files"].as_u64().unwrap(),
            t["code"].as_u64().unwrap(),
            t["comments"].as_u64().unwrap(),
            t["blanks"].as_u64().unwrap()
        ],
        want
    );
    assert_eq!(v["languages"][0]["language"], "Rust", "{v}");

    // Bad requests say what is wrong.
    let (status, v) = call(&host, "code.stats", json!({"repo": "nope"}));
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("nope") && v.to_string().contains("serde_json"), "{v}");
    let (status, v) = call(&host, "code.stats", json!({"repo": "serde_json", "by": "color"}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("color"), "{v}");
    let (status, v) = call(&host, "code.stats", json!({"repo": "serde_json", "path": "nowhere"}));
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("nowhere"), "{v}");
    let (status, v) = call(&host, "code.stats", json!({"repo": "serde_json", "path": "../email"}));
    assert_eq!(status, 400, "{v}");
}

/// Every line of the `.rs` files under `root` that contains `needle` (ASCII case folded when
/// asked), in path order: (path, line, column, text).
fn scan(root: &Path, needle: &str, fold: bool) -> Vec<(String, u64, u64, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name();
            if name.to_str().unwrap().starts_with('.') {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if e.path().extension().is_some_and(|x| x == "rs") {
                out.push(e.path());
            }
        }
    }
    let mut paths = Vec::new();
    walk(root, &mut paths);
    let mut rels: Vec<(String, PathBuf)> = paths
        .into_iter()
        .map(|p| (p.strip_prefix(root).unwrap().to_str().unwrap().to_string(), p))
        .collect();
    rels.sort();
    let needle_cmp = if fold { needle.to_ascii_lowercase() } else { needle.to_string() };
    let mut hits = Vec::new();
    for (rel, path) in rels {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let hay = if fold { line.to_ascii_lowercase() } else { line.to_string() };
            if let Some(col) = hay.find(&needle_cmp) {
                hits.push((rel.clone(), i as u64 + 1, col as u64 + 1, line.to_string()));
            }
        }
    }
    hits
}

fn hits(v: &Value) -> Vec<(String, u64, u64, String)> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["line"].as_u64().unwrap(),
                h["column"].as_u64().unwrap(),
                h["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn code_search_on_a_real_crate_literal_regex_glob_max_context_and_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let copy = repo_copy(&root, "serde_json", &registry_crate("serde_json"));
    let host = repoagent_host(&root);
    ok(&host, "repo.add", json!({"path": copy.to_str().unwrap(), "name": "sj"}));
    let search = |body: Value| ok(&host, "code.search", body);

    // Literal (its parentheses are not a group), against a plain scan of the files.
    let want = scan(&copy, "Error::syntax(", false);
    assert!(want.len() >= 10, "{want:?}");
    let v = search(json!({"repo": "sj", "pattern": "Error::syntax(", "glob": "*.rs"}));
    assert_eq!(hits(&v), want);
    assert_eq!(v["truncated"], false);
    // Case-insensitive.
    let v = search(json!({"repo": "sj", "pattern": "ERROR::SYNTAX(", "case_sensitive": false,
        "glob": "*.rs"}));
    assert_eq!(hits(&v), scan(&copy, "error::syntax(", true));
    // Smart case: all lower case -> insensitive.
    let v = search(json!({"repo": "sj", "pattern": "error::syntax(", "smart_case": true,
        "glob": "*.rs"}));
    assert_eq!(hits(&v).len(), scan(&copy, "error::syntax(", true).len());

    // A regex finds the union of its two alternatives, in path order.
    let mut union = scan(&copy, "from_trait(read::StrRead", false);
    union.extend(scan(&copy, "from_trait(read::SliceRead", false));
    union.sort();
    assert_eq!(union.len(), 2, "{union:?}");
    let v = search(json!({"repo": "sj", "pattern": r"from_trait\(read::(Str|Slice)Read",
        "regex": true}));
    assert_eq!(hits(&v), union);
    // The same text as a regex is a bad one: 400 naming the parser's complaint.
    let (status, v) =
        call(&host, "code.search", json!({"repo": "sj", "pattern": "from_trait(", "regex": true}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("unclosed group"), "{v}");

    // Globs: one file only; `!` leaves a folder out.
    let v = search(json!({"repo": "sj", "pattern": "Error::syntax(", "glob": "src/de.rs"}));
    let only_de: Vec<_> = want.iter().filter(|h| h.0 == "src/de.rs").cloned().collect();
    assert!(!only_de.is_empty() && only_de.len() < want.len());
    assert_eq!(hits(&v), only_de);
    let v = search(
        json!({"repo": "sj", "pattern": "Error::syntax(", "glob": ["*.rs", "!src/value/**"]}),
    );
    let not_value: Vec<_> =
        want.iter().filter(|h| !h.0.starts_with("src/value/")).cloned().collect();
    assert!(not_value.len() < want.len());
    assert_eq!(hits(&v), not_value);
    let (status, v) =
        call(&host, "code.search", json!({"repo": "sj", "pattern": "x", "glob": "{a"}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("glob"), "{v}");

    // max: the first hits in path order, and `truncated`.
    let every = scan(&copy, "fn ", false);
    assert!(every.len() > 200);
    let v = search(json!({"repo": "sj", "pattern": "fn ", "glob": "*.rs", "max": 50}));
    assert_eq!(v["truncated"], true);
    assert_eq!(hits(&v), every[..50].to_vec());
    let v = search(json!({"repo": "sj", "pattern": "fn ", "glob": "*.rs", "max": 10000}));
    assert_eq!(v["truncated"], false);
    assert_eq!(hits(&v), every);
    let (status, v) = call(&host, "code.search", json!({"repo": "sj", "pattern": "fn", "max": 0}));
    assert_eq!(status, 400, "{v}");

    // Context lines are the file's own; the hit inside `from_str` names that function.
    let v = search(json!({"repo": "sj", "pattern": "from_trait(read::StrRead::new(s))",
        "context": 2}));
    let hit = &v["hits"][0];
    assert_eq!(v["hits"].as_array().unwrap().len(), 1, "{v}");
    let file = std::fs::read_to_string(copy.join("src/de.rs")).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    let n = hit["line"].as_u64().unwrap() as usize;
    assert_eq!(hit["text"], lines[n - 1]);
    assert_eq!(hit["before"], json!([lines[n - 3], lines[n - 2]]));
    // from_str ends the file: one line after it, not two.
    assert_eq!(hit["after"], json!(lines[n..(n + 2).min(lines.len())]));
    assert!(!hit["after"].as_array().unwrap().is_empty());
    let def = lines.iter().rposition(|l| l.starts_with("pub fn from_str<")).unwrap() + 1;
    assert!(def < n);
    assert_eq!(hit["symbol"], json!({"kind": "function", "name": "from_str", "line": def}), "{v}");
    // Without context, no context fields.
    let v = search(json!({"repo": "sj", "pattern": "from_trait(read::StrRead::new(s))"}));
    assert!(v["hits"][0].get("before").is_none(), "{v}");

    // Unknown repository; empty pattern.
    let (status, v) = call(&host, "code.search", json!({"repo": "nope", "pattern": "x"}));
    assert_eq!(status, 404, "{v}");
    assert!(v.to_string().contains("nope"), "{v}");
    let (status, v) = call(&host, "code.search", json!({"repo": "sj", "pattern": ""}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("empty"), "{v}");

    // Counting (tokei) and searching ran on the plugin's own threads: removing the file
    // unloads the library.
    host.remove(&repoagent_lib());
    let p = host.wait_residency("repoagent");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}
