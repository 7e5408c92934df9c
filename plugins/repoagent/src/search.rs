//! `code.search`: ripgrep's search (grep-searcher with a grep-regex matcher) over the files of a
//! repository's index, each hit with the definition that encloses it.
//!
//! Semantics, as ripgrep's: the pattern is literal unless `regex` is set (Rust regex syntax,
//! ripgrep's); a match never spans lines; case-sensitive unless told otherwise (`smart_case`:
//! insensitive when the pattern has no upper-case letter, like `rg -S`); a file that starts with
//! a byte order mark is transcoded (UTF-16); a NUL byte marks a file binary and stops its
//! search there, as ripgrep does for files it walks (hits before it are kept, so a file with a
//! NUL in its first 64 KiB gives none). `glob`s filter the paths as `rg -g` does (gitignore
//! syntax, `!` excludes). One hit per matching line: `column` is the 1-based byte column of the
//! line's first match, `text` the line without its terminator (cut at 1000 bytes). Files are
//! searched in path order (in parallel, a batch at a time, on the caller's pool) and the first
//! `max` hits in that order are returned: the answer does not depend on timing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bkg_abi::Error;

use grep_matcher::Matcher;
use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{
    BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch,
};
use ignore::overrides::{Override, OverrideBuilder};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::api;
use crate::pool::Pool;
use crate::repos::Repos;
use crate::symbols::FileSymbols;

/// The longest `max` a request may ask for.
pub const MAX_HITS: usize = 10_000;
/// The most context lines a request may ask for on each side.
pub const MAX_CONTEXT: usize = 20;
/// A hit's text (and each context line) is cut after this many bytes.
pub const MAX_LINE_BYTES: usize = 1000;
/// Files searched in parallel before the hits are counted against `max`.
const BATCH: usize = 64;

/// One glob or several (`"*.rs"` or `["*.rs", "!tests/**"]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Globs {
    One(String),
    Many(Vec<String>),
}

impl Globs {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Globs::One(g) => std::slice::from_ref(g),
            Globs::Many(v) => v,
        }
    }
}

/// The definition around a hit.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HitSymbol {
    pub kind: String,
    pub name: String,
    pub line: u32,
}

/// One matching line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hit {
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub text: String,
    /// Up to `context` lines before the hit (fewer at the start of the file), oldest first;
    /// absent when no context was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol: Option<HitSymbol>,
}

/// The answer of `code.search`.
#[derive(Clone, Debug, Serialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// More lines matched than `max`.
    pub truncated: bool,
    /// Files searched (those the globs let through, up to the one where `max` was passed).
    pub files_searched: u64,
    /// Of those, files whose search stopped at a NUL byte (binary).
    pub binary_files: u64,
}

/// A compiled query: the matcher, the globs and the limits, checked once per request.
pub struct Query {
    matcher: RegexMatcher,
    globs: Option<Override>,
    max: usize,
    context: usize,
}

/// What a request asks for (the capability's fields, defaults applied by the caller).
pub struct QuerySpec<'a> {
    pub pattern: &'a str,
    pub regex: bool,
    pub case_sensitive: bool,
    pub smart_case: bool,
    pub globs: &'a [String],
    pub max: usize,
    pub context: usize,
}

impl Query {
    /// Checks and compiles a request; the error (for a 400) says what is wrong, naming the
    /// regex parser's own message for a bad pattern.
    pub fn new(spec: &QuerySpec<'_>) -> Result<Query, String> {
        if spec.pattern.is_empty() {
            return Err("`pattern` is empty: give the text (or, with `regex: true`, the regular expression) to search for".into());
        }
        if spec.max == 0 || spec.max > MAX_HITS {
            return Err(format!("`max` must be between 1 and {MAX_HITS}, not {}", spec.max));
        }
        if spec.context > MAX_CONTEXT {
            return Err(format!(
                "`context` must be at most {MAX_CONTEXT} lines, not {}",
                spec.context
            ));
        }
        let matcher = RegexMatcherBuilder::new()
            .fixed_strings(!spec.regex)
            .case_insensitive(!spec.case_sensitive)
            .case_smart(spec.smart_case)
            .line_terminator(Some(b'\n'))
            .build(spec.pattern)
            .map_err(|e| {
                if spec.regex {
                    format!("bad regex `{}`: {e}", spec.pattern)
                } else {
                    format!("bad pattern `{}`: {e}", spec.pattern)
                }
            })?;
        let globs = if spec.globs.is_empty() {
            None
        } else {
            // Paths are matched relative to the repository root, which the builder never sees:
            // "/" stands in for it.
            let mut builder = OverrideBuilder::new("/");
            for glob in spec.globs {
                if glob.trim().is_empty() {
                    return Err("`glob` holds an empty pattern".into());
                }
                builder.add(glob).map_err(|e| format!("bad glob `{glob}`: {e}"))?;
            }
            Some(builder.build().map_err(|e| format!("bad glob: {e}"))?)
        };
        Ok(Query { matcher, globs, max: spec.max, context: spec.context })
    }

