//! Code chunks for semantic search (`code.index`), cut the way Continue and Cody cut code: one
//! chunk per definition, not per window of lines.
//!
//! - A chunk per function, method, constructor, type (class, struct, enum, union, trait,
//!   interface, type alias), module, namespace, macro and impl, from the index's symbols.
//!   Fields, variants, properties, constants, statics and variables stay inside the chunk of
//!   what holds them (or the file's top-level chunk).
//! - Its text: a header `path · parent · signature` (no parent: `path · signature`), then the
//!   doc comment and attributes written above the definition, then the definition's lines. In
//!   a definition that holds other chunked definitions (an impl, a class, a module), each of
//!   those is one line: its first line and ` ⋯`.
//! - Bodies too long for the embedding model's window (all-MiniLM-L6-v2 reads at most 256
//!   word pieces) are collapsed: the signature, the doc comment (its first lines when it alone
//!   is long), the body's first and last lines, and a `⋯` line in between, within a budget of
//!   word pieces ([`estimate`], a cautious count; `code.index` checks every new chunk with the
//!   model's own tokenizer and cuts harder when one is still over [`MAX_PIECES`]).
//! - Top-level code between definitions (imports, constants, statements) goes in file-level
//!   chunks (kind `file`), cut at the budget too; runs with almost nothing in them (closing
//!   braces) are left out.
//! - A chunk's id is `path#parent::name@hash`: the hash covers the chunk's source lines, their
//!   line numbers and the options, so a chunk whose code or place changed gets a new id (and is
//!   embedded again) while unchanged ones keep theirs.

use serde::Serialize;

use crate::lang::Lang;
use crate::symbols::{FileSymbols, Kind, Symbol};

/// The most word pieces (by the model's own tokenizer, without `[CLS]` and `[SEP]`) a chunk
/// may hold.
pub const MAX_PIECES: usize = 240;
/// The estimated word pieces a chunk is built to at first.
pub const DEFAULT_BUDGET: usize = 220;
/// The line that stands for collapsed lines.
pub const ELLIPSIS: &str = "⋯";

/// How chunks are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Keep the doc comments (and Python docstrings). Off only for the doc-comment retrieval
    /// benchmark, where the query is the doc's first sentence.
    pub docs: bool,
    /// The estimated word pieces ([`estimate`]) a chunk may hold.
    pub budget: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { docs: true, budget: DEFAULT_BUDGET }
    }
}

/// One chunk.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Chunk {
    pub id: String,
    pub path: String,
    /// The definition's line (its name's, as the symbols give it); a file chunk's first line.
    pub line: u32,
    pub end_line: u32,
    /// The symbol's kind (`function`, `struct`, ...) or `file`.
    pub kind: String,
    /// The symbol's name; a file chunk's is the file's name.
    pub name: String,
    pub parent: Option<String>,
    pub language: String,
    pub text: String,
}

/// The kinds that get a chunk of their own.
pub fn chunked(kind: Kind) -> bool {
    !matches!(
        kind,
        Kind::Field
            | Kind::Variant
            | Kind::Property
            | Kind::Constant
            | Kind::Static
            | Kind::Variable
    )
}

