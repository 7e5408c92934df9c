//! brainml's snapshots in a real host with the real `candle` plugin and all-MiniLM-L6-v2, on
//! the license texts Debian ships: consistent while writes go on, refused when one byte of
//! them changed or their manifest points outside them, restored to the same answers, carried
//! to a second host as one tar archive, and a hostile archive writes nothing.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::brainml::{brain_host, call, hit_ids, index_paragraphs, ok, paragraphs};
use crate::support::Host;

const QUESTIONS: [&str; 4] = [
    "Is there any warranty for the program?",
    "Am I allowed to use the licensor's trademarks and product names?",
    "What happens to my license if I sue someone over a patent?",
    "May I distribute modified versions of the package?",
];

fn snapshots_dir(host: &Host) -> PathBuf {
    host.data_dir().join("plugin-data").join("brainml").join("snapshots")
}

/// The top 10 of each question in each mode: ids, chunks and scores.
fn answers(host: &Host, collection: &str) -> Vec<Vec<(String, u64, f64)>> {
    let mut out = Vec::new();
    for q in QUESTIONS {
        for mode in ["dense", "bm25", "hybrid"] {
            let v = ok(
                host,
                "query",
                json!({ "collection": collection, "text": q, "mode": mode, "k": 10 }),
            );
            let hits = v["hits"].as_array().unwrap();
            assert_eq!(hits.len(), 10, "{mode} {q}: {v}");
            out.push(
                hits.iter()
                    .map(|h| {
                        let id = h["id"].as_str().unwrap().to_string();
                        (id, h["chunk"].as_u64().unwrap(), h["score"].as_f64().unwrap())
                    })
                    .collect(),
            );
        }
    }
    out
}

fn assert_same_answers(a: &[Vec<(String, u64, f64)>], b: &[Vec<(String, u64, f64)>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let ids =
            |v: &[(String, u64, f64)]| v.iter().map(|h| (h.0.clone(), h.1)).collect::<Vec<_>>();
        assert_eq!(ids(x), ids(y));
        for (p, q) in x.iter().zip(y) {
            assert!((p.2 - q.2).abs() < 1e-6, "score {} != {}", p.2, q.2);
        }
    }
}

fn status_message(host: &Host, capability: &str, body: Value) -> (u16, String) {
    let (status, v) = call(host, capability, body);
    (status, v.to_string())
}

