//! Every request and answer of repoagent's capabilities, one section per group of
//! capabilities (each group's owner adds its own section).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Repositories (racore): repo.add, repo.list, repo.remove, repo.reindex
// ---------------------------------------------------------------------------------------------

/// `repo.add {path, name?, stream?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoAdd {
    pub path: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Answer with NDJSON progress lines (`RepoProgress`), then the answer as the last line.
    #[serde(default)]
    pub stream: bool,
}

/// `repo.remove {name, keep_index?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoName {
    pub name: String,
    /// Keep the brainml collections `code.index` filled for it (default: deleted with it).
    #[serde(default)]
    pub keep_index: bool,
}

/// `repo.reindex {name, stream?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoReindex {
    pub name: String,
    #[serde(default)]
    pub stream: bool,
}

/// One progress line of a streamed `repo.add` / `repo.reindex`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RepoProgress {
    pub files_done: usize,
    pub files_total: usize,
}

/// The answer of `repo.add` (201) and `repo.reindex`.
#[derive(Debug, Clone, Serialize)]
pub struct RepoIndexed {
    pub name: String,
    pub path: String,
    /// Files in the index.
    pub files: usize,
    /// Files left out for being larger than `max_file_bytes`.
    pub skipped_large: u64,
    /// Files left out as binary (a NUL byte in their first 8 KiB).
    pub skipped_binary: u64,
    pub indexed_ms: u64,
}

/// `repo.list`.
#[derive(Debug, Clone, Serialize)]
pub struct RepoList {
    pub repos: Vec<RepoInfo>,
}

/// One repository in `repo.list` and in the status report.
#[derive(Debug, Clone, Serialize)]
pub struct RepoInfo {
    pub name: String,
    pub path: String,
    /// `indexing`, `ready` or `error`.
    pub state: &'static str,
    /// Files in the index (0 until the first index is built).
    pub files: usize,
    /// Files per language (tokei's name; files tokei does not know are left out).
    pub languages: BTreeMap<String, usize>,
    /// When the index was last built, milliseconds since the Unix epoch.
    pub indexed_at: Option<u64>,
    pub watching: bool,
    /// Bumped on every change to the index.
    pub generation: u64,
    /// Whole walks of the repository started (the add, each reindex, a changed ignore file).
    pub builds: u64,
    /// State `ready` from an index saved before a restart or a swap, while a walk checks it
    /// against the files (changed ones are read again; the watcher's changes wait until then).
    pub verifying: bool,
    pub skipped_large: u64,
    pub skipped_binary: u64,
    /// While indexing: progress of the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<RepoProgress>,
    /// Why the last build failed (state `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `repo.remove`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct RepoRemoved {
    pub removed: String,
    /// The brainml collections `code.index` had filled for it, deleted with it.
    pub collections_deleted: Vec<String>,
    /// Collections left in brainml (`keep_index`, or brainml could not delete them), and why.
    pub collections_left: Vec<CollectionLeft>,
}

/// A collection `repo.remove` did not delete.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionLeft {
    pub collection: String,
    pub reason: String,
}

// ---------------------------------------------------------------------------------------------
// Metrics (rametrics): code.metrics
// ---------------------------------------------------------------------------------------------

/// `code.metrics {repo, path?, limit?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeMetrics {
    pub repo: String,
    /// One file (relative to the repository, `/` separators): its functions.
    #[serde(default)]
    pub path: Option<String>,
    /// Without `path`: how many files and hotspots to list (default 50, at most 10000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `code.metrics` with `path`: the file's functions in source order and its totals.
#[derive(Debug, Clone, Serialize)]
pub struct FileMetricsAnswer {
    pub path: String,
    pub language: crate::lang::Lang,
    pub functions: Vec<crate::metrics::FnMetrics>,
    /// Sums over its functions.
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub max_cyclomatic: u32,
}

/// One file in the ranking of `code.metrics` without `path`.
#[derive(Debug, Clone, Serialize)]
pub struct FileComplexity {
    pub path: String,
    pub language: crate::lang::Lang,
    pub functions: usize,
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub max_cyclomatic: u32,
}

/// Churn of one file over the commits read.
#[derive(Debug, Clone, Serialize)]
pub struct Hotspot {
    pub path: String,
    pub churn: crate::churn::FileChurn,
    /// The file's cyclomatic complexity (sum over its functions).
    pub complexity: u32,
    /// `churn.commits * complexity`.
    pub score: u64,
}

/// Sums over every file measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MetricsTotals {
    pub files: usize,
    pub functions: usize,
    pub cyclomatic: u64,
    pub cognitive: u64,
}

