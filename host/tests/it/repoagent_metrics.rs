//! repoagent's `code.metrics` (issue 14) through a real host and the real plugin library, on a
//! real crate nobody here wrote (semver's sources from the cargo registry, at the version
//! Cargo.lock pins) given a real git history made here: per-function metrics of a file,
//! files ranked by complexity, hotspots from `git log --numstat` (a rename followed), a
//! repository without history (`churn_error`), clear errors for bad requests, the cached
//! metrics of a file dropped when the file is edited, and the library unloading after it all.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::code_trees::{copy_visible_tree, registry_crate, repoagent_lib};
use crate::support::{product_plugin, Host};

fn rust_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            n += rust_files(&e.path());
        } else if e.path().extension().is_some_and(|x| x == "rs") {
            n += 1;
        }
    }
    n
}

fn git(dir: &Path, args: &[&str]) {
    // The test's repository, whatever the environment names (a developer's GIT_INDEX_FILE).
    let out = Command::new("git")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=repoagent test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

fn call(host: &Host, capability: &str, body: Value) -> (u16, Value) {
    host.post_json(&format!("/api/plugins/repoagent/{capability}"), &body.to_string())
}

fn ok(host: &Host, capability: &str, body: Value) -> Value {
    let (status, v) = call(host, capability, body.clone());
    assert_eq!(status, 200, "{capability} {body}: {v}");
    v
}

/// The function `name` (on line `line` when given) of a `code.metrics {path}` answer.
fn function<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no function {name} in {answer}"))
}

/// Poll `cond` for at most 10 s (an upper bound, not a requirement).
fn within(host: &Host, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}\n--- host log ---\n{}", host.log());
}