#[test]
fn brainml_snapshot_taken_while_indexing_is_consistent_and_restores_the_same_top_10() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "docs" }));
    let paras = paragraphs();
    let (first, rest) = paras.split_at(80);
    index_paragraphs(&host, "docs", first);

    // Another thread keeps indexing, 4 documents per call, noting the document count after
    // each acknowledged call: the states that existed.
    let acked = std::sync::Mutex::new(vec![first.len()]);
    let snapshots = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for batch in rest.chunks(4) {
                let documents: Vec<Value> =
                    batch.iter().map(|(id, _, text)| json!({ "id": id, "text": text })).collect();
                ok(&host, "index", json!({ "collection": "docs", "documents": documents }));
                let mut a = acked.lock().unwrap();
                let n = a.last().unwrap() + batch.len();
                a.push(n);
            }
        });
        let mut taken = Vec::new();
        for _ in 0..3 {
            let before = acked.lock().unwrap().len();
            host.wait_for("another acknowledged write", || {
                acked.lock().unwrap().len() > before || writer.is_finished()
            });
            taken.push(ok(&host, "snapshot.create", json!({ "collection": "docs" })));
        }
        writer.join().unwrap();
        taken
    });
    let states: BTreeSet<usize> = acked.into_inner().unwrap().into_iter().collect();
    for snap in &snapshots {
        let n = snap["documents"].as_u64().unwrap() as usize;
        assert!(states.contains(&n), "{n} documents: not a state that existed ({states:?})");
        // One chunk per paragraph here: the counts agree with each other.
        assert_eq!(snap["chunks"], snap["documents"], "{snap}");
        let files: Vec<&str> =
            snap["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert!(files.contains(&"wal.log") && files.contains(&"meta.json"), "{snap}");
        // Restored, it holds exactly that many documents.
        let id = snap["id"].as_str().unwrap();
        assert!(id.starts_with("docs-"), "{id}");
        let name = format!("copy-{}", &id[id.len() - 8..]);
        let info = ok(&host, "snapshot.restore", json!({ "id": id, "as": name }));
        assert_eq!(info["documents"], n, "{info}");
        assert_eq!(info["name"], name, "{info}");
    }
    assert_eq!(
        ok(&host, "collection.get", json!({ "name": "docs" }))["documents"],
        paras.len(),
        "every write went on"
    );

    // A snapshot of the final state restores the same top 10, as a copy and in place.
    let snap = ok(&host, "snapshot.create", json!({ "collection": "docs" }));
    let id = snap["id"].as_str().unwrap().to_string();
    let v = ok(&host, "snapshot.verify", json!({ "id": id }));
    assert_eq!((v["ok"].clone(), v["bytes"].clone()), (json!(true), snap["bytes"].clone()), "{v}");
    let original = answers(&host, "docs");
    ok(&host, "snapshot.restore", json!({ "id": id, "as": "docs-b" }));
    assert_same_answers(&answers(&host, "docs-b"), &original);
    let (status, msg) =
        status_message(&host, "snapshot.restore", json!({ "id": id, "as": "docs-b" }));
    assert_eq!(status, 409, "{msg}");
    // In place: a document indexed after the snapshot is gone again.
    let fresh = "Quokkas photographed on Rottnest Island smile for tourists every summer.";
    ok(
        &host,
        "index",
        json!({ "collection": "docs", "documents": [{ "id": "fresh", "text": fresh }] }),
    );
    let q = json!({ "collection": "docs", "text": "quokkas Rottnest", "mode": "bm25" });
    assert_eq!(hit_ids(&ok(&host, "query", q.clone())), ["fresh"]);
    let info = ok(&host, "snapshot.restore", json!({ "id": id }));
    assert_eq!(info["documents"], paras.len(), "{info}");
    assert_eq!(ok(&host, "query", q)["hits"], json!([]));
    assert_same_answers(&answers(&host, "docs"), &original);
    // The restored collection takes writes, and they last across a restart.
    ok(
        &host,
        "index",
        json!({ "collection": "docs", "documents": [{ "id": "fresh", "text": fresh }] }),
    );
    let args = crate::brainml::args(&models);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = host.restart(&args);
    host.wait_state("brainml", "running");
    let info = ok(&host, "collection.get", json!({ "name": "docs" }));
    assert_eq!(info["documents"], paras.len() + 1, "{info}");
    assert!(!host.log().contains("restore was interrupted"));

    // list: newest first, by collection; delete removes the files.
    let all = ok(&host, "snapshot.list", json!({}));
    let listed: Vec<&str> =
        all["snapshots"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 4, "{all}");
    assert_eq!(listed[0], id, "newest first: {all}");
    let created: Vec<u64> = all["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["created_ms"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    assert_eq!(ok(&host, "snapshot.list", json!({ "collection": "nope" }))["snapshots"], json!([]));
    let dir = snapshots_dir(&host).join(&id);
    assert!(dir.join("manifest.json").is_file());
    assert_eq!(ok(&host, "snapshot.delete", json!({ "id": id })), json!({ "deleted": true }));
    assert!(!dir.exists(), "the snapshot's files are gone");
    assert_eq!(call(&host, "snapshot.verify", json!({ "id": id })).0, 404);
    assert_eq!(call(&host, "snapshot.delete", json!({ "id": id })).0, 404);
    assert_eq!(ok(&host, "snapshot.list", json!({}))["snapshots"].as_array().unwrap().len(), 3);
}

#[test]
fn brainml_refuses_a_damaged_snapshot_naming_the_file_and_leaves_the_collection_untouched() {
    let models = tempfile::tempdir().unwrap();
    let host = brain_host(&models);
    ok(&host, "collection.create", json!({ "name": "docs" }));
    let paras = paragraphs();
    index_paragraphs(&host, "docs", &paras[..60]);
    let snap = ok(&host, "snapshot.create", json!({ "collection": "docs" }));
    let id = snap["id"].as_str().unwrap().to_string();
    let dir = snapshots_dir(&host).join(&id);
    ok(
        &host,
        "index",
        json!({ "collection": "docs",
        "documents": [{ "id": "later", "text": paras[70].2 }] }),
    );
    let live = answers(&host, "docs");

    // One flipped byte in the middle of the log.
    let wal = dir.join("wal.log");
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    for (capability, body) in [
        ("snapshot.verify", json!({ "id": id })),
        ("snapshot.restore", json!({ "id": id })),
        ("snapshot.restore", json!({ "id": id, "as": "other" })),
        ("snapshot.export", json!({ "id": id })),
    ] {
        let (status, msg) = status_message(&host, capability, body);
        assert_eq!(status, 409, "{capability}: {msg}");
        assert!(
            msg.contains(&format!("snapshot {id} is damaged: wal.log: sha256 ")),
            "{capability}: {msg}"
        );
    }
    assert_eq!(call(&host, "collection.get", json!({ "name": "other" })).0, 404);
    let info = ok(&host, "collection.get", json!({ "name": "docs" }));
    assert_eq!(info["documents"], 61, "the live collection is untouched: {info}");
    assert_same_answers(&answers(&host, "docs"), &live);
    bytes[at] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();
    assert_eq!(ok(&host, "snapshot.verify", json!({ "id": id }))["ok"], true);

    // A missing file and an extra one are named too.
    std::fs::rename(dir.join("meta.json"), dir.join("meta.moved")).unwrap();
    let (status, msg) = status_message(&host, "snapshot.verify", json!({ "id": id }));
    assert!(status == 409 && msg.contains("meta.json: missing"), "{status} {msg}");
    std::fs::rename(dir.join("meta.moved"), dir.join("meta.json")).unwrap();
    std::fs::write(dir.join("stray.bin"), b"not in the manifest").unwrap();
    let (status, msg) = status_message(&host, "snapshot.restore", json!({ "id": id }));
    assert!(status == 409 && msg.contains("stray.bin: an extra file"), "{status} {msg}");
    std::fs::remove_file(dir.join("stray.bin")).unwrap();

    // A manifest naming a path outside the snapshot is refused before that path is read.
    let outside = snapshots_dir(&host).join("x");
    std::fs::write(&outside, b"x").unwrap();
    let manifest_path = dir.join("manifest.json");
    let original: Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    for path in ["../x", "/etc/passwd", "a/../../x"] {
        let mut m = original.clone();
        m["files"].as_array_mut().unwrap().push(json!({ "path": path, "size": 1,
            "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" }));
        m["bytes"] = json!(m["bytes"].as_u64().unwrap() + 1);
        std::fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
        for capability in ["snapshot.verify", "snapshot.restore"] {
            let (status, msg) = status_message(&host, capability, json!({ "id": id }));
            assert_eq!(status, 409, "{path} {capability}: {msg}");
            assert!(msg.contains(&format!("{path}: a path outside the snapshot")), "{msg}");
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&original).unwrap()).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"x");
    assert_same_answers(&answers(&host, "docs"), &live);

    // Whole again, it restores: the document written after the snapshot is gone.
    let info = ok(&host, "snapshot.restore", json!({ "id": id }));
    assert_eq!(info["documents"], 60, "{info}");
    for bad in ["../x", "a/b", "", "UPPER"] {
        let (status, msg) = status_message(&host, "snapshot.verify", json!({ "id": bad }));
        assert_eq!(status, 400, "{bad:?}: {msg}");
    }
}