/// A cautious estimate of BERT word pieces in `text` (all-MiniLM-L6-v2's uncased WordPiece):
/// every punctuation mark and every other non-alphanumeric character is one piece; a run of
/// letters is cut at case changes, underscores and digits, and each part counts one piece per
/// four letters begun (common words are one piece, rare ones about one per three or four
/// letters); a run of digits one piece per two.
pub fn estimate(text: &str) -> usize {
    let mut n = 0;
    let mut word = 0usize; // letters in the current part
    let mut digits = 0usize;
    let mut prev_lower = false;
    let flush = |n: &mut usize, word: &mut usize, digits: &mut usize| {
        *n += word.div_ceil(4) + digits.div_ceil(2);
        *word = 0;
        *digits = 0;
    };
    for c in text.chars() {
        if c.is_alphabetic() {
            if digits > 0 || (c.is_uppercase() && prev_lower) {
                flush(&mut n, &mut word, &mut digits);
            }
            word += 1;
            prev_lower = c.is_lowercase();
        } else if c.is_ascii_digit() {
            if word > 0 {
                flush(&mut n, &mut word, &mut digits);
            }
            digits += 1;
            prev_lower = false;
        } else {
            flush(&mut n, &mut word, &mut digits);
            prev_lower = false;
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    flush(&mut n, &mut word, &mut digits);
    n
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (ids are kept between runs).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A line that belongs to the comment or attributes written above a definition.
fn is_preamble(lang: Option<Lang>, trimmed: &str) -> bool {
    let hash_comment = matches!(lang, Some(Lang::Python) | Some(Lang::Ruby));
    ["///", "//!", "//", "/*", "*", "#[", "#![", "@"].iter().any(|p| trimmed.starts_with(p))
        || (hash_comment && trimmed.starts_with('#'))
}

/// A comment line (not an attribute or decorator).
fn is_comment(lang: Option<Lang>, trimmed: &str) -> bool {
    let hash_comment = matches!(lang, Some(Lang::Python) | Some(Lang::Ruby));
    ["//", "/*", "*"].iter().any(|p| trimmed.starts_with(p))
        || (hash_comment && trimmed.starts_with('#'))
}

/// One chunked definition while the file is cut.
struct Def<'a> {
    sym: &'a Symbol,
    /// 0-based first line of its preamble (doc comment, attributes) and of the definition,
    /// and its last line.
    pre: usize,
    start: usize,
    end: usize,
}

/// The 0-based lines of the docstring at the start of a Python definition's body, if any.
fn docstring(lines: &[&str], start: usize, end: usize) -> Option<(usize, usize)> {
    // The body begins after the line that ends the signature with ':'.
    let mut i = start;
    while i <= end && !lines[i].trim_end().ends_with(':') {
        i += 1;
    }
    let first = (i + 1..=end).find(|&j| !lines[j].trim().is_empty())?;
    let t = lines[first].trim_start();
    let t = t.trim_start_matches(['r', 'R', 'u', 'U', 'b', 'B']);
    let quote = ["\"\"\"", "'''"].into_iter().find(|q| t.starts_with(q))?;
    let rest = &t[3..];
    if rest.contains(quote) {
        return Some((first, first));
    }
    (first + 1..=end).find(|&j| lines[j].contains(quote)).map(|last| (first, last))
}

/// The chunks of one file. `source` is the file's text, `symbols` what the index found in it.
pub fn file_chunks(
    path: &str,
    lang: Option<Lang>,
    source: &str,
    symbols: &FileSymbols,
    opts: &Options,
) -> Vec<Chunk> {
    let lines: Vec<&str> = source.lines().collect();
    if lines.is_empty() {
        return Vec::new();
    }
    let last = lines.len() - 1;
    let language = lang.map_or("", Lang::name).to_string();
    let mut defs: Vec<Def<'_>> = Vec::new();
    for sym in symbols.defs.iter().filter(|s| chunked(s.kind)) {
        let start = (sym.line.max(1) as usize - 1).min(last);
        let end = (sym.end_line.max(sym.line) as usize - 1).min(last);
        let mut pre = start;
        while pre > 0 && is_preamble(lang, lines[pre - 1].trim()) {
            pre -= 1;
        }
        defs.push(Def { sym, pre, start, end });
    }
    // Outer before inner; the same span (a Rust `impl` and its type on one line) once.
    defs.sort_by_key(|d| (d.pre, std::cmp::Reverse(d.end), d.start));
    defs.dedup_by(|b, a| a.start == b.start && a.end == b.end && a.sym.name == b.sym.name);

    let mut out = Vec::new();
    let mut covered = vec![false; lines.len()];
    for (i, d) in defs.iter().enumerate() {
        // The definitions directly inside this one: each becomes one line.
        let mut inner: Vec<&Def<'_>> = Vec::new();
        for e in &defs[i + 1..] {
            if e.pre > d.end {
                break;
            }
            if e.pre >= d.start && e.end <= d.end && inner.last().is_none_or(|l| e.pre > l.end) {
                inner.push(e);
            }
        }
        for c in covered.iter_mut().take(d.end + 1).skip(d.pre) {
            *c = true;
        }
        // Drop doc comments: the preamble's comment lines and a Python docstring.
        let doc_lines = if opts.docs {
            None
        } else if lang == Some(Lang::Python) {
            docstring(&lines, d.start, d.end)
        } else {
            None
        };
        let preamble: Vec<&str> = lines[d.pre..d.start]
            .iter()
            .copied()
            .filter(|l| opts.docs || !is_comment(lang, l.trim()))
            .collect();
        let mut body: Vec<String> = Vec::new();
        let mut j = d.start;
        let mut next = inner.iter().peekable();
        while j <= d.end {
            if let Some(e) = next.peek() {
                if j == e.pre {
                    let head = lines[e.start].trim_end();
                    body.push(format!("{head} {ELLIPSIS}"));
                    j = e.end + 1;
                    next.next();
                    continue;
                }
            }
            let t = lines[j].trim_start();
            let inner_doc = !opts.docs && (t.starts_with("///") || t.starts_with("//!"));
            if inner_doc || doc_lines.is_some_and(|(a, b)| (a..=b).contains(&j)) {
                j += 1;
                continue;
            }
            body.push(lines[j].trim_end().to_string());
            j += 1;
        }
        let sym = d.sym;
        let header = match &sym.parent {
            Some(p) => format!("{path} · {p} · {}", sym.signature),
            None => format!("{path} · {}", sym.signature),
        };
        let text = collapse(&header, &preamble, &body, opts.budget);
        // The chunk's own lines (the definitions inside as one line each: an edit inside a
        // method leaves its impl's chunk as it was).
        let raw = format!("{header}\n{}\n{}", preamble.join("\n"), body.join("\n"));
        let qual = match &sym.parent {
            Some(p) => format!("{p}::{}", sym.name),
            None => sym.name.clone(),
        };
        let place = format!("{}:{}:{}", sym.line, d.end + 1, opts.docs);
        let hash = fnv(&[raw.as_bytes(), place.as_bytes(), sym.kind.name().as_bytes()]);
        out.push(Chunk {
            id: chunk_id(path, &qual, hash),
            path: path.to_string(),
            line: sym.line,
            end_line: d.end as u32 + 1,
            kind: sym.kind.name().to_string(),
            name: sym.name.clone(),
            parent: sym.parent.clone(),
            language: language.clone(),
            text,
        });
    }
    top_level(path, lang, &lines, &covered, &language, opts, &mut out);
    // Two identical definitions in one place of one file would share an id: number them.
    let mut seen = std::collections::HashMap::new();
    for c in &mut out {
        let n = seen.entry(c.id.clone()).or_insert(0u32);
        *n += 1;
        if *n > 1 {
            c.id = format!("{}~{n}", c.id);
        }
    }
    out
}

fn chunk_id(path: &str, qual: &str, hash: u64) -> String {
    let id = format!("{path}#{qual}@{hash:016x}");
    if id.len() <= 400 {
        return id;
    }
    // brainml takes ids of at most 512 bytes: a long path or name is hashed.
    let h = fnv(&[path.as_bytes(), qual.as_bytes()]);
    let short: String = qual.chars().take(60).collect();
    format!("{h:016x}#{short}@{hash:016x}")
}

/// The file's lines outside every chunked definition, in chunks of their own.
fn top_level(
    path: &str,
    lang: Option<Lang>,
    lines: &[&str],
    covered: &[bool],
    language: &str,
    opts: &Options,
    out: &mut Vec<Chunk>,
) {
    let name = path.rsplit('/').next().unwrap_or(path).to_string();
    let mut i = 0;
    while i < lines.len() {
        if covered[i] || lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        // Gather lines (uncovered ones; blank lines inside a run kept) up to the budget.
        let first = i;
        let header = format!("{path} · top level");
        let mut used = estimate(&header);
        let mut taken: Vec<&str> = Vec::new();
        let mut last = i;
        while i < lines.len() && !covered[i] {
            let l = lines[i].trim_end();
            if !opts.docs && is_comment(lang, l.trim()) {
                i += 1;
                continue;
            }
            let cost = estimate(l).max(1);
            if used + cost > opts.budget && !taken.is_empty() {
                break;
            }
            if used + cost <= opts.budget {
                taken.push(l);
                used += cost;
                last = i;
            }
            i += 1;
        }
        let substance: usize =
            taken.iter().map(|l| l.chars().filter(|c| c.is_alphanumeric()).count()).sum();
        if substance < 12 {
            continue;
        }
        while taken.last().is_some_and(|l| l.trim().is_empty()) {
            taken.pop();
        }
        let raw = taken.join("\n");
        let place = format!("{}:{}:{}", first + 1, last + 1, opts.docs);
        let hash = fnv(&[raw.as_bytes(), place.as_bytes(), b"file"]);
        out.push(Chunk {
            id: chunk_id(path, &format!("(top level {})", first + 1), hash),
            path: path.to_string(),
            line: first as u32 + 1,
            end_line: last as u32 + 1,
            kind: "file".to_string(),
            name: name.clone(),
            parent: None,
            language: language.to_string(),
            text: format!("{header}\n{raw}"),
        });
    }
}

/// The chunk's text within `budget` estimated pieces: the header, the preamble (its first
/// lines if it alone takes more than a third), the body's first line, then as many of its
/// first lines (two thirds of what is left) and last lines as fit, `⋯` for the rest.
fn collapse(header: &str, preamble: &[&str], body: &[String], budget: usize) -> String {
    let cost = |l: &str| estimate(l) + 1;
    let mut text = String::from(header);
    let mut used = cost(header);
    let mut pre_budget = budget / 3;
    for l in preamble {
        let c = cost(l);
        if c > pre_budget {
            break;
        }
        pre_budget -= c;
        used += c;
        text.push('\n');
        text.push_str(l.trim_end());
    }
    if body.is_empty() {
        return text;
    }
    let all: usize = body.iter().map(|l| cost(l)).sum();
    if used + all <= budget {
        for l in body {
            text.push('\n');
            text.push_str(l);
        }
        return text;
    }
    // The first line always (cut to fit when it alone is too long).
    let mut first = body[0].clone();
    while used + cost(&first) > budget && first.chars().count() > 20 {
        let keep = first.chars().count() * 3 / 4;
        first = first.chars().take(keep).collect();
    }
    used += cost(&first);
    let left = budget.saturating_sub(used + 2);
    let mut head_n = 1;
    let mut head_used = 0;
    while head_n < body.len() && head_used + cost(&body[head_n]) <= left * 2 / 3 {
        head_used += cost(&body[head_n]);
        head_n += 1;
    }
    let mut tail_from = body.len();
    let mut tail_used = 0;
    while tail_from > head_n && head_used + tail_used + cost(&body[tail_from - 1]) <= left {
        tail_used += cost(&body[tail_from - 1]);
        tail_from -= 1;
    }
    text.push('\n');
    text.push_str(&first);
    for l in &body[1..head_n] {
        text.push('\n');
        text.push_str(l);
    }
    if tail_from > head_n {
        let indent: String = body[head_n].chars().take_while(|c| c.is_whitespace()).collect();
        text.push('\n');
        text.push_str(&indent);
        text.push_str(ELLIPSIS);
    }
    for l in &body[tail_from..] {
        text.push('\n');
        text.push_str(l);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Extractor;

    const RUST: &str = r#"//! A module.
use std::fmt;

/// Adds two numbers.
///
/// Really.
#[inline]
pub fn add(a: i32, b: i32) -> i32 {
    a + b
}

pub struct Point {
    /// Across.
    pub x: i32,
}

impl Point {
    /// Makes one.
    pub fn new(x: i32) -> Self {
        Point { x }
    }

    pub fn long(&self) -> i32 {
        let mut s = 0;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s += 1; s += 2; s += 3; s += 4; s += 5; s += 6; s += 7; s += 8; s += 9;
        s + self.x
    }
}

const LIMIT: usize = 10;
static NAMES: [&str; 3] = ["alpha", "beta", "gamma"];
"#;

    fn rust_chunks(opts: &Options) -> Vec<Chunk> {
        let syms = Extractor::new().extract(Lang::Rust, RUST.as_bytes()).unwrap();
        file_chunks("src/lib.rs", Some(Lang::Rust), RUST, &syms, opts)
    }

    fn find<'a>(chunks: &'a [Chunk], name: &str, kind: &str) -> &'a Chunk {
        chunks
            .iter()
            .find(|c| c.name == name && c.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} {name} in {chunks:#?}"))
    }

    #[test]
    fn one_chunk_per_definition_with_header_doc_and_body() {
        let chunks = rust_chunks(&Options::default());
        let add = find(&chunks, "add", "function");
        assert_eq!((add.line, add.end_line), (8, 10));
        assert_eq!(add.language, "rust");
        assert!(add.text.starts_with("src/lib.rs · pub fn add(a: i32, b: i32) -> i32\n"));
        assert!(add
            .text
            .contains("/// Adds two numbers.\n///\n/// Really.\n#[inline]\npub fn add"));
        assert!(add.text.ends_with("    a + b\n}"), "{}", add.text);
        assert!(add.id.starts_with("src/lib.rs#add@"), "{}", add.id);
        let new = find(&chunks, "new", "method");
        assert!(new.text.starts_with("src/lib.rs · Point · pub fn new(x: i32) -> Self\n"));
        assert!(new.id.starts_with("src/lib.rs#Point::new@"), "{}", new.id);
        // The impl shows its methods as one line each.
        let imp = chunks.iter().find(|c| c.kind == "impl").expect("the impl's chunk");
        assert!(imp.text.contains("    pub fn new(x: i32) -> Self { ⋯"), "{}", imp.text);
        assert!(!imp.text.contains("Point { x }") && !imp.text.contains("Makes one"));
        // Top-level code: the imports and the constants, not the definitions.
        let top: Vec<&Chunk> = chunks.iter().filter(|c| c.kind == "file").collect();
        assert_eq!(top.len(), 2, "{top:#?}");
        assert!(top[0].text.contains("use std::fmt;") && top[0].name == "lib.rs");
        assert!(top[1].text.contains("const LIMIT") && top[1].text.contains("static NAMES"));
        assert!(chunks.iter().all(|c| !c.text.contains("a + b") || c.name == "add"));
    }

    #[test]
    fn long_bodies_are_collapsed_to_the_budget_with_first_and_last_lines() {
        let chunks = rust_chunks(&Options::default());
        let long = find(&chunks, "long", "method");
        assert!(estimate(&long.text) <= DEFAULT_BUDGET + 2, "{}", long.text);
        assert!(long.text.contains("pub fn long(&self) -> i32 {\n        let mut s = 0;"));
        assert!(long.text.contains("\n        ⋯\n"), "{}", long.text);
        assert!(long.text.ends_with("        s + self.x\n    }"), "{}", long.text);
        let tiny = rust_chunks(&Options { docs: true, budget: 40 });
        let long = find(&tiny, "long", "method");
        assert!(estimate(&long.text) <= 42, "{}", long.text);
        assert!(long.text.contains("pub fn long"));
    }

    #[test]
    fn without_docs_the_doc_comment_is_gone_and_ids_differ() {
        let with = rust_chunks(&Options::default());
        let without = rust_chunks(&Options { docs: false, ..Options::default() });
        let add = find(&without, "add", "function");
        assert!(!add.text.contains("Adds two") && add.text.contains("#[inline]\npub fn add"));
        let doc_lines = |c: &Chunk| c.text.lines().filter(|l| l.contains("///")).count();
        assert!(without.iter().all(|c| doc_lines(c) == 0), "{without:#?}");
        assert!(with.iter().any(|c| doc_lines(c) > 0));
        assert_ne!(add.id, find(&with, "add", "function").id);
    }

    #[test]
    fn ids_change_with_the_code_or_its_lines_only() {
        let syms = |s: &str| Extractor::new().extract(Lang::Rust, s.as_bytes()).unwrap();
        let ids = |s: &str| -> Vec<String> {
            file_chunks("a.rs", Some(Lang::Rust), s, &syms(s), &Options::default())
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        let a = "fn one() {\n    1;\n}\n\nfn two() {\n    2;\n}\n";
        let edited = "fn one() {\n    7;\n}\n\nfn two() {\n    2;\n}\n";
        let moved = "\nfn one() {\n    1;\n}\n\nfn two() {\n    2;\n}\n";
        assert_eq!(ids(a), ids(a));
        let (x, y, z) = (ids(a), ids(edited), ids(moved));
        assert!(x[0] != y[0] && x[1] == y[1], "{x:?} {y:?}");
        assert!(x[0] != z[0] && x[1] != z[1]);
    }

    #[test]
    fn an_edit_inside_a_method_leaves_its_impls_chunk_as_it_was() {
        let edited = RUST.replace("Point { x }", "Point { x: x + 1 }");
        let syms = Extractor::new().extract(Lang::Rust, edited.as_bytes()).unwrap();
        let after =
            file_chunks("src/lib.rs", Some(Lang::Rust), &edited, &syms, &Options::default());
        let before = rust_chunks(&Options::default());
        let changed: Vec<&str> = after
            .iter()
            .filter(|a| !before.iter().any(|b| b.id == a.id))
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(changed, ["new"]);
    }

    #[test]
    fn python_docstrings_go_without_docs() {
        let src = "import os\n\n\ndef area(r):\n    \"\"\"The area of a circle.\n\n    Of radius r.\n    \"\"\"\n    return 3.14 * r * r\n";
        let syms = Extractor::new().extract(Lang::Python, src.as_bytes()).unwrap();
        let opts = Options { docs: false, ..Options::default() };
        let chunks = file_chunks("m.py", Some(Lang::Python), src, &syms, &opts);
        let area = find(&chunks, "area", "function");
        assert!(!area.text.contains("circle") && area.text.contains("return 3.14"), "{area:?}");
        let chunks = file_chunks("m.py", Some(Lang::Python), src, &syms, &Options::default());
        assert!(find(&chunks, "area", "function").text.contains("The area of a circle."));
    }

    #[test]
    fn the_estimate_counts_punctuation_and_splits_identifiers() {
        assert_eq!(estimate(""), 0);
        assert_eq!(estimate("a + b"), 3);
        assert_eq!(estimate("WalkDir::new(root)"), 8);
        assert_eq!(estimate("max_depth"), 4);
        assert_eq!(estimate("12345"), 3);
    }
}