    /// Whether the globs let this relative path through (no globs: every path).
    pub fn wants(&self, rel: &str) -> bool {
        match &self.globs {
            None => true,
            Some(ov) => !ov.matched(Path::new("/").join(rel), false).is_ignore(),
        }
    }

    /// Searches `files` (relative path and whatever `enclosing` needs to name a hit's symbol),
    /// in the order given, under `root`; runs its parallel part on the current rayon pool (call
    /// it inside the plugin's pool's `install`). A file that cannot be read (deleted since it
    /// was indexed) is skipped.
    pub fn run<T: Sync>(
        &self,
        root: &Path,
        files: &[(String, T)],
        enclosing: impl Fn(&T, u32) -> Option<HitSymbol> + Sync,
    ) -> SearchResult {
        let mut result =
            SearchResult { hits: Vec::new(), truncated: false, files_searched: 0, binary_files: 0 };
        // The searcher stops a file after `max + 1` matches: one more than fits tells
        // `truncated` apart from exactly `max`.
        let per_file = (self.max + 1) as u64;
        for batch in files.chunks(BATCH) {
            let found: Vec<Option<FileHits>> = batch
                .par_iter()
                .map(|(rel, _)| self.search_file(&root.join(rel), per_file))
                .collect();
            for ((rel, extra), found) in batch.iter().zip(found) {
                let Some(found) = found else { continue };
                result.files_searched += 1;
                if found.binary {
                    result.binary_files += 1;
                }
                for h in found.hits {
                    if result.hits.len() == self.max {
                        result.truncated = true;
                        return result;
                    }
                    let symbol = enclosing(extra, h.line);
                    result.hits.push(Hit {
                        path: rel.clone(),
                        line: h.line,
                        column: h.column,
                        text: h.text,
                        before: (self.context > 0).then_some(h.before),
                        after: (self.context > 0).then_some(h.after),
                        symbol,
                    });
                }
            }
        }
        result
    }

    fn searcher(&self, max_matches: u64) -> Searcher {
        SearcherBuilder::new()
            .line_number(true)
            .binary_detection(BinaryDetection::quit(b'\x00'))
            .before_context(self.context)
            .after_context(self.context)
            .max_matches(Some(max_matches))
            .build()
    }

    /// One file's hits; `None` when it cannot be read.
    fn search_file(&self, path: &PathBuf, max_matches: u64) -> Option<FileHits> {
        let mut sink = Collect {
            matcher: &self.matcher,
            context: self.context,
            hits: Vec::new(),
            recent: Vec::new(),
            binary: false,
        };
        match self.searcher(max_matches).search_path(&self.matcher, path, &mut sink) {
            Ok(()) => Some(FileHits { hits: sink.hits, binary: sink.binary }),
            // Deleted or unreadable since it was indexed: the watcher will drop it.
            Err(_) => None,
        }
    }
}

/// The default of `max`.
pub const DEFAULT_MAX: usize = 100;

/// `code.search`: checks the request (400 for a bad pattern, glob or limit), takes the list of
/// files from the index (404 unknown repository, 409 still indexing), then searches them on the
/// plugin's pool without holding the index.
pub fn answer(repos: &Repos, pool: &Pool, req: &api::CodeSearch) -> Result<SearchResult, Error> {
    let globs = req.glob.as_ref().map(Globs::as_slice).unwrap_or(&[]);
    let query = Query::new(&QuerySpec {
        pattern: &req.pattern,
        regex: req.regex,
        case_sensitive: req.case_sensitive,
        smart_case: req.smart_case,
        globs,
        max: req.max,
        context: req.context,
    })
    .map_err(Error::bad_request)?;
    let under = match &req.path {
        Some(p) => crate::stats::clean_rel_path(p).map_err(Error::bad_request)?,
        None => String::new(),
    };
    let (root, files) = repos.with_index(&req.repo, |index| {
        let files: Vec<(String, Arc<FileSymbols>)> = index
            .files
            .iter()
            .filter(|(rel, _)| crate::stats::is_under(rel, &under) && query.wants(rel))
            .map(|(rel, e)| (rel.clone(), e.symbols.clone()))
            .collect();
        if files.is_empty()
            && !under.is_empty()
            && !index.files.keys().any(|r| crate::stats::is_under(r, &under))
        {
            return Err(Error::not_found(format!(
                "no file or folder {under:?} in repository {:?}",
                req.repo
            )));
        }
        Ok((index.root.clone(), files))
    })?;
    pool.install(|| {
        query.run(&root, &files, |symbols, line| {
            symbols.enclosing(line).map(|s| HitSymbol {
                kind: s.kind.name().to_string(),
                name: s.name.clone(),
                line: s.line,
            })
        })
    })
}

