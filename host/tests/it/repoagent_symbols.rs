//! `repoagent`'s symbols in a real host, on real code nobody here wrote: serde_json (this
//! workspace's Cargo.lock version, from the cargo registry) and CPython's `json` package,
//! copied into a folder the plugin's `roots` allow.
//! - `code.symbols`: exact name first, else case-insensitive substring (`name_match`), kind /
//!   language / path filters, `limit` with `total` and `truncated`; every definition's line in
//!   the file holds its name;
//! - `code.outline`: a file's definitions nested (an impl's methods under it, a class's
//!   methods under it); 404 for a file not in the index;
//! - `code.refs`: the definitions and the references of a name with their lines' text and the
//!   enclosing definition;
//! - an edit shows up in all three, a deleted file leaves them; bad inputs are clear 4xx;
//! - after all that (indexing, watching, every capability), deleting the plugin's file unloads
//!   it: residency `unloaded`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::code_trees::{copy_tree, registry_crate, repoagent_lib, stdlib_dir};
use crate::repoagent_stats::{call, ok, repoagent_host};
use crate::support::Host;

/// Poll `cond` (generously bounded; the watcher applies an edit well within a second).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn file_line(root: &Path, path: &str, line: u64) -> String {
    let text = std::fs::read_to_string(root.join(path)).unwrap();
    text.lines().nth(line as usize - 1).unwrap_or_else(|| panic!("{path}:{line}")).to_string()
}

fn symbols(host: &Host, body: Value) -> Vec<Value> {
    ok(host, "code.symbols", body)["symbols"].as_array().unwrap().clone()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_string()).collect()
}

fn bad(host: &Host, capability: &str, body: Value, status: u16, says: &str) {
    let (got, v) = call(host, capability, body.clone());
    assert_eq!(got, status, "{capability} {body} -> {v}");
    assert!(v.to_string().contains(says), "{capability} {body}: {v} should say {says:?}");
}

