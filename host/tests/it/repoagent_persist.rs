//! repoagent's saved index (`<data-dir>/plugin-data/repoagent/index/<repo>.bin`): after a
//! restart every capability answers at once from it, as before the restart; files edited or
//! deleted while the host was down show once the verify has read them (and only them) again;
//! a change the watcher applied is saved; a damaged file is logged and the repository indexed
//! from scratch; `repo.remove` deletes the file; and the library still unloads after all that.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::code_trees::{copy_tree, registry_crate, repoagent_lib};
use crate::repoagent_core::{call, info};
use crate::support::{product_plugin, Host};

fn start_host(root: &Path) -> Host {
    let host = Host::start();
    host.install(&product_plugin("repoagent"), &repoagent_lib());
    host.wait_state("repoagent", "running");
    let config = json!({"roots": [root.to_str().unwrap()]}).to_string();
    let (status, v) = host.post_json("/api/core/plugins/repoagent/config", &config);
    assert_eq!(status, 200, "{v}");
    host.wait_state("repoagent", "running");
    host
}

/// Poll `cond` for at most 60 s (an upper bound, not a requirement).
fn within(host: &Host, what: &str, cond: impl Fn() -> bool) {
    host.wait_for_up_to(what, Duration::from_secs(60), cond)
}

fn saved_index(data: &Path, name: &str) -> PathBuf {
    data.join("plugin-data/repoagent/index").join(format!("{name}.bin"))
}

/// What several capabilities answer now (each must answer 200: never a 409 "still indexing").
fn answers(host: &Host, repo: &str) -> Vec<Value> {
    [
        ("code.stats", json!({"repo": repo, "by": "file"})),
        ("code.stats", json!({"repo": repo})),
        ("code.symbols", json!({"repo": repo, "limit": 100000})),
        ("code.outline", json!({"repo": repo, "path": "src/lib.rs"})),
        ("code.refs", json!({"repo": repo, "name": "from_str", "limit": 10000})),
        ("code.search", json!({"repo": repo, "pattern": "fn from_str", "max": 1000})),
    ]
    .into_iter()
    .map(|(capability, body)| {
        let (status, v) = call(host, capability, body.clone());
        assert_eq!(status, 200, "{capability} {body}: {v}");
        v
    })
    .collect()
}

/// The last line of the log holding `needle` (the log keeps earlier hosts' lines).
fn last_line(host: &Host, needle: &str) -> String {
    host.log().lines().rev().find(|l| l.contains(needle)).unwrap_or_default().to_string()
}

