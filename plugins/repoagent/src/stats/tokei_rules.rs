//! tokei's line counting, rewritten to skip what cannot matter. For every file of a language it
//! takes, the counts are exactly those of tokei 13's `LanguageType::parse_from_slice` with
//! `Config::default()` (after `CodeStats::summarise`): the same state machine (tokei's
//! `parse_lines`, `try_perform_single_line_analysis`, `perform_multi_line_analysis` and
//! `line_is_comment` in `language/{language_type,syntax}.rs`), quirks included, on the token
//! lists tokei's public `LanguageType` methods give.
//!
//! What is different is only how it walks a line that needs the multi-line analysis: tokei
//! tries ~15 `starts_with` at every byte; here, per mode (plain, in a string, in a comment), a
//! 256-entry table holds the bytes that can start a token that mode checks (plus `\`, whose
//! escapes tokei honours in every mode but a verbatim string's, and for Rust whitespace and `/`,
//! where its doc-comment context can begin), and the scan jumps from one such byte to the next;
//! at every other byte each of tokei's checks is a no-op. No rayon (tokei joins two tasks per
//! file), no allocation per line.
//!
//! The quirks kept (each has a unit test below that compares with tokei itself):
//! - `\\` and `\` followed by a string's opening quote skip two bytes in every mode, outside
//!   strings too, unless the last string opened was verbatim (the flag stays set after it
//!   closes, across lines).
//! - A multi-line comment's opening token inside a comment is skipped even when it does not
//!   nest.
//! - Rust: at any position in plain mode whose text, leading whitespace (newlines included)
//!   trimmed, starts with `///` or `//!`, the doc block begins: the line holding that position
//!   is not counted at all, the following lines that start (after whitespace) with the same
//!   three bytes, and the blank lines between them, become one Markdown text (each line from
//!   after its `///`), counted by Markdown's rules (literate: a non-blank line is a comment).
//!   A doc text holding a "```" is counted by tokei's own Markdown parser (its code blocks embed
//!   other languages).
//! - A line is trimmed of tokei's whitespace (space and `\t` to `\r`), except in Fortran.
//! - tokei's "simple parse" of the lines before the first important token and its `par_bridge`
//!   give the same counts as its main loop on those lines; there is one loop here.
//!
//! Languages this does not take (`RuleSet::get` gives `None`, the caller uses tokei):
//! those tokei gives an embedding family other than Rust's (Markdown, Unreal's Markdown, HTML
//! and its kin, Lingua Franca), Jupyter (JSON), and any whose tokens are empty, start with
//! whitespace or hold a newline (none in tokei 13; the check keeps the skipping sound).

use std::collections::HashMap;
use std::sync::OnceLock;

use grep_searcher::LineStep;
use tokei::{Config, LanguageType};

/// tokei's whitespace (`utils::ext::AsciiExt::is_whitespace`): space and `\t`..=`\r`.
#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// tokei's `SliceExt::trim`.
#[inline]
fn trim(s: &[u8]) -> &[u8] {
    let Some(start) = s.iter().position(|&b| !is_ws(b)) else {
        return &[];
    };
    let end = s.iter().rposition(|&b| !is_ws(b)).unwrap_or(start);
    &s[start..=end]
}

/// tokei's `SliceExt::trim_start`.
#[inline]
fn trim_start(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| !is_ws(b)) {
        Some(start) => &s[start..],
        None => &[],
    }
}

type Pairs = &'static [(&'static str, &'static str)];
type Table = [bool; 256];

/// `w.starts_with(t)` for the short tokens here, without a call to `memcmp`.
#[inline(always)]
fn sw(w: &[u8], t: &[u8]) -> bool {
    w.len() >= t.len() && t.iter().zip(w).all(|(a, b)| a == b)
}

/// The bytes of `b` set in a new table.
fn table_of(bytes: impl IntoIterator<Item = u8>) -> Table {
    let mut table = [false; 256];
    for b in bytes {
        table[b as usize] = true;
    }
    table
}