#[test]
fn code_symbols_outline_and_refs_on_serde_json_and_cpython_json_follow_edits_then_unload() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let sj = root.join("serde_json");
    copy_tree(&registry_crate("serde_json"), &sj);
    let pj = root.join("pyjson");
    copy_tree(&stdlib_dir("json"), &pj);
    let host = repoagent_host(&root);
    ok(&host, "repo.add", json!({"path": sj.to_str().unwrap()}));
    ok(&host, "repo.add", json!({"path": pj.to_str().unwrap()}));

    // code.symbols: an exact name.
    let v = ok(&host, "code.symbols", json!({"repo": "serde_json", "name": "from_str"}));
    assert_eq!(v["name_match"], "exact", "{v}");
    let found = v["symbols"].as_array().unwrap();
    assert!(found.iter().all(|s| s["name"] == "from_str"), "{v}");
    let de = found
        .iter()
        .find(|s| s["path"] == "src/de.rs" && s["kind"] == "function")
        .unwrap_or_else(|| panic!("serde_json::de::from_str: {v}"));
    assert_eq!(de["language"], "rust");
    assert!(de["parent"].is_null(), "{de}");
    assert!(de["signature"].as_str().unwrap().starts_with("pub fn from_str<'a, T>("), "{de}");
    assert!(de["end_line"].as_u64() > de["line"].as_u64(), "{de}");
    assert!(file_line(&sj, "src/de.rs", de["line"].as_u64().unwrap()).contains("fn from_str"));
    // A substring, case-insensitively, when nothing has the exact name.
    let v = ok(&host, "code.symbols", json!({"repo": "serde_json", "name": "FROM_SLI"}));
    assert_eq!(v["name_match"], "substring", "{v}");
    assert!(names(&v["symbols"]).iter().any(|n| n == "from_slice"), "{v}");
    assert!(names(&v["symbols"]).iter().all(|n| n.to_lowercase().contains("from_sli")), "{v}");
    // Kind and path filters; every line holds its name.
    let structs =
        symbols(&host, json!({"repo": "serde_json", "kind": "struct", "path": "src/value"}));
    assert!(structs.len() >= 3, "{structs:?}");
    for s in &structs {
        assert_eq!(s["kind"], "struct");
        let path = s["path"].as_str().unwrap();
        assert!(path.starts_with("src/value/"), "{s}");
        let line = file_line(&sj, path, s["line"].as_u64().unwrap());
        assert!(line.contains(&format!("struct {}", s["name"].as_str().unwrap())), "{s}: {line}");
    }
    let methods =
        symbols(&host, json!({"repo": "serde_json", "kind": "method", "path": "src/map.rs"}));
    let new = methods.iter().find(|m| m["name"] == "new").expect("Map::new");
    assert_eq!(new["parent"], "Map", "{new}");
    // Python: classes of CPython's json package, and the language filter.
    let classes = symbols(&host, json!({"repo": "pyjson", "kind": "class", "language": "python"}));
    let class_names: Vec<&str> = classes.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in ["JSONDecoder", "JSONEncoder", "JSONDecodeError"] {
        assert!(class_names.contains(&want), "{want} not in {class_names:?}");
    }
    assert!(symbols(&host, json!({"repo": "pyjson", "language": "rust"})).is_empty());
    // limit, total, truncated.
    let v =
        ok(&host, "code.symbols", json!({"repo": "serde_json", "kind": "function", "limit": 5}));
    assert_eq!(v["symbols"].as_array().unwrap().len(), 5);
    assert!(v["total"].as_u64().unwrap() > 5 && v["truncated"] == true, "{v}");
    let all = ok(&host, "code.symbols", json!({"repo": "serde_json", "limit": 100000}));
    assert_eq!(all["truncated"], false);
    assert_eq!(all["total"].as_u64().unwrap() as usize, all["symbols"].as_array().unwrap().len());

    // code.outline: nested.
    let o = ok(&host, "code.outline", json!({"repo": "serde_json", "path": "src/map.rs"}));
    assert_eq!(o["language"], "rust");
    let top = o["symbols"].as_array().unwrap();
    let map_struct = top.iter().find(|n| n["kind"] == "struct" && n["name"] == "Map").unwrap();
    assert!(names(&map_struct["children"]).contains(&"map".to_string()), "{map_struct}");
    let impl_map = top
        .iter()
        .find(|n| n["kind"] == "impl" && names(&n["children"]).contains(&"new".to_string()))
        .unwrap_or_else(|| panic!("impl Map with new: {o}"));
    assert_eq!(impl_map["name"], "Map");
    for m in impl_map["children"].as_array().unwrap() {
        assert_eq!(m["kind"], "method", "{m}");
        let line = file_line(&sj, "src/map.rs", m["line"].as_u64().unwrap());
        assert!(line.contains(&format!("fn {}", m["name"].as_str().unwrap())), "{m}: {line}");
        assert!(m["line"].as_u64() >= impl_map["line"].as_u64());
        assert!(m["end_line"].as_u64() <= impl_map["end_line"].as_u64());
    }
    let o = ok(&host, "code.outline", json!({"repo": "pyjson", "path": "decoder.py"}));
    let decoder = o["symbols"].as_array().unwrap().iter().find(|n| n["name"] == "JSONDecoder");
    let kids = names(&decoder.unwrap()["children"]);
    for m in ["__init__", "decode", "raw_decode"] {
        assert!(kids.contains(&m.to_string()), "{m} not in {kids:?}");
    }
    let o = ok(&host, "code.outline", json!({"repo": "serde_json", "path": "Cargo.toml"}));
    assert!(o["language"].is_null() && o["symbols"] == json!([]), "{o}");

    // code.refs: definitions and references with their lines.
    let v = ok(&host, "code.refs", json!({"repo": "serde_json", "name": "from_str"}));
    assert!(v["definitions"].as_array().unwrap().iter().any(|d| d["path"] == "src/de.rs"), "{v}");
    let refs = v["references"].as_array().unwrap();
    assert!(refs.len() >= 5, "{v}");
    assert_eq!(v["total"].as_u64().unwrap() as usize, refs.len(), "{v}");
    for r in refs {
        assert!(r["text"].as_str().unwrap().contains("from_str"), "{r}");
        let line = file_line(&sj, r["path"].as_str().unwrap(), r["line"].as_u64().unwrap());
        assert_eq!(line.trim(), r["text"].as_str().unwrap(), "{r}");
    }
    assert!(refs.iter().any(|r| r["kind"] == "call" && r["symbol"]["kind"].is_string()), "{v}");
    let v = ok(
        &host,
        "code.refs",
        json!({"repo": "serde_json", "name": "Value", "kind": "type", "limit": 3}),
    );
    assert_eq!(v["references"].as_array().unwrap().len(), 3);
    assert!(
        v["truncated"] == true
            && v["references"].as_array().unwrap().iter().all(|r| r["kind"] == "type"),
        "{v}"
    );
    let v = ok(&host, "code.refs", json!({"repo": "pyjson", "name": "JSONDecodeError"}));
    assert!(!v["definitions"].as_array().unwrap().is_empty(), "{v}");
    assert!(!v["references"].as_array().unwrap().is_empty(), "{v}");

    // Bad inputs.
    bad(&host, "code.symbols", json!({"repo": "nope"}), 404, "serde_json");
    bad(
        &host,
        "code.symbols",
        json!({"repo": "serde_json", "kind": "structure"}),
        400,
        "structure",
    );
    bad(&host, "code.symbols", json!({"repo": "serde_json", "language": "cobol"}), 400, "cobol");
    bad(&host, "code.symbols", json!({"repo": "serde_json", "limit": 0}), 400, "limit");
    bad(&host, "code.symbols", json!({"repo": "serde_json", "path": "nowhere"}), 404, "nowhere");
    bad(&host, "code.symbols", json!({"repo": "serde_json", "colour": 1}), 400, "colour");
    bad(
        &host,
        "code.outline",
        json!({"repo": "serde_json", "path": "src/nope.rs"}),
        404,
        "src/nope.rs",
    );
    bad(
        &host,
        "code.outline",
        json!({"repo": "serde_json", "path": "../pyjson/decoder.py"}),
        400,
        "..",
    );
    bad(&host, "code.outline", json!({"repo": "serde_json"}), 400, "path");
    bad(&host, "code.refs", json!({"repo": "serde_json", "name": " "}), 400, "name");
    bad(
        &host,
        "code.refs",
        json!({"repo": "serde_json", "name": "x", "kind": "read"}),
        400,
        "read",
    );

    // An edit: a new function and a caller appear in all three; removed, they are gone.
    let lib_rs = sj.join("src/lib.rs");
    let original = std::fs::read_to_string(&lib_rs).unwrap();
    let first = original.lines().count() + 2;
    let added = "\npub fn rasymbols_probe() -> u32 {\n    7\n}\n\npub fn rasymbols_caller() -> u32 {\n    rasymbols_probe() + 1\n}\n";
    std::fs::write(&lib_rs, format!("{original}{added}")).unwrap();
    let probe = || symbols(&host, json!({"repo": "serde_json", "name": "rasymbols_probe"}));
    eventually("the new function in code.symbols", || {
        probe().iter().any(|s| s["name"] == "rasymbols_probe")
    });
    let s = &probe()[0];
    assert_eq!((s["path"].as_str(), s["line"].as_u64()), (Some("src/lib.rs"), Some(first as u64)));
    assert_eq!(
        (s["kind"].as_str(), s["end_line"].as_u64()),
        (Some("function"), Some(first as u64 + 2))
    );
    let v = ok(&host, "code.refs", json!({"repo": "serde_json", "name": "rasymbols_probe"}));
    let r = &v["references"][0];
    assert_eq!(r["line"].as_u64(), Some(first as u64 + 5), "{v}");
    assert_eq!(
        (r["kind"].as_str(), r["symbol"]["name"].as_str()),
        (Some("call"), Some("rasymbols_caller")),
        "{v}"
    );
    assert_eq!(r["text"], "rasymbols_probe() + 1");
    let o = ok(&host, "code.outline", json!({"repo": "serde_json", "path": "src/lib.rs"}));
    assert!(names(&o["symbols"]).contains(&"rasymbols_caller".to_string()), "{o}");
    std::fs::write(&lib_rs, &original).unwrap();
    eventually("the function gone from code.symbols and code.refs", || {
        probe().is_empty()
            && ok(&host, "code.refs", json!({"repo": "serde_json", "name": "rasymbols_probe"}))
                ["references"]
                == json!([])
    });
    std::fs::remove_file(sj.join("src/map.rs")).unwrap();
    eventually("the deleted file out of code.outline", || {
        call(&host, "code.outline", json!({"repo": "serde_json", "path": "src/map.rs"})).0 == 404
    });
    assert!(symbols(
        &host,
        json!({"repo": "serde_json", "path": "src", "name": "Map", "kind": "struct"})
    )
    .iter()
    .all(|s| s["path"] != "src/map.rs"));

    // After indexing, watching and every capability, the library unloads.
    host.remove(&repoagent_lib());
    host.wait_state("repoagent", "unloaded");
    let history = || host.plugin("repoagent")["history"].as_array().cloned().unwrap_or_default();
    host.wait_for("every generation's residency", || {
        let h = history();
        !h.is_empty() && h.iter().all(|g| !g["residency"].is_null())
    });
    for g in history() {
        assert_eq!(g["residency"], "unloaded", "{g}");
    }
}