#[test]
fn repoagent_metrics_hotspots_and_cache_invalidation_on_a_real_crate() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let repo = root.join("semver");
    copy_visible_tree(&registry_crate("semver"), &repo);
    let parse_rs = repo.join("src/parse.rs");
    let parse_lines = std::fs::read_to_string(&parse_rs).unwrap().lines().count() as u64;

    // A history: the crate as published, three edits of src/parse.rs, and display.rs renamed
    // (with a one-line change) to show.rs.
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "semver as published"]);
    for i in 1..=3 {
        append(&parse_rs, &format!("// edit {i}\n"));
        git(&repo, &["commit", "-q", "-am", &format!("edit {i}")]);
    }
    git(&repo, &["mv", "src/display.rs", "src/show.rs"]);
    append(&repo.join("src/show.rs"), "// renamed\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "display.rs is show.rs"]);

    // The same crate with no history at all.
    let plain = root.join("plain");
    copy_visible_tree(&registry_crate("semver"), &plain);

    let host = Host::start();
    host.install(&product_plugin("repoagent"), &repoagent_lib());
    host.wait_state("repoagent", "running");
    let (status, v) = host.post_json(
        "/api/core/plugins/repoagent/config",
        &json!({"roots": [root.to_str().unwrap()]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(&host, "repo.add", json!({"path": repo.to_str().unwrap()}));
    assert_eq!(status, 201, "{v}");
    let (status, v) =
        call(&host, "repo.add", json!({"path": plain.to_str().unwrap(), "name": "plain"}));
    assert_eq!(status, 201, "{v}");

    // (1) One file: its functions, their metrics, the file's totals. Values that lizard
    // agrees on (plugins/repoagent/tests/fixtures/lizard-ccn.tsv) and hand-counted ones.
    let file = ok(&host, "code.metrics", json!({"repo": "semver", "path": "src/parse.rs"}));
    assert_eq!(file["path"], "src/parse.rs");
    assert_eq!(file["language"], "rust");
    let version_from_str = file["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "from_str" && f["parent"] == "Version")
        .unwrap_or_else(|| panic!("Version::from_str in {file}"));
    assert_eq!(version_from_str["cyclomatic"], 15, "{version_from_str}");
    // if let / else if let / else if let / else
    let wildcard = function(&file, "wildcard");
    assert_eq!(
        (&wildcard["cyclomatic"], &wildcard["cognitive"], &wildcard["params"], &wildcard["exits"]),
        (&json!(4), &json!(4), &json!(1), &json!(1)),
        "{wildcard}"
    );
    assert_eq!(
        (&wildcard["line"], &wildcard["end_line"], &wildcard["lines"]),
        (&json!(186), &json!(196), &json!(11))
    );
    let numeric = function(&file, "numeric_identifier").clone();
    assert_eq!(
        (&numeric["cyclomatic"], &numeric["cognitive"]),
        (&json!(9), &json!(12)),
        "{numeric}"
    );
    let functions = file["functions"].as_array().unwrap();
    let sum = |k: &str| functions.iter().map(|f| f[k].as_u64().unwrap()).sum::<u64>();
    let max = functions.iter().map(|f| f["cyclomatic"].as_u64().unwrap()).max().unwrap();
    assert_eq!(file["cyclomatic"].as_u64().unwrap(), sum("cyclomatic"));
    assert_eq!(file["cognitive"].as_u64().unwrap(), sum("cognitive"));
    assert_eq!(file["max_cyclomatic"].as_u64().unwrap(), max);
    // Asked again: the same answer (from the index's cache).
    assert_eq!(ok(&host, "code.metrics", json!({"repo": "semver", "path": "src/parse.rs"})), file);

    // (2) The whole repository: files ranked by complexity, and the hotspots.
    let all = ok(&host, "code.metrics", json!({"repo": "semver", "limit": 1000}));
    let files = all["files"].as_array().unwrap();
    assert_eq!(files.len(), rust_files(&repo), "{all}");
    assert_eq!(all["truncated"], false);
    assert_eq!(all["totals"]["files"].as_u64().unwrap() as usize, files.len());
    let ranked: Vec<u64> = files.iter().map(|f| f["cyclomatic"].as_u64().unwrap()).collect();
    assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{ranked:?}");
    assert_eq!(all["totals"]["cyclomatic"].as_u64().unwrap(), ranked.iter().sum::<u64>());
    let parse_entry = files.iter().find(|f| f["path"] == "src/parse.rs").unwrap();
    assert_eq!(parse_entry["cyclomatic"], file["cyclomatic"]);
    assert_eq!(all["churn_commits"], 5, "{all}");
    assert!(all.get("churn_error").is_none(), "{all}");
    let hotspots = all["hotspots"].as_array().unwrap();
    assert_eq!(hotspots[0]["path"], "src/parse.rs", "{all}");
    assert_eq!(
        hotspots[0]["churn"],
        json!({"commits": 4, "lines_changed": parse_lines + 3}),
        "{all}"
    );
    for h in hotspots {
        let complexity =
            files.iter().find(|f| f["path"] == h["path"]).unwrap()["cyclomatic"].clone();
        assert_eq!(h["complexity"], complexity, "{h}");
        assert_eq!(
            h["score"].as_u64().unwrap(),
            h["churn"]["commits"].as_u64().unwrap() * complexity.as_u64().unwrap(),
            "{h}"
        );
    }
    let scores: Vec<u64> = hotspots.iter().map(|h| h["score"].as_u64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The rename is followed: show.rs has display.rs's first commit too.
    let show = hotspots.iter().find(|h| h["path"] == "src/show.rs").expect("src/show.rs");
    assert_eq!(show["churn"]["commits"], 2, "{show}");
    // limit
    let two = ok(&host, "code.metrics", json!({"repo": "semver", "limit": 2}));
    assert_eq!(two["files"].as_array().unwrap().len(), 2);
    assert_eq!(two["hotspots"].as_array().unwrap().len(), 2);
    assert_eq!(two["truncated"], true);
    assert_eq!(two["files"][0], files[0]);

    // (3) No history: the metrics, no hotspots, and why.
    let plain_all = ok(&host, "code.metrics", json!({"repo": "plain"}));
    assert_eq!(plain_all["hotspots"], json!([]), "{plain_all}");
    let why = plain_all["churn_error"].as_str().unwrap_or_default();
    assert!(why.contains("not in a git repository"), "{plain_all}");
    assert!(plain_all["totals"]["functions"].as_u64().unwrap() > 100, "{plain_all}");

    // (4) Bad requests say what is wrong.
    for (body, status, words) in [
        (json!({"repo": "semver", "limit": 0}), 400, "limit 0"),
        (json!({"repo": "semver", "path": "src/missing.rs"}), 404, "src/missing.rs"),
        (json!({"repo": "semver", "path": "Cargo.toml"}), 400, "no metrics for this kind of file"),
        (json!({"repo": "nope"}), 404, "nope"),
        (json!({"repo": "semver", "depth": 3}), 400, "depth"),
        (json!({}), 400, "repo"),
    ] {
        let (s, v) = call(&host, "code.metrics", body.clone());
        assert_eq!(s, status, "{body}: {v}");
        assert!(v.to_string().contains(words), "{body}: {v}");
    }

    // (5) Edit a function to add two branches: the cached metrics are dropped with the old
    // entry and the next answer has them (within a bounded wait for the watcher).
    let source = std::fs::read_to_string(&parse_rs).unwrap();
    let header =
        "fn numeric_identifier(input: &str, pos: Position) -> Result<(u64, &str), Error> {\n";
    assert!(source.contains(header));
    let edited = source.replace(
        header,
        &format!("{header}    if input.is_empty() || input.len() > 64 {{\n        return Err(Error::new(ErrorKind::Empty));\n    }}\n"),
    );
    std::fs::write(&parse_rs, edited).unwrap();
    let mut after = Value::Null;
    within(&host, "numeric_identifier's new metrics", || {
        after = ok(&host, "code.metrics", json!({"repo": "semver", "path": "src/parse.rs"}));
        function(&after, "numeric_identifier")["cyclomatic"] == 11
    });
    let numeric_after = function(&after, "numeric_identifier");
    assert_eq!(numeric_after["cognitive"], 14, "{numeric_after}");
    assert_eq!(numeric_after["exits"], numeric["exits"].as_u64().unwrap() + 1);
    assert_eq!(numeric_after["lines"], numeric["lines"].as_u64().unwrap() + 3);
    assert_eq!(function(&after, "wildcard")["line"], 189, "the functions below moved down");
    assert_eq!(after["cyclomatic"], file["cyclomatic"].as_u64().unwrap() + 2);
    let all_after = ok(&host, "code.metrics", json!({"repo": "semver", "limit": 1000}));
    assert_eq!(
        all_after["totals"]["cyclomatic"].as_u64().unwrap(),
        all["totals"]["cyclomatic"].as_u64().unwrap() + 2
    );

    // (6) After all that work (git runs included), deleting the file unloads the library.
    host.remove(&repoagent_lib());
    let p = host.wait_residency("repoagent");
    assert_eq!(p["history"][0]["residency"], "unloaded", "{p}");
}