/// `table` with `\` set (index 0) and as it is (index 1, for after a verbatim string).
fn with_backslash(table: Table) -> [Table; 2] {
    let mut escaping = table;
    escaping[b'\\' as usize] = true;
    [escaping, table]
}

/// A string's mode: its closing token and where the scan stops in it.
struct QuoteMode {
    end: &'static [u8],
    stops: [Table; 2],
}

/// A comment's mode (one per distinct closing token): where the scan stops in it, and the
/// starts of the comments it closes (tokei's `starts_with_comment`).
struct CommentMode {
    end: &'static [u8],
    stops: [Table; 2],
    starts: Vec<&'static [u8]>,
}

/// An opening token and the mode it enters.
struct Opening {
    start: &'static [u8],
    mode: usize,
}

/// The rules of every language, built on first use and owned by whoever made the set (the
/// plugin: a process-wide static would leave its ~1.5 MB on the heap at every unload).
#[derive(Default)]
pub struct RuleSet {
    all: OnceLock<HashMap<LanguageType, Rules>>,
}

impl RuleSet {
    /// The rules of `lang`; `None` for a language tokei itself must count (see the module's
    /// documentation).
    pub fn get(&self, lang: LanguageType) -> Option<&Rules> {
        self.all
            .get_or_init(|| {
                LanguageType::list()
                    .iter()
                    .filter_map(|(l, _)| Some((*l, Rules::build(*l)?)))
                    .collect()
            })
            .get(&lang)
    }
}

/// One language's tokens (tokei's `SharedMatchers`) and the skip tables built from them.
pub struct Rules {
    literate: bool,
    fortran: bool,
    rust: bool,
    line_comments: Vec<&'static [u8]>,
    /// tokei's `any_multi_line_comments` (multi-line, then nested): both ends.
    any_multi_line: Vec<(&'static [u8], &'static [u8])>,
    /// The same starts in the same order (tokei's `parse_multi_line_comment`), with whether a
    /// start inside a comment opens another (the language nests, or it is a nested comment).
    comment_openings: Vec<(Opening, bool)>,
    /// doc quotes, verbatim quotes, quotes: tokei's order in `parse_quote`; the flag is
    /// `quote_is_verbatim`.
    quote_openings: Vec<(Opening, bool)>,
    /// Starts of the quotes (not the doc or verbatim ones): `\` before one escapes it.
    quote_starts: Vec<&'static [u8]>,
    important: Vec<&'static [u8]>,
    important_first: Table,
    quote_modes: Vec<QuoteMode>,
    comment_modes: Vec<CommentMode>,
    /// Plain mode: first bytes of every quote, comment start and line comment (and, for Rust,
    /// whitespace and `/`).
    plain_stops: [Table; 2],
}