/// The entries of a tar archive (names and bytes; this test's archives are plain ustar/GNU
/// with short names).
fn tar_entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let h = &tar[at..at + 512];
        let name = String::from_utf8(h[..100].split(|b| *b == 0).next().unwrap().to_vec()).unwrap();
        let size_field = std::str::from_utf8(&h[124..136]).unwrap();
        let size =
            usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .unwrap();
        out.push((name, tar[at + 512..at + 512 + size].to_vec()));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// One ustar entry: `kind` b'0' for a file, b'2' for a symbolic link to `link`.
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0; 1024]);
    out
}

fn import(host: &Host, archive: &[u8]) -> (u16, String) {
    let (status, body) =
        host.post_bytes("/api/plugins/brainml/snapshot.import", "application/x-tar", archive);
    (status, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn brainml_exported_snapshot_imports_on_a_second_host_and_a_hostile_archive_writes_nothing() {
    let models = tempfile::tempdir().unwrap();
    let first = brain_host(&models);
    ok(&first, "collection.create", json!({ "name": "docs" }));
    let paras = paragraphs();
    index_paragraphs(&first, "docs", &paras[..90]);
    // A trained int8 index: its ann.bin travels with the snapshot; the f32 vectors it moved to
    // vectors.f32 are derived from the log and do not.
    let trained = ok(
        &first,
        "train",
        json!({ "collection": "docs", "force": true, "quantization": "int8", "wait": true }),
    );
    assert_eq!(trained["state"], "done", "{trained}");
    let snap = ok(&first, "snapshot.create", json!({ "collection": "docs" }));
    let files: Vec<&str> =
        snap["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(files.contains(&"ann.bin") && !files.contains(&"vectors.f32"), "{snap}");
    let id = snap["id"].as_str().unwrap().to_string();
    let want = answers(&first, "docs");
    let (status, tar) = first.post_bytes(
        "/api/plugins/brainml/snapshot.export",
        "application/json",
        json!({ "id": id }).to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&tar));
    let entries = tar_entries(&tar);
    let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[0], "manifest.json", "{names:?}");
    assert!(names.contains(&"wal.log") && names.contains(&"meta.json"), "{names:?}");
    drop(first);

    // A second host with its own data folder.
    let second = brain_host(&models);
    let snaps = snapshots_dir(&second);
    let plugin_data = second.data_dir().join("plugin-data").join("brainml");
    let evil = |name: &str| second.data_dir().join(name);
    let real: Vec<Vec<u8>> = entries.iter().map(|(n, d)| tar_entry(n, b'0', "", d)).collect();
    let hostile: Vec<(&str, Vec<u8>, &str)> = vec![
        ("../evil", tar_of(&[tar_entry("../evil", b'0', "", b"evil")]), "a path outside"),
        (
            "../evil",
            tar_of(&[real[0].clone(), real[1].clone(), tar_entry("../evil", b'0', "", b"evil")]),
            "a path outside",
        ),
        (
            "/tmp/evil-bkg-test",
            tar_of(&[tar_entry("/tmp/evil-bkg-test", b'0', "", b"e")]),
            "a path outside",
        ),
        (
            "wal.log",
            tar_of(&[real[0].clone(), tar_entry("wal.log", b'2', "/etc/passwd", b"")]),
            "a symbolic link",
        ),
        ("meta.json", tar_of(&[tar_entry("meta.json", b'1', "wal.log", b"")]), "a hard link"),
        ("dev", tar_of(&[tar_entry("dev", b'3', "", b"")]), "a device file"),
    ];
    for (name, archive, why) in &hostile {
        let (status, msg) = import(&second, archive);
        assert_eq!(status, 400, "{name}: {msg}");
        assert!(msg.contains(&format!("{name}: {why}")), "{name}: {msg}");
    }
    assert!(!evil("evil").exists() && !plugin_data.join("evil").exists());
    assert!(!std::path::Path::new("/tmp/evil-bkg-test").exists());
    // A flipped byte in the archive's log: its hash is checked against the manifest.
    let mut damaged = entries.clone();
    let wal = damaged.iter_mut().find(|e| e.0 == "wal.log").unwrap();
    let at = wal.1.len() / 3;
    wal.1[at] ^= 0x40;
    let archive =
        tar_of(&damaged.iter().map(|(n, d)| tar_entry(n, b'0', "", d)).collect::<Vec<_>>());
    let (status, msg) = import(&second, &archive);
    assert!(status == 400 && msg.contains("wal.log: sha256 "), "{status} {msg}");
    let (status, msg) = import(&second, b"this is not a tar archive at all, just some words.....");
    assert_eq!(status, 400, "{msg}");
    // Nothing was kept: no snapshot, no leftover.
    assert_eq!(ok(&second, "snapshot.list", json!({}))["snapshots"], json!([]));
    let left: Vec<_> = std::fs::read_dir(&snaps)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");

    // The real archive imports under a fresh id and restores to the same answers.
    let (status, msg) = import(&second, &tar);
    assert_eq!(status, 201, "{msg}");
    let imported: Value = serde_json::from_str(&msg).unwrap();
    let new_id = imported["id"].as_str().unwrap();
    assert_ne!(new_id, id);
    assert!(new_id.starts_with("docs-"), "{new_id}");
    assert_eq!(imported["files"], snap["files"], "the same files and hashes");
    assert_eq!(imported["documents"], 90);
    assert_eq!(ok(&second, "snapshot.verify", json!({ "id": new_id }))["ok"], true);
    let info = ok(&second, "snapshot.restore", json!({ "id": new_id }));
    assert_eq!(info["documents"], 90, "{info}");
    assert_same_answers(&answers(&second, "docs"), &want);
    let stats = ok(&second, "stats", json!({ "collection": "docs" }));
    assert_eq!(stats["collections"][0]["index"], "hnsw", "the index came along: {stats}");
}