/// `code.metrics` without `path`: files ranked by cyclomatic complexity, and hotspots.
#[derive(Debug, Clone, Serialize)]
pub struct RepoMetricsAnswer {
    pub files: Vec<FileComplexity>,
    /// More files were measured than `limit` lists.
    pub truncated: bool,
    pub totals: MetricsTotals,
    /// Files ranked by `score`, those with a score of 0 left out.
    pub hotspots: Vec<Hotspot>,
    /// Commits of history read for the churn.
    pub churn_commits: u32,
    /// Why there is no churn (no git, not a git repository, ...): hotspots are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn_error: Option<String>,
    /// Files whose metrics could not be computed (unreadable since indexing), with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Line counts and search (rastats): code.stats, code.search
// ---------------------------------------------------------------------------------------------

/// `code.stats {repo, by?: "language" | "file", path?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeStats {
    pub repo: String,
    #[serde(default)]
    pub by: StatsBy,
    /// Only the folder or file at this path (relative to the repository's root).
    #[serde(default)]
    pub path: Option<String>,
}

/// How `code.stats` groups its counts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatsBy {
    #[default]
    Language,
    File,
}

/// The answer of `code.stats`: per language or per file (most code first), and the totals.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StatsAnswer {
    Languages { languages: Vec<crate::stats::LanguageStats>, totals: crate::stats::Totals },
    Files { files: Vec<crate::stats::FileStats>, totals: crate::stats::Totals },
}

/// `code.search {repo, pattern, regex?, case_sensitive?, smart_case?, glob?, path?, max?,
/// context?}`; the answer is [`crate::search::SearchResult`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeSearch {
    pub repo: String,
    pub pattern: String,
    /// `pattern` is a regular expression (Rust regex syntax, as ripgrep's); else a literal.
    #[serde(default)]
    pub regex: bool,
    #[serde(default = "yes")]
    pub case_sensitive: bool,
    /// Case-insensitive unless the pattern has an upper-case letter (`rg -S`).
    #[serde(default)]
    pub smart_case: bool,
    /// One glob or a list (`rg -g` syntax; `!` excludes), matched against relative paths.
    #[serde(default)]
    pub glob: Option<crate::search::Globs>,
    /// Only the folder or file at this path.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_search_max")]
    pub max: usize,
    /// Lines before and after each hit.
    #[serde(default)]
    pub context: usize,
}

fn yes() -> bool {
    true
}

fn default_search_max() -> usize {
    crate::search::DEFAULT_MAX
}

// ---------------------------------------------------------------------------------------------
// Symbols (rasymbols): code.symbols, code.outline, code.refs (symbols.rs, symbols/answer.rs)
// ---------------------------------------------------------------------------------------------

/// `code.symbols {repo, path?, kind?, name?, language?, limit?: 1000}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeSymbols {
    pub repo: String,
    /// Only the folder or file at this path (relative to the repository's root).
    #[serde(default)]
    pub path: Option<String>,
    /// One kind (`function`, `method`, `struct`, ...: [`crate::symbols::Kind`]).
    #[serde(default)]
    pub kind: Option<String>,
    /// Definitions named exactly this (case-sensitive); when there is none, those whose
    /// name holds it, case-insensitively (`name_match` says which).
    #[serde(default)]
    pub name: Option<String>,
    /// One language (`rust`, `python`, `javascript`, `typescript`, `tsx`, `go`, `java`, `c`,
    /// `cpp`, `ruby`, `csharp`).
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default = "default_symbols_limit")]
    pub limit: usize,
}

fn default_symbols_limit() -> usize {
    crate::symbols::answer::DEFAULT_SYMBOLS_LIMIT
}

/// One definition in an answer.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolHit {
    pub path: String,
    pub kind: crate::symbols::Kind,
    pub name: String,
    pub line: u32,
    pub end_line: u32,
    pub parent: Option<String>,
    pub signature: String,
    pub language: crate::lang::Lang,
}

/// How `code.symbols` matched `name`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NameMatch {
    Exact,
    Substring,
}

/// The answer of `code.symbols`: definitions in path and source order.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolsAnswer {
    pub symbols: Vec<SymbolHit>,
    /// All that matched (`symbols` holds the first `limit`).
    pub total: usize,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_match: Option<NameMatch>,
}

/// `code.outline {repo, path}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeOutline {
    pub repo: String,
    pub path: String,
}

/// A definition with those it encloses.
#[derive(Debug, Clone, Serialize)]
pub struct OutlineNode {
    pub kind: crate::symbols::Kind,
    pub name: String,
    pub line: u32,
    pub end_line: u32,
    pub signature: String,
    pub children: Vec<OutlineNode>,
}

/// The answer of `code.outline`: the file's definitions nested by what encloses them
/// (`language` null and no symbols for a file without a grammar here).
#[derive(Debug, Clone, Serialize)]
pub struct OutlineAnswer {
    pub path: String,
    pub language: Option<crate::lang::Lang>,
    pub symbols: Vec<OutlineNode>,
}

/// `code.refs {repo, name, kind?, path?, limit?: 200}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRefs {
    pub repo: String,
    /// The name, exactly (case-sensitive).
    pub name: String,
    /// Only references of this kind: `call`, `type` or `other`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only in the folder or file at this path.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_refs_limit")]
    pub limit: usize,
}

fn default_refs_limit() -> usize {
    crate::symbols::answer::DEFAULT_REFS_LIMIT
}

/// The definition that encloses a reference.
#[derive(Debug, Clone, Serialize)]
pub struct EnclosingSymbol {
    pub kind: crate::symbols::Kind,
    pub name: String,
    pub line: u32,
}

