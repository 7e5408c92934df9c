//! What a download request may name. Repo ids, revisions and file names end up in paths under
//! the models folder, so anything that could climb out of it (or is not what the hub itself
//! accepts) is refused before a byte is fetched.

/// Longest repo id, revision and file name accepted (the hub's own limits are lower).
const MAX_LEN: usize = 200;

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A hub repo id: `name` or `org/name`, each part of letters, digits, `-`, `_`, `.`.
pub fn check_repo(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    if repo.len() > MAX_LEN || parts.len() > 2 || !parts.iter().all(|p| segment_ok(p)) {
        return Err(format!(
            "repo id '{repo}' is not a hub repo id: expected 'name' or 'org/name' of letters, \
             digits, '-', '_' and '.' (no '..', no empty parts, at most {MAX_LEN} characters)"
        ));
    }
    if parts.iter().any(|p| p.starts_with('.')) {
        return Err(format!("repo id '{repo}': a part may not start with '.'"));
    }
    Ok(())
}

/// A branch, tag or commit: letters, digits, `-`, `_`, `.`, and `/` between non-empty parts
/// (branch names such as `refs/pr/1`), never `.` or `..` as a part.
pub fn check_revision(revision: &str) -> Result<(), String> {
    if revision.len() > MAX_LEN || !revision.split('/').all(segment_ok) {
        return Err(format!(
            "revision '{revision}' is not a branch, tag or commit name: letters, digits, '-', \
             '_', '.' and '/' between parts, no '.' or '..' parts"
        ));
    }
    Ok(())
}

/// A file inside the repo: a relative `/`-separated path with no `.`/`..`/empty parts, no
/// backslashes or control characters, and not the host's own manifest name.
pub fn check_file(file: &str) -> Result<(), String> {
    let bad_char = file.chars().any(|c| c.is_control() || c == '\\' || c == ':');
    let bad_part = file.split('/').any(|p| p.is_empty() || p == "." || p == "..");
    if file.is_empty() || file.len() > MAX_LEN || bad_char || bad_part {
        return Err(format!(
            "file name '{file}' must be a relative path inside the repo ('/'-separated, no \
             '.', '..' or empty parts, no backslashes, at most {MAX_LEN} characters)"
        ));
    }
    if file == super::install::MANIFEST {
        return Err(format!("file name '{file}' is reserved for the host's model manifest"));
    }
    Ok(())
}

/// An expected SHA-256: 64 hex digits (either case), returned in lower case.
pub fn check_sha256(file: &str, hex: &str) -> Result<String, String> {
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(format!("sha256 given for '{file}' is not 64 hex digits: '{hex}'"))
    }
}

/// True if `s` looks like a SHA-256 (the hub's etag of a file stored with git-lfs).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["gpt2", "sentence-transformers/all-MiniLM-L6-v2", "Org_1/m.v2"] {
            assert!(check_repo(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/", "a/", "/a", "a//b", "..", "../x", "a/..", "a/../b", "a/b/c", "a b", ".hidden",
            "org/.x", "a\\b", "a/b\0", "~/x",
        ] {
            assert!(check_repo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revisions() {
        for ok in ["main", "v1.0", "refs/pr/1", "0123abcd"] {
            assert!(check_revision(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "a/../b", "/main", "main/", "a b", "a\\b"] {
            assert!(check_revision(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["model.safetensors", "1_Pooling/config.json", "onnx/model q.onnx"] {
            assert!(check_file(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\..\\b",
            "c:x",
            "a\nb",
            ".bkg-model.json",
        ] {
            assert!(check_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sha256_hex() {
        let h = "AB".repeat(32);
        assert_eq!(check_sha256("f", &h).unwrap(), "ab".repeat(32));
        assert!(check_sha256("f", "abc").is_err());
        assert!(check_sha256("f", &"g".repeat(64)).is_err());
        assert!(is_sha256(&"0f".repeat(32)) && !is_sha256("0f"));
    }
}
