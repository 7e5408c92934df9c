//! Line counts: each file counted by tokei's rules (its language from the path, its lines from
//! the bytes the index read once; `tokei_rules` replays tokei's state machine faster, tokei's
//! library counts the languages with embedded ones), and this module adds the counts up by
//! language or lists them by file for `code.stats`.
//!
//! The counting rules are tokei's (README, "line counts and search"): a line is a comment when
//! it holds nothing but comment (a whitespace-only line inside a block comment too; Rust doc
//! comments are parsed as embedded Markdown, so an empty `///` line is blank); blank when it
//! holds only whitespace outside comments and strings; code otherwise, so a line with code and
//! a trailing comment is code, and every line of a multi-line string is code (Python docstrings
//! included). Code embedded in another language (Markdown code blocks, `<script>` in HTML)
//! counts in the file's own language here, as in tokei's totals. docs/benchmarks-repoagent.md
//! measures where scc counts otherwise.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use bkg_abi::Error;
use serde::Serialize;
use tokei::{Config, LanguageType};

use crate::api;
use crate::repos::Repos;

mod tokei_rules;

/// Lines of one file or of many, as tokei splits them (`lines` = code + comments + blanks).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub lines: u64,
    pub code: u64,
    pub comments: u64,
    pub blanks: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.lines += other.lines;
        self.code += other.code;
        self.comments += other.comments;
        self.blanks += other.blanks;
    }
}

/// tokei's language for a path: by file name (`Makefile`), then extension, then, for a file
/// without an extension, its shebang line (which reads the file's first 128 bytes). `None`: not
/// a language tokei knows; such files are not counted.
pub fn language_of(path: &Path) -> Option<LanguageType> {
    LanguageType::from_path(path, &Config::default())
}

/// Counts lines as tokei does. Owns the counting rules (built on first use), so that they
/// go with the plugin that made it: `Core::reader` holds the plugin's one.
#[derive(Default)]
pub struct Counter {
    rules: tokei_rules::RuleSet,
}

impl Counter {
    /// The counts tokei gives these bytes as `lang`, with tokei's default configuration (no
    /// `tokei.toml` is read: the same rules on every host). A file that starts with a byte
    /// order mark is transcoded first, as tokei does when it reads a file itself (UTF-16
    /// sources count by their characters, not their bytes).
    ///
    /// Most languages are counted by `tokei_rules` (tokei's state machine, which skips the
    /// bytes where none of its checks can fire; the same counts, tested file by file against
    /// tokei); those tokei embeds other languages in (Markdown, HTML and its kin, Lingua
    /// Franca, Jupyter), and a Rust doc comment holding a code fence, by tokei's library
    /// itself, which splits a text across rayon tasks: call this on the plugin's own pool
    /// (inside `install`), never on rayon's global one, or the library cannot unload.
    pub fn count(&self, lang: LanguageType, bytes: &[u8]) -> Counts {
        if has_bom(bytes) {
            let mut text = Vec::with_capacity(bytes.len());
            let mut reader = encoding_rs_io::DecodeReaderBytesBuilder::new().build(bytes);
            if reader.read_to_end(&mut text).is_err() {
                // Reading from memory does not fail; transcoding replaces what it cannot decode.
                text = bytes.to_vec();
            }
            self.count_text(lang, &text)
        } else {
            self.count_text(lang, bytes)
        }
    }

    fn count_text(&self, lang: LanguageType, text: &[u8]) -> Counts {
        match self.rules.get(lang) {
            Some(rules) => {
                let (code, comments, blanks) = rules.count(text);
                Counts { lines: code + comments + blanks, code, comments, blanks }
            }
            None => tokei_counts(lang, text),
        }
    }
}

/// What tokei's library itself gives these bytes (no transcoding): the reference `count`
/// agrees with (tests, `bench_stats --verify`). Uses rayon like `count`'s fallback.
pub fn tokei_counts(lang: LanguageType, text: &[u8]) -> Counts {
    let stats = lang.parse_from_slice(text, &Config::default()).summarise();
    let (code, comments, blanks) = (stats.code as u64, stats.comments as u64, stats.blanks as u64);
    Counts { lines: code + comments + blanks, code, comments, blanks }
}