struct FileHit {
    line: u32,
    column: u32,
    text: String,
    before: Vec<String>,
    after: Vec<String>,
}

struct FileHits {
    hits: Vec<FileHit>,
    binary: bool,
}

/// Gathers one file's matching lines and gives each its own surrounding lines (a line near two
/// hits is in both; a neighbouring hit's line counts as context too).
struct Collect<'m> {
    matcher: &'m RegexMatcher,
    context: usize,
    hits: Vec<FileHit>,
    /// The last `context` lines seen (number, text), for the next hit's `before`.
    recent: Vec<(u64, String)>,
    binary: bool,
}

impl Collect<'_> {
    fn line_seen(&mut self, number: u64, text: &str) {
        if self.context == 0 {
            return;
        }
        let reach = self.context as u64;
        for hit in self.hits.iter_mut().rev() {
            let at = hit.line as u64;
            if number <= at {
                continue;
            }
            if number - at > reach {
                break;
            }
            if hit.after.len() < self.context {
                hit.after.push(text.to_string());
            }
        }
        self.recent.push((number, text.to_string()));
        if self.recent.len() > self.context {
            self.recent.remove(0);
        }
    }
}

fn line_text(bytes: &[u8]) -> String {
    let mut end = bytes.len();
    while end > 0 && (bytes[end - 1] == b'\n' || bytes[end - 1] == b'\r') {
        end -= 1;
    }
    let bytes = &bytes[..end];
    if bytes.len() <= MAX_LINE_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut text = String::from_utf8_lossy(&bytes[..MAX_LINE_BYTES]).into_owned();
    // A cut through a multi-byte character leaves a replacement character: drop it.
    if text.ends_with('\u{FFFD}') && std::str::from_utf8(&bytes[..MAX_LINE_BYTES]).is_err() {
        text.pop();
    }
    text.push('…');
    text
}