/// One reference.
#[derive(Debug, Clone, Serialize)]
pub struct RefHit {
    pub path: String,
    pub line: u32,
    pub kind: crate::symbols::RefKind,
    /// The line, as the file reads now (trimmed, at most 300 characters).
    pub text: String,
    pub symbol: Option<EnclosingSymbol>,
}

/// The answer of `code.refs`: the name's definitions and its references (path and line
/// order).
#[derive(Debug, Clone, Serialize)]
pub struct RefsAnswer {
    pub name: String,
    pub definitions: Vec<SymbolHit>,
    pub references: Vec<RefHit>,
    /// All references that matched (`references` holds the first `limit`).
    pub total: usize,
    pub truncated: bool,
}

// ---------------------------------------------------------------------------------------------
// Code RAG (rarag): code.index, code.semantic_search, code.ask (rag.rs, chunk.rs)
// ---------------------------------------------------------------------------------------------

/// `code.index {repo, collection?, stream?, docs?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeIndex {
    pub repo: String,
    /// The brainml collection (default `repo-<name>`, lower case).
    #[serde(default)]
    pub collection: Option<String>,
    /// NDJSON progress lines ([`CodeIndexProgress`]), then the answer as the last line.
    #[serde(default)]
    pub stream: bool,
    /// Keep doc comments in the chunks (default true; false only for the doc-comment
    /// retrieval benchmark).
    #[serde(default = "yes")]
    pub docs: bool,
}

/// One progress line of a streamed `code.index`.
#[derive(Debug, Clone, Serialize)]
pub struct CodeIndexProgress {
    /// `chunking`, `embedding` or `deleting`.
    pub phase: &'static str,
    pub done: usize,
    pub total: usize,
}

/// The answer of `code.index`.
#[derive(Debug, Clone, Serialize)]
pub struct CodeIndexed {
    pub repo: String,
    pub collection: String,
    /// Chunks of the repository now in the collection.
    pub chunks: usize,
    /// Chunks embedded by this call (new or changed).
    pub embedded: usize,
    /// Chunks that were already in the collection as they are.
    pub unchanged: usize,
    /// Chunks removed (their code changed or vanished).
    pub deleted: usize,
    pub files: usize,
    pub took_ms: u64,
}

/// How `code.semantic_search` and `code.ask` retrieve (brainml's query modes).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RetrieveMode {
    #[default]
    Hybrid,
    Dense,
    Bm25,
}

/// `code.semantic_search {repo, query, collection?, k?: 10, mode?: hybrid|dense|bm25,
/// with_text?: true}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticSearch {
    pub repo: String,
    pub query: String,
    /// The collection `code.index` filled (default `repo-<name>`).
    #[serde(default)]
    pub collection: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: RetrieveMode,
    #[serde(default = "yes")]
    pub with_text: bool,
}

/// One chunk found.
#[derive(Debug, Clone, Serialize)]
pub struct SemanticHit {
    pub path: String,
    pub line: u64,
    pub end_line: u64,
    pub kind: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub score: f64,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The answer of `code.semantic_search`.
#[derive(Debug, Clone, Serialize)]
pub struct SemanticAnswer {
    pub hits: Vec<SemanticHit>,
    pub mode: RetrieveMode,
    pub collection: String,
    /// When `code.index` last ran for the repository (ms since the Unix epoch): the lines
    /// are as they were then.
    pub indexed_at: u64,
}

/// `code.ask {repo, question, collection?, k?: 5, mode?, model?, max_tokens?: 256, stream?}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeAsk {
    pub repo: String,
    pub question: String,
    /// The collection `code.index` filled (default `repo-<name>`).
    #[serde(default)]
    pub collection: Option<String>,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: RetrieveMode,
    /// A chat model llmserver offers (default: its first chat model).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub stream: bool,
}

/// A chunk given to the chat model, as the prompt names it (`path:line`).
#[derive(Debug, Clone, Serialize)]
pub struct CodeCitation {
    pub n: usize,
    /// `path:line`, as the answer is asked to cite it.
    pub cite: String,
    pub path: String,
    pub line: u64,
    pub end_line: u64,
    pub kind: String,
    pub name: String,
    pub score: f64,
}

/// The answer of `code.ask` (streamed: `event: citations` {citations, model}, `data:
/// {"delta"}` per token, `event: done` {answer, took_ms}).
#[derive(Debug, Clone, Serialize)]
pub struct CodeAskAnswer {
    pub answer: String,
    pub citations: Vec<CodeCitation>,
    pub model: String,
    pub took_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Repository map (ramap): code.map
// ---------------------------------------------------------------------------------------------

/// `code.map {repo, focus?, tokens?}`; the answer is [`crate::map::MapAnswer`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeMap {
    pub repo: String,
    /// Files (relative paths) and names of definitions the map is about.
    #[serde(default)]
    pub focus: Vec<String>,
    /// The budget in estimated tokens (16 to 65536).
    #[serde(default = "default_map_tokens")]
    pub tokens: usize,
}

fn default_map_tokens() -> usize {
    crate::map::DEFAULT_TOKENS
}