fn has_bom(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xEF, 0xBB, 0xBF])
        || bytes.starts_with(&[0xFF, 0xFE])
        || bytes.starts_with(&[0xFE, 0xFF])
}

/// One language's share of a repository (or of a folder in it).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LanguageStats {
    /// tokei's name for it (`"Rust"`, `"Python"`, `"Plain Text"`, ...).
    pub language: String,
    pub files: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The sum over every counted file.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// One file's counts.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FileStats {
    pub path: String,
    pub language: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Whether `rel` (a relative path with '/' separators) is `under` or inside it; an empty
/// `under` (or ".") holds everything.
pub fn is_under(rel: &str, under: &str) -> bool {
    let under = under.trim_matches('/');
    if under.is_empty() || under == "." {
        return true;
    }
    rel == under || (rel.starts_with(under) && rel.as_bytes().get(under.len()) == Some(&b'/'))
}

/// Counts summed per language, sorted by code (most first; ties by name), and the totals.
pub fn by_language<'a>(
    files: impl IntoIterator<Item = (&'a str, LanguageType, Counts)>,
) -> (Vec<LanguageStats>, Totals) {
    let mut per: BTreeMap<&'static str, (u64, Counts)> = BTreeMap::new();
    let mut totals = Totals::default();
    for (_, lang, counts) in files {
        let slot = per.entry(lang.name()).or_default();
        slot.0 += 1;
        slot.1.add(&counts);
        totals.files += 1;
        totals.counts.add(&counts);
    }
    let mut languages: Vec<LanguageStats> = per
        .into_iter()
        .map(|(name, (files, counts))| LanguageStats { language: name.to_string(), files, counts })
        .collect();
    languages.sort_by(|a, b| {
        b.counts.code.cmp(&a.counts.code).then_with(|| a.language.cmp(&b.language))
    });
    (languages, totals)
}

/// Every counted file with its counts, sorted by code (most first; ties by path), and the
/// totals.
pub fn by_file<'a>(
    files: impl IntoIterator<Item = (&'a str, LanguageType, Counts)>,
) -> (Vec<FileStats>, Totals) {
    let mut totals = Totals::default();
    let mut out: Vec<FileStats> = files
        .into_iter()
        .map(|(path, lang, counts)| {
            totals.files += 1;
            totals.counts.add(&counts);
            FileStats { path: path.to_string(), language: lang.name().to_string(), counts }
        })
        .collect();
    out.sort_by(|a, b| b.counts.code.cmp(&a.counts.code).then_with(|| a.path.cmp(&b.path)));
    (out, totals)
}