impl Sink for &mut Collect<'_> {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, Self::Error> {
        let number = mat.line_number().unwrap_or(0);
        let bytes = mat.bytes();
        let column = match self.matcher.find(bytes) {
            Ok(Some(m)) => m.start() as u32 + 1,
            _ => 1,
        };
        let text = line_text(bytes);
        let reach = self.context as u64;
        let before: Vec<String> = self
            .recent
            .iter()
            .filter(|(n, _)| *n < number && number - *n <= reach)
            .map(|(_, t)| t.clone())
            .collect();
        // The hit's own line is context for earlier hits and later ones.
        self.line_seen(number, &text);
        self.hits.push(FileHit { line: number as u32, column, text, before, after: Vec::new() });
        Ok(true)
    }

    fn context(&mut self, _: &Searcher, ctx: &SinkContext<'_>) -> Result<bool, Self::Error> {
        if matches!(ctx.kind(), SinkContextKind::Other) {
            return Ok(true);
        }
        let number = ctx.line_number().unwrap_or(0);
        let text = line_text(ctx.bytes());
        self.line_seen(number, &text);
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _offset: u64) -> Result<bool, Self::Error> {
        self.binary = true;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pattern: &str) -> QuerySpec<'_> {
        QuerySpec {
            pattern,
            regex: false,
            case_sensitive: true,
            smart_case: false,
            globs: &[],
            max: 100,
            context: 0,
        }
    }

    fn run(q: &Query, root: &Path, files: &[&str]) -> SearchResult {
        let files: Vec<(String, ())> = files.iter().map(|f| (f.to_string(), ())).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| q.run(root, &files, |_, _| None))
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "fn a() {}\nlet x = a.b(1);\nFOO\nfoo\nend\n")
            .unwrap();
        std::fs::write(dir.path().join("b.py"), "a.b(2)\n").unwrap();
        let mut bin = b"a.b(3)\n".to_vec();
        bin.extend_from_slice(&[0u8; 16]);
        bin.extend_from_slice(b"\na.b(4)\n");
        std::fs::write(dir.path().join("c.bin"), bin).unwrap();
        dir
    }

    #[test]
    fn literal_by_default_and_regex_on_request() {
        let dir = tree();
        let files = ["b.py", "c.bin", "src/a.rs"];
        let r = run(&Query::new(&spec("a.b(")).unwrap(), dir.path(), &files);
        let found: Vec<(&str, u32, u32)> =
            r.hits.iter().map(|h| (h.path.as_str(), h.line, h.column)).collect();
        // c.bin: a NUL in its first buffer ends its search before any hit, as in ripgrep.
        assert_eq!(found, [("b.py", 1, 1), ("src/a.rs", 2, 9)]);
        assert_eq!(r.files_searched, 3);
        assert_eq!(r.binary_files, 1);
        assert!(!r.truncated);
        let mut s = spec(r"a\.b\(\d\)");
        s.regex = true;
        let r = run(&Query::new(&s).unwrap(), dir.path(), &files);
        assert_eq!(r.hits.len(), 2);
        assert_eq!(r.hits[1].text, "let x = a.b(1);");
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let mut s = spec("fn (");
        s.regex = true;
        let e = Query::new(&s).err().unwrap();
        assert!(e.contains("bad regex `fn (`") && e.contains("unclosed group"), "{e}");
        assert!(Query::new(&spec("")).err().unwrap().contains("empty"));
        let mut s = spec("x");
        s.max = 0;
        assert!(Query::new(&s).err().unwrap().contains("`max`"));
        let mut s = spec("x");
        s.context = MAX_CONTEXT + 1;
        assert!(Query::new(&s).err().unwrap().contains("`context`"));
        let globs = ["{a".to_string()];
        let mut s = spec("x");
        s.globs = &globs;
        assert!(Query::new(&s).err().unwrap().contains("bad glob `{a`"));
    }

    #[test]
    fn case_and_smart_case() {
        let dir = tree();
        let files = ["src/a.rs"];
        let lines = |s: &QuerySpec| -> Vec<u32> {
            run(&Query::new(s).unwrap(), dir.path(), &files).hits.iter().map(|h| h.line).collect()
        };
        assert_eq!(lines(&spec("foo")), [4]);
        let mut s = spec("foo");
        s.case_sensitive = false;
        assert_eq!(lines(&s), [3, 4]);
        let mut s = spec("foo");
        s.smart_case = true;
        assert_eq!(lines(&s), [3, 4]);
        let mut s = spec("FOO");
        s.smart_case = true;
        assert_eq!(lines(&s), [3]);
    }

    #[test]
    fn globs_filter_like_rg_g() {
        let globs = ["*.rs".to_string()];
        let mut s = spec("x");
        s.globs = &globs;
        let q = Query::new(&s).unwrap();
        assert!(q.wants("src/a.rs") && q.wants("a.rs") && !q.wants("b.py"));
        let globs = ["!src/**".to_string()];
        s.globs = &globs;
        let q = Query::new(&s).unwrap();
        assert!(!q.wants("src/a.rs") && q.wants("b.py"));
    }

    #[test]
    fn max_truncates_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for i in 0..150 {
            let name = format!("f{i:03}.txt");
            std::fs::write(dir.path().join(&name), "hit\nmiss\nhit\n").unwrap();
            names.push(name);
        }
        let files: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut s = spec("hit");
        s.max = 101;
        let r = run(&Query::new(&s).unwrap(), dir.path(), &files);
        assert_eq!(r.hits.len(), 101);
        assert!(r.truncated);
        assert_eq!(r.hits[100].path, "f050.txt");
        assert_eq!(r.hits[100].line, 1);
        assert_eq!(r.files_searched, 51);
        s.max = 300;
        let r = run(&Query::new(&s).unwrap(), dir.path(), &files);
        assert_eq!((r.hits.len(), r.truncated, r.files_searched), (300, false, 150));
    }

    #[test]
    fn context_lines_per_hit() {
        let dir = tempfile::tempdir().unwrap();
        let text = "l1\nl2 hit\nl3\nl4 hit\nl5\nl6\nl7\nl8 hit\n";
        std::fs::write(dir.path().join("t.txt"), text).unwrap();
        let mut s = spec("hit");
        s.context = 2;
        let r = run(&Query::new(&s).unwrap(), dir.path(), &["t.txt"]);
        let h: Vec<(u32, Vec<String>, Vec<String>)> = r
            .hits
            .iter()
            .map(|h| (h.line, h.before.clone().unwrap(), h.after.clone().unwrap()))
            .collect();
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            h,
            [
                (2, v(&["l1"]), v(&["l3", "l4 hit"])),
                (4, v(&["l2 hit", "l3"]), v(&["l5", "l6"])),
                (8, v(&["l6", "l7"]), v(&[])),
            ]
        );
        let json = serde_json::to_value(&r.hits[0]).unwrap();
        assert!(json.get("symbol").is_none());
        s.context = 0;
        let r = run(&Query::new(&s).unwrap(), dir.path(), &["t.txt"]);
        let json = serde_json::to_value(&r.hits[0]).unwrap();
        assert!(json.get("before").is_none() && json.get("after").is_none());
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let line = "é".repeat(MAX_LINE_BYTES);
        let text = line_text(line.as_bytes());
        assert!(text.ends_with('…'));
        assert_eq!(text.chars().count(), MAX_LINE_BYTES / 2 + 1);
        assert_eq!(line_text(b"abc\r\n"), "abc");
    }
}