impl Rules {
    fn build(lang: LanguageType) -> Option<Rules> {
        use LanguageType::*;
        if matches!(
            lang,
            Markdown
                | UnrealDeveloperMarkdown
                | LinguaFranca
                | Html
                | RubyHtml
                | Svelte
                | Vue
                | GlimmerJs
                | GlimmerTs
                | Jupyter
        ) {
            return None;
        }
        let pair_tokens = |p: Pairs| p.iter().flat_map(|(s, e)| [*s, *e]);
        let all: Vec<&str> = lang
            .line_comments()
            .iter()
            .copied()
            .chain(pair_tokens(lang.multi_line_comments()))
            .chain(pair_tokens(lang.nested_comments()))
            .chain(pair_tokens(lang.doc_quotes()))
            .chain(pair_tokens(lang.verbatim_quotes()))
            .chain(pair_tokens(lang.quotes()))
            .chain(lang.important_syntax().iter().copied())
            .collect();
        if all.iter().any(|t| t.is_empty() || is_ws(t.as_bytes()[0]) || t.contains('\n')) {
            return None;
        }
        let rust = lang == Rust;
        let line_comments: Vec<&[u8]> = lang.line_comments().iter().map(|t| t.as_bytes()).collect();
        let any_multi_line: Vec<(&[u8], &[u8])> = lang
            .multi_line_comments()
            .iter()
            .chain(lang.nested_comments())
            .map(|(s, e)| (s.as_bytes(), e.as_bytes()))
            .collect();
        let first = |t: &&[u8]| t[0];

        let mut comment_modes: Vec<CommentMode> = Vec::new();
        let comment_stops = table_of(any_multi_line.iter().map(|(s, _)| s[0]));
        let mut comment_openings = Vec::new();
        for (k, &(s, e)) in any_multi_line.iter().enumerate() {
            let mode = match comment_modes.iter().position(|m| m.end == e) {
                Some(m) => m,
                None => {
                    let mut stops = comment_stops;
                    stops[e[0] as usize] = true;
                    comment_modes.push(CommentMode {
                        end: e,
                        stops: with_backslash(stops),
                        starts: Vec::new(),
                    });
                    comment_modes.len() - 1
                }
            };
            comment_modes[mode].starts.push(s);
            let (ts, te) = if k < lang.multi_line_comments().len() {
                lang.multi_line_comments()[k]
            } else {
                lang.nested_comments()[k - lang.multi_line_comments().len()]
            };
            let nests = lang.allows_nested() || lang.nested_comments().contains(&(ts, te));
            comment_openings.push((Opening { start: s, mode }, nests));
        }

        let mut quote_modes: Vec<QuoteMode> = Vec::new();
        let mut quote_openings = Vec::new();
        for (list, verbatim) in
            [(lang.doc_quotes(), false), (lang.verbatim_quotes(), true), (lang.quotes(), false)]
        {
            for (s, e) in list {
                let e = e.as_bytes();
                let mode = match quote_modes.iter().position(|m| m.end == e) {
                    Some(m) => m,
                    None => {
                        quote_modes
                            .push(QuoteMode { end: e, stops: with_backslash(table_of([e[0]])) });
                        quote_modes.len() - 1
                    }
                };
                quote_openings.push((Opening { start: s.as_bytes(), mode }, verbatim));
            }
        }

        let mut plain = table_of(
            line_comments
                .iter()
                .map(first)
                .chain(any_multi_line.iter().map(|(s, _)| s[0]))
                .chain(quote_openings.iter().map(|(o, _)| o.start[0])),
        );
        if rust {
            plain[b'/' as usize] = true;
            for b in 0..=255u8 {
                if is_ws(b) {
                    plain[b as usize] = true;
                }
            }
        }
        let important: Vec<&[u8]> = lang.important_syntax().iter().map(|t| t.as_bytes()).collect();
        Some(Rules {
            literate: lang.is_literate(),
            fortran: matches!(lang, FortranModern | FortranLegacy),
            rust,
            line_comments,
            any_multi_line,
            comment_openings,
            quote_openings,
            quote_starts: lang.quotes().iter().map(|(s, _)| s.as_bytes()).collect(),
            important_first: table_of(important.iter().map(first)),
            important,
            quote_modes,
            comment_modes,
            plain_stops: with_backslash(plain),
        })
    }

    /// Whether an important token occurs in `line` (tokei's `important_syntax.is_match`).
    #[inline]
    fn has_important(&self, line: &[u8]) -> bool {
        let mut k = 0;
        while k < line.len() {
            if self.important_first[line[k] as usize]
                && self.important.iter().any(|t| sw(&line[k..], t))
            {
                return true;
            }
            k += 1;
        }
        false
    }

    /// Whether `line` starts with a line comment.
    #[inline]
    fn starts_with_line_comment(&self, line: &[u8]) -> bool {
        self.line_comments.iter().any(|t| sw(line, t))
    }