/// A `path` filter of a request made plain: relative, `/` separators, no `.`/`..` parts (an
/// empty answer holds the whole repository). The error is for a 400.
pub fn clean_rel_path(path: &str) -> Result<String, String> {
    let p = path.trim().replace('\\', "/");
    if p.starts_with('/') {
        return Err(format!(
            "`path` {path:?} must be relative to the repository's root (like \"src\" or \"src/lib.rs\")"
        ));
    }
    let mut parts = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!("`path` {path:?} may not contain `..`"));
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// `code.stats`: the repository's counts by language (the default) or by file, for the whole
/// tree or the folder or file `path`; 404 when `path` holds no indexed file.
pub fn answer(repos: &Repos, req: &api::CodeStats) -> Result<api::StatsAnswer, Error> {
    let under = match &req.path {
        Some(p) => clean_rel_path(p).map_err(Error::bad_request)?,
        None => String::new(),
    };
    repos.with_index(&req.repo, |index| {
        if !under.is_empty() && !index.files.keys().any(|rel| is_under(rel, &under)) {
            return Err(Error::not_found(format!(
                "no file or folder {under:?} in repository {:?}",
                req.repo
            )));
        }
        let counted = index.files.iter().filter_map(|(rel, e)| {
            if !is_under(rel, &under) {
                return None;
            }
            Some((rel.as_str(), e.tokei?, e.counts?))
        });
        Ok(match req.by {
            api::StatsBy::Language => {
                let (languages, totals) = by_language(counted);
                api::StatsAnswer::Languages { languages, totals }
            }
            api::StatsBy::File => {
                let (files, totals) = by_file(counted);
                api::StatsAnswer::Files { files, totals }
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(code: u64, comments: u64, blanks: u64) -> Counts {
        Counts { lines: code + comments + blanks, code, comments, blanks }
    }

    #[test]
    fn language_of_knows_names_extensions_and_shebangs() {
        assert_eq!(language_of(Path::new("src/lib.rs")), Some(LanguageType::Rust));
        assert_eq!(language_of(Path::new("a/B.PY")), Some(LanguageType::Python));
        assert_eq!(language_of(Path::new("Makefile")), Some(LanguageType::Makefile));
        assert_eq!(language_of(Path::new("x.nothing-known")), None);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run");
        std::fs::write(&script, "#!/usr/bin/env python3\nprint(1)\n").unwrap();
        assert_eq!(language_of(&script), Some(LanguageType::Python));
    }

    #[test]
    fn count_follows_tokei_rules() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let c = Counter::default();
        let rust = |src: &str| pool.install(|| c.count(LanguageType::Rust, src.as_bytes()));
        // A blank line inside a block comment is a comment.
        assert_eq!(rust("/*\n\n still comment\n*/\n"), counts(0, 4, 0));
        // Doc comments are comments.
        assert_eq!(rust("//! crate doc\n/// item doc\nfn f() {}\n"), counts(1, 2, 0));
        // Code with a trailing comment is code; so is a comment after code ends a block.
        assert_eq!(rust("fn f() { // trailing\n}\n"), counts(2, 0, 0));
        // Lines inside a string are code, even when they look like comments or are empty.
        assert_eq!(rust("let s = \"a\n// not a comment\n\n\";\n"), counts(4, 0, 0));
        // Whitespace-only lines outside comments are blank.
        assert_eq!(rust("fn f() {}\n  \n\t\n"), counts(1, 0, 2));
        // Python docstrings are code (tokei's default configuration).
        let doc = "def f():\n    \"\"\"Doc.\n\n    more\n    \"\"\"\n    return 1  # why\n";
        let py = pool.install(|| c.count(LanguageType::Python, doc.as_bytes()));
        assert_eq!(py, counts(6, 0, 0));
    }

    #[test]
    fn count_transcodes_utf16_like_tokei() {
        let text = "# comment\nx = 1\n\n";
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in text.encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let c = Counter::default();
        let (plain, wide) = pool.install(|| {
            (c.count(LanguageType::Python, text.as_bytes()), c.count(LanguageType::Python, &utf16))
        });
        assert_eq!(plain, counts(1, 1, 1));
        assert_eq!(wide, plain);
    }

    #[test]
    fn aggregates_sort_by_code_and_sum_totals() {
        let files = vec![
            ("a.py", LanguageType::Python, counts(5, 1, 1)),
            ("b.rs", LanguageType::Rust, counts(10, 2, 3)),
            ("c.rs", LanguageType::Rust, counts(1, 0, 0)),
        ];
        let (langs, totals) = by_language(files.clone());
        assert_eq!(langs.len(), 2);
        assert_eq!(langs[0].language, "Rust");
        assert_eq!(langs[0].files, 2);
        assert_eq!(langs[0].counts, counts(11, 2, 3));
        assert_eq!(langs[1].language, "Python");
        assert_eq!(totals.files, 3);
        assert_eq!(totals.counts, counts(16, 3, 4));
        let (by_path, totals2) = by_file(files);
        let order: Vec<&str> = by_path.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(order, ["b.rs", "a.py", "c.rs"]);
        assert_eq!(totals2, totals);
        let json = serde_json::to_value(&by_path[0]).unwrap();
        assert_eq!(json["code"], 10);
        assert_eq!(json["language"], "Rust");
    }

    #[test]
    fn clean_rel_path_refuses_escapes() {
        assert_eq!(clean_rel_path("./src//a/").unwrap(), "src/a");
        assert_eq!(clean_rel_path("").unwrap(), "");
        assert!(clean_rel_path("/etc").unwrap_err().contains("relative"));
        assert!(clean_rel_path("src/../..").unwrap_err().contains(".."));
    }

    #[test]
    fn is_under_matches_whole_components() {
        assert!(is_under("src/a.rs", "src"));
        assert!(is_under("src/a.rs", "src/"));
        assert!(is_under("src/a.rs", "src/a.rs"));
        assert!(is_under("src/a.rs", ""));
        assert!(!is_under("srcx/a.rs", "src"));
        assert!(!is_under("src", "src/a.rs"));
    }
}