fn lines_with(host: &Host, needle: &str) -> usize {
    host.log().lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn repoagent_answers_from_its_saved_index_after_a_restart_and_reads_again_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("allowed");
    let sj = root.join("serde_json");
    copy_tree(&registry_crate("serde_json"), &sj);
    assert!(sj.join("src/raw.rs").is_file() && sj.join("src/lib.rs").is_file());
    let mut host = start_host(&root);
    let data = host.data_dir();
    let (status, v) = call(&host, "repo.add", json!({"path": sj.to_str().unwrap()}));
    assert_eq!(status, 201, "{v}");
    let n = v["files"].as_u64().unwrap();
    let file = saved_index(&data, "serde_json");
    within(&host, "the index saved", || file.is_file());
    let before = answers(&host, "serde_json");
    let verified = "repository serde_json verified against the files";

    // (1) A restart: the first calls answer from the saved index, as before; no whole walk.
    host = host.restart(&[]);
    host.wait_state("repoagent", "running");
    assert_eq!(answers(&host, "serde_json"), before);
    let i = info(&host, "serde_json");
    assert_eq!((i["state"].as_str(), i["files"].as_u64()), (Some("ready"), Some(n)), "{i}");
    assert!(last_line(&host, "saved index loaded").contains(&format!("{n} files")));
    within(&host, "the verify", || info(&host, "serde_json")["verifying"] == false);
    assert!(last_line(&host, verified).contains("0 changed, 0 new, 0 removed"), "{}", host.log());
    assert_eq!(info(&host, "serde_json")["builds"], 0, "no whole index was built");

    // (2) A file edited and one deleted while no host runs (killed: no goodbye either).
    let lib_rs = sj.join("src/lib.rs");
    let verifies = lines_with(&host, verified);
    host = host.kill_edit_and_restart(&[], |_| {
        let mut text = std::fs::read_to_string(&lib_rs).unwrap();
        text.push_str("\npub fn racore_persisted() -> u32 {\n    7\n}\n");
        std::fs::write(&lib_rs, text).unwrap();
        std::fs::remove_file(sj.join("src/raw.rs")).unwrap();
    });
    host.wait_state("repoagent", "running");
    // It answers at once (from the saved index until the verify is done).
    answers(&host, "serde_json");
    within(&host, "the verify after the edits", || {
        lines_with(&host, verified) > verifies && info(&host, "serde_json")["verifying"] == false
    });
    assert!(last_line(&host, verified).contains("1 changed, 0 new, 1 removed"), "{}", host.log());
    let i = info(&host, "serde_json");
    assert_eq!((i["state"].as_str(), i["files"].as_u64()), (Some("ready"), Some(n - 1)), "{i}");
    assert_eq!(i["builds"], 0, "no whole index was built");
    let (status, v) =
        call(&host, "code.symbols", json!({"repo": "serde_json", "name": "racore_persisted"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["symbols"][0]["path"], "src/lib.rs", "{v}");
    let (status, v) = call(
        &host,
        "code.stats",
        json!({"repo": "serde_json", "by": "file", "path": "src/raw.rs"}),
    );
    assert_eq!(status, 404, "the deleted file is gone from the index: {v}");
    // What the verify made equals an index built from scratch.
    let verified_answers = answers(&host, "serde_json");
    let (status, v) = call(&host, "repo.reindex", json!({"name": "serde_json"}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(answers(&host, "serde_json"), verified_answers);

    // (3) A change the watcher applies is saved too: after a kill, the next start's verify
    // finds nothing to read again.
    std::fs::write(sj.join("src/persist_probe.py"), "def persist_probe():\n    return 1\n")
        .unwrap();
    within(&host, "the new file in the index", || info(&host, "serde_json")["files"] == n);
    // The saved index names its files.
    let holds_probe = || {
        let needle = b"src/persist_probe.py";
        std::fs::read(&file).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
    };
    within(&host, "the change saved", holds_probe);
    let after_edit = answers(&host, "serde_json");
    let verifies = lines_with(&host, verified);
    host = host.kill_and_restart(&[]);
    host.wait_state("repoagent", "running");
    assert_eq!(answers(&host, "serde_json"), after_edit);
    within(&host, "the verify after the watcher's change", || {
        lines_with(&host, verified) > verifies && info(&host, "serde_json")["verifying"] == false
    });
    assert!(last_line(&host, verified).contains("0 changed, 0 new, 0 removed"), "{}", host.log());

    // (4) After all that work, deleting the library unloads it.
    host.remove(&repoagent_lib());
    host.wait_state("repoagent", "unloaded");
    host.wait_for("the residency", || {
        let h = host.plugin("repoagent")["history"].as_array().cloned().unwrap_or_default();
        h.last().is_some_and(|g| !g["residency"].is_null())
    });
    for g in host.plugin("repoagent")["history"].as_array().unwrap() {
        assert_eq!(g["residency"], "unloaded", "{g}");
    }
}

#[test]
fn repoagent_rebuilds_a_damaged_saved_index_and_repo_remove_deletes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("allowed");
    let sj = root.join("serde_json");
    copy_tree(&registry_crate("serde_json"), &sj);
    let mut host = start_host(&root);
    let data = host.data_dir();
    let (status, v) = call(&host, "repo.add", json!({"path": sj.to_str().unwrap()}));
    assert_eq!(status, 201, "{v}");
    let file = saved_index(&data, "serde_json");
    within(&host, "the index saved", || file.is_file());
    let before = answers(&host, "serde_json");

    // Bytes flipped in the middle of the file while no host runs.
    let mut damaged = Vec::new();
    host = host.kill_edit_and_restart(&[], |_| {
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 16] {
            *b ^= 0xa5;
        }
        std::fs::write(&file, &bytes).unwrap();
        damaged = bytes;
    });
    host.wait_state("repoagent", "running");
    let said = last_line(&host, "saved index");
    assert!(
        said.contains("not used: its checksum does not match")
            && said.contains("indexing it from scratch"),
        "{}",
        host.log()
    );
    within(&host, "the index built again", || info(&host, "serde_json")["state"] == "ready");
    assert_eq!(info(&host, "serde_json")["builds"], 1);
    assert_eq!(answers(&host, "serde_json"), before);
    within(&host, "a sound index saved over the damaged one", || {
        std::fs::read(&file).is_ok_and(|b| b != damaged)
    });
    // That one loads: the next start answers from it.
    host = host.restart(&[]);
    host.wait_state("repoagent", "running");
    assert_eq!(answers(&host, "serde_json"), before);
    assert_eq!(info(&host, "serde_json")["builds"], 0);

    // repo.remove deletes the saved index (and a start then has nothing to load).
    let (status, v) = call(&host, "repo.remove", json!({"name": "serde_json"}));
    assert_eq!(status, 200, "{v}");
    assert!(!file.exists(), "{} is still there", file.display());
    host = host.restart(&[]);
    host.wait_state("repoagent", "running");
    assert!(info(&host, "serde_json").is_null());
    assert!(!file.exists());
}