    /// (code, comments, blanks) of `text`, as tokei counts it.
    pub fn count(&self, text: &[u8]) -> (u64, u64, u64) {
        let mut c = Counter { rules: self, quote: None, verbatim: false, stack: Vec::new() };
        let mut doc = Vec::new();
        let (mut code, mut comments, mut blanks) = (0u64, 0u64, 0u64);
        let mut stepper = LineStep::new(b'\n', 0, text.len());
        while let Some((start, end)) = stepper.next(text) {
            let raw = &text[start..end];
            let line = if self.fortran { raw } else { trim(raw) };
            // try_perform_single_line_analysis
            if c.quote.is_none() && c.stack.is_empty() {
                if trim(line).is_empty() {
                    blanks += 1;
                    continue;
                }
                if !self.has_important(line) {
                    if self.literate || self.starts_with_line_comment(line) {
                        comments += 1;
                    } else {
                        code += 1;
                    }
                    continue;
                }
            }
            let started_in_comments = !c.stack.is_empty();
            if let Some(at) = c.multi_line(text, start, end) {
                // Rust's doc block: this line is not counted; the block is Markdown.
                let (block_end, counts) = doc_block(text, at, &mut doc);
                code += counts.0;
                comments += counts.1;
                blanks += counts.2;
                stepper = LineStep::new(b'\n', block_end, text.len());
                continue;
            }
            if self.literate || c.line_is_comment(line, started_in_comments) {
                comments += 1;
            } else {
                code += 1;
            }
        }
        (code, comments, blanks)
    }
}

/// tokei's `SyntaxCounter` state for one file (modes by their index in `Rules`).
struct Counter<'r> {
    rules: &'r Rules,
    quote: Option<usize>,
    /// tokei's `quote_is_verbatim`: set when a string opens, kept after it closes.
    verbatim: bool,
    stack: Vec<usize>,
}

impl Counter<'_> {
    /// tokei's `perform_multi_line_analysis` over `text[start..end]` (one line); `Some(i)`:
    /// Rust's doc context begins at `i`.
    fn multi_line(&mut self, text: &[u8], start: usize, end: usize) -> Option<usize> {
        let r = self.rules;
        let mut i = start;
        'scan: while i < end {
            // Jump to the next byte where one of tokei's checks can fire in this mode.
            let stops = match (self.quote, self.stack.last()) {
                (Some(q), _) => &r.quote_modes[q].stops,
                (None, Some(&m)) => &r.comment_modes[m].stops,
                (None, None) => &r.plain_stops,
            };
            let stops = &stops[self.verbatim as usize];
            while !stops[text[i] as usize] {
                i += 1;
                if i == end {
                    break 'scan;
                }
            }
            let window = &text[i..];
            // parse_end_of_quote
            if let Some(q) = self.quote {
                let e = r.quote_modes[q].end;
                if sw(window, e) {
                    self.quote = None;
                    i += e.len();
                    continue;
                }
            }
            if !self.verbatim
                && window[0] == b'\\'
                && (sw(window, b"\\\\") || r.quote_starts.iter().any(|s| sw(&window[1..], s)))
            {
                i += 2;
                continue;
            }
            // parse_end_of_multi_line
            if let Some(&m) = self.stack.last() {
                let e = r.comment_modes[m].end;
                if sw(window, e) {
                    i += e.len();
                    self.stack.pop();
                    continue;
                }
            }
            if self.quote.is_some() {
                i += 1;
                continue;
            }
            let plain = self.stack.is_empty();
            // parse_context (Rust): the rest of the file, whitespace trimmed, opens a doc
            // comment. Every position of a whitespace run sees the same text after it.
            if r.rust && plain {
                let next = i + window.iter().position(|&b| !is_ws(b)).unwrap_or(window.len());
                let rest = &text[next..];
                if sw(rest, b"///") || sw(rest, b"//!") {
                    return Some(i);
                }
                if next > i {
                    i = next;
                    continue;
                }
            }
            // parse_quote
            if plain {
                if let Some((o, verbatim)) =
                    r.quote_openings.iter().find(|(o, _)| sw(window, o.start))
                {
                    self.quote = Some(o.mode);
                    self.verbatim = *verbatim;
                    i += o.start.len();
                    continue;
                }
            }
            // parse_multi_line_comment: a start token is skipped even when it does not nest.
            if let Some((o, nests)) = r.comment_openings.iter().find(|(o, _)| sw(window, o.start)) {
                if plain || *nests {
                    self.stack.push(o.mode);
                }
                i += o.start.len();
                continue;
            }
            // parse_line_comment
            if plain && r.line_comments.iter().any(|t| sw(window, t)) {
                return None;
            }
            i += 1;
        }
        None
    }

    /// tokei's `line_is_comment` with the default configuration (doc strings are code).
    fn line_is_comment(&self, line: &[u8], started_in_comments: bool) -> bool {
        if self.quote.is_some() {
            return false;
        }
        if started_in_comments {
            return true;
        }
        let r = self.rules;
        let trimmed = trim(line);
        if r.starts_with_line_comment(trimmed)
            || r.any_multi_line.iter().any(|(s, e)| sw(trimmed, s) && trimmed.ends_with(e))
        {
            return true;
        }
        match self.stack.last() {
            Some(&m) => r.comment_modes[m].starts.iter().any(|s| sw(trimmed, s)),
            None => false,
        }
    }
}

/// Rust's doc context from `at` (tokei's `parse_context`, `RegexFamily::Rust`): where the block
/// ends and the (code, comments, blanks) of its Markdown. `doc` is scratch space.
fn doc_block(text: &[u8], at: usize, doc: &mut Vec<u8>) -> (usize, (u64, u64, u64)) {
    let rest = trim_start(&text[at..]);
    let syntax: &[u8] = if rest.starts_with(b"///") { b"///" } else { b"//!" };
    doc.clear();
    let mut block_end = text.len();
    let mut stepper = LineStep::new(b'\n', at, text.len());
    while let Some((s, e)) = stepper.next(text) {
        if trim_start(&text[s..]).starts_with(syntax) {
            let line = trim_start(&text[s..e]);
            doc.extend_from_slice(&line[3.min(line.len())..]);
            block_end = e;
        } else {
            block_end = s;
            break;
        }
    }
    let markdown = trim(doc);
    let counts = if markdown.windows(3).any(|w| w == b"```") {
        let stats =
            LanguageType::Markdown.parse_from_slice(markdown, &Config::default()).summarise();
        (stats.code as u64, stats.comments as u64, stats.blanks as u64)
    } else {
        // Markdown without a code fence: literate, no tokens; a line is blank or a comment.
        let (mut comments, mut blanks) = (0, 0);
        let mut lines = LineStep::new(b'\n', 0, markdown.len());
        while let Some((s, e)) = lines.next(markdown) {
            if trim(&markdown[s..e]).is_empty() {
                blanks += 1;
            } else {
                comments += 1;
            }
        }
        (0, comments, blanks)
    };
    (block_end, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (code, comments, blanks) by tokei's library itself.
    fn tokei(lang: LanguageType, text: &str) -> (u64, u64, u64) {
        let s = lang.parse_from_slice(text.as_bytes(), &Config::default()).summarise();
        (s.code as u64, s.comments as u64, s.blanks as u64)
    }

    /// The rules of `lang` (one set for all the tests of this binary).
    fn for_language(lang: LanguageType) -> Option<&'static Rules> {
        static SET: OnceLock<RuleSet> = OnceLock::new();
        SET.get_or_init(RuleSet::default).get(lang)
    }

    fn ours(lang: LanguageType, text: &str) -> (u64, u64, u64) {
        for_language(lang).expect("a language the rules take").count(text.as_bytes())
    }

    /// Ours equal tokei's on `text`, and tokei's are `expected` (so that the snippet really
    /// shows the quirk it is named for).
    fn check(lang: LanguageType, text: &str, expected: (u64, u64, u64)) {
        assert_eq!(tokei(lang, text), expected, "tokei on {lang} {text:?}");
        assert_eq!(ours(lang, text), expected, "ours on {lang} {text:?}");
    }

    #[test]
    fn escapes_outside_strings_skip_the_quote_after_them() {
        // `\"` outside a string: tokei skips both bytes, so no string opens and the next
        // line is a comment.
        check(LanguageType::C, "x = \\\"; y = 1;\n// comment\nint z;\n", (2, 1, 0));
        // `\\` skips two bytes: the `\` before the quote is not an escape.
        check(LanguageType::C, "s = \"a\\\\\";\n// comment\n", (1, 1, 0));
    }

    #[test]
    fn the_verbatim_flag_outlives_its_string() {
        // After `r#"..."#` closes, `\"` no longer escapes: the `"` opens a string that runs
        // to the end of the file, so the comment and the blank line in it are code.
        let text = "let a = r#\"x\"#;\nlet q = '\\\"';\n// comment\n\nfn f() {}\n";
        check(LanguageType::Rust, text, (5, 0, 0));
        // Without the verbatim string before it, the same `'\"'` is skipped.
        let text = "let a = \"x\";\nlet q = '\\\"';\n// comment\n\nfn f() {}\n";
        check(LanguageType::Rust, text, (3, 1, 1));
    }

    #[test]
    fn rust_doc_context_at_the_newline_before_a_doc_line_drops_that_line() {
        // The line with the string goes through the multi-line analysis; at its newline the
        // rest of the file, trimmed, starts with `///`: that line is not counted at all.
        check(LanguageType::Rust, "let s = \"a\";\n/// doc\nfn f() {}\n", (1, 1, 0));
        // A line without important syntax is counted by the single-line analysis first.
        check(LanguageType::Rust, "let s = 1;\n/// doc\nfn f() {}\n", (2, 1, 0));
        // A trailing doc comment on a code line: the line becomes the Markdown text.
        check(LanguageType::Rust, "let x = \"a\"; /// trailing\nfn g() {}\n", (1, 1, 0));
        // `//!` too, and a comment that ends before whitespace and a doc line.
        check(LanguageType::Rust, "/* a\n*/   \n//! inner\nfn h() {}\n", (1, 2, 0));
    }

    #[test]
    fn rust_doc_blocks_are_markdown_with_their_blank_lines() {
        // Blank lines between doc lines join the block; the text is trimmed, so the blank
        // doc lines at its ends vanish; a blank line inside it is blank.
        check(LanguageType::Rust, "///\n/// a\n\n///\n/// b\n///\nfn f() {}\n", (1, 2, 1));
        // A code fence: Markdown's own parser (the Rust inside counts as Rust)...
        let text = "/// a\n/// ```rust\n/// let x = 1;\n/// // c\n/// ```\nfn f() {}\n";
        check(LanguageType::Rust, text, (2, 4, 0));
        // ...which needs a language after the fence to see code in it.
        let text = "/// a\n/// ```\n/// let x = 1;\n/// // c\n/// ```\nfn f() {}\n";
        check(LanguageType::Rust, text, (1, 5, 0));
        // The block ends at the other doc syntax.
        check(LanguageType::Rust, "/// a\n//! b\nfn f() {}\n", (1, 2, 0));
        // `////` is a doc line too.
        check(LanguageType::Rust, "//// a\nfn f() {}\n", (1, 1, 0));
    }

    #[test]
    fn comment_starts_inside_comments_nest_only_where_the_language_nests() {
        // Rust nests: the first `*/` closes the inner comment; the line stays in a comment.
        check(LanguageType::Rust, "/* a /* b */\nstill\n*/ x\n", (0, 3, 0));
        // C does not: `/*` inside a comment is skipped, the first `*/` closes it.
        check(LanguageType::C, "/* a /* b */\nint x;\n", (1, 1, 0));
    }

    #[test]
    fn line_is_comment_follows_tokei() {
        // Whole-line comments, a comment opened (not closed) at the start of a line, code
        // before a comment, code after a closed one, a line that started in a comment.
        check(LanguageType::C, "/* a */ /* b */\n/* open\n*/ int x;\n", (0, 3, 0));
        check(LanguageType::C, "int y; /* open\n*/\n/* a */ int x;\n", (2, 1, 0));
        // Every line of a Python docstring is code (doc strings are not comments by default).
        check(
            LanguageType::Python,
            "def f():\n    \"\"\"Doc.\n\n    more\n    \"\"\"\n",
            (5, 0, 0),
        );
    }

    #[test]
    fn whitespace_is_tokeis() {
        // Vertical tab and form feed are whitespace; a non-breaking space is not.
        check(LanguageType::C, "int x;\n\x0b\x0c \n\u{a0}\n", (2, 0, 1));
        // CRLF lines, and no newline at the end.
        check(LanguageType::C, "int x;\r\n\r\n// c\r\nint y;", (2, 1, 1));
        check(LanguageType::C, "", (0, 0, 0));
    }

    #[test]
    fn fortran_lines_are_not_trimmed() {
        // An indented `!` is code in Fortran (comments start in the first column)...
        check(LanguageType::FortranModern, "  ! indented\n! comment\nx = 1\n", (2, 1, 0));
        // ...but a line that needs the multi-line analysis is judged trimmed.
        check(LanguageType::FortranModern, "  ! \"a\"\nx = \"b\"\n", (1, 1, 0));
    }

    #[test]
    fn lines_before_the_first_important_token_count_as_in_tokeis_simple_parse() {
        // tokei counts these apart (its "simple parse", on another rayon task); one loop here.
        check(LanguageType::C, "// c\n\n  int x; // y\ns = \"a\";\n// d\n", (2, 2, 1));
        // The first important token on the first line: no simple parse at all.
        check(LanguageType::C, "s = \"a\n\";\n", (2, 0, 0));
    }

    #[test]
    fn literate_languages_count_text_as_comments() {
        check(LanguageType::Text, "some text\n\nmore \"quoted\n", (0, 2, 1));
    }

    #[test]
    fn embedding_languages_are_left_to_tokei() {
        for lang in [
            LanguageType::Markdown,
            LanguageType::Html,
            LanguageType::Vue,
            LanguageType::LinguaFranca,
            LanguageType::Jupyter,
        ] {
            assert!(for_language(lang).is_none(), "{lang}");
        }
        assert!(for_language(LanguageType::Rust).is_some());
    }

    /// A small deterministic generator (xorshift), for the random texts below.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_texts_of_every_language_count_as_tokei_counts_them() {
        // Texts made of each language's own tokens, whitespace, escapes and letters, in random
        // order: every mode and quirk meets every other.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut languages = 0;
        for (lang, _) in LanguageType::list() {
            if for_language(*lang).is_none() {
                continue;
            }
            languages += 1;
            let pairs = |p: Pairs| p.iter().flat_map(|(s, e)| [*s, *e]).collect::<Vec<_>>();
            let mut pieces: Vec<&str> = vec![
                " ",
                " ",
                "\t",
                "\n",
                "\n",
                "\n  ",
                "\r\n",
                "\\",
                "\\\\",
                "x",
                "fn f() {}",
                "\u{b}",
            ];
            pieces.extend(lang.line_comments());
            pieces.extend(pairs(lang.multi_line_comments()));
            pieces.extend(pairs(lang.nested_comments()));
            pieces.extend(pairs(lang.doc_quotes()));
            pieces.extend(pairs(lang.verbatim_quotes()));
            pieces.extend(pairs(lang.quotes()));
            pieces.extend(lang.important_syntax());
            if *lang == LanguageType::Rust {
                pieces.extend(["///", "//!", "\n///", "\n    //! ", "```", "```rust\n"]);
            }
            for _ in 0..40 {
                let len = 1 + rng.below(60);
                let text: String = (0..len).map(|_| pieces[rng.below(pieces.len())]).collect();
                assert_eq!(ours(*lang, &text), tokei(*lang, &text), "{lang} on {text:?}");
            }
        }
        assert!(languages > 200, "only {languages} languages taken");
    }
}
