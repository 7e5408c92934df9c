//! `code.map`: the repository's most important definitions fitted to a token budget, ranked as
//! aider's repo map ranks them (aider/repomap.py, `get_ranked_tags`), cached per repository and
//! updated file by file.
//!
//! The graph: one node per file; for every name `n` defined somewhere and referenced somewhere,
//! an edge from each file referencing `n` to each file defining it, weighted
//! `mul(n) * sqrt(references of n in that file)`, where `mul(n)` is aider's: x10 for a focus
//! name, x10 for a snake_case / kebab-case / camelCase name of 8 characters or more, x0.1 for a
//! name starting with `_`, x0.1 when more than 5 files define it; an edge from a focus file
//! weighs x50. A name defined but referenced nowhere gives each of its files a self-edge of 0.1.
//! PageRank (damping 0.85, personalised on the focus files and the files defining a focus name,
//! uniform without focus; dangling files jump as the personalisation says; at most 100
//! iterations, stopping when the L1 change is below N x 1e-6, as networkx) ranks the files; each
//! file's rank then flows along its out-edges into (defining file, name) pairs: the ranked
//! definitions. The focus files' and focus names' definitions come first (aider leaves chat
//! files out of its map since their text is in the chat; here the map is the answer).
//!
//! Budget: the largest prefix of the ranked definitions whose rendering fits `tokens`, found by
//! binary search (rendering more definitions never renders fewer tokens). Tokens are an
//! estimate (no tokenizer of a chat model is in this plugin): see [`estimate_tokens`].
//!
//! Rendering (aider's tree view without reading the files again): each file's path, then the
//! signature lines of its chosen definitions and of the definitions enclosing them (an impl, a
//! class), `│` and four spaces per level of nesting, `⋮` for the lines left out.
//!
//! Incremental: the cache keeps each file's contribution (the names it defines and how often it
//! references each name) and, per name, its defining and referencing files. A request compares
//! the index's generation with the cache's; when it moved, only the files whose symbols changed
//! (a new `Arc` in the index entry: the watcher re-extracted them) are taken out and put back.
//! The ranking is computed per focus and kept until the graph changes; answers are kept per
//! (focus, tokens) the same way (`cached: true`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bkg_abi::Error;
use serde::Serialize;

use crate::api::CodeMap;
use crate::index::RepoIndex;
use crate::repos::{poisoned, RepoEntry, Repos};
use crate::symbols::{FileSymbols, Kind};

pub const DEFAULT_TOKENS: usize = 1024;
pub const MIN_TOKENS: usize = 16;
pub const MAX_TOKENS: usize = 65_536;
pub const MAX_FOCUS: usize = 256;

const DAMPING: f64 = 0.85;
const MAX_ITER: usize = 100;
const TOL: f64 = 1e-6;
/// Rankings and answers kept per repository until its graph changes.
const KEEP: usize = 16;

/// The kinds that are definitions in the graph (aider's tags: functions, methods, types,
/// traits/interfaces, modules, macros, constants). Fields, variants, properties and variables
/// are left out (they would drown the map), and so are impls (`impl Foo` names Foo, defined
/// elsewhere); an impl or class still shows as the context of the methods it holds.
pub fn is_graph_kind(kind: Kind) -> bool {
    !matches!(kind, Kind::Field | Kind::Variant | Kind::Property | Kind::Variable | Kind::Impl)
}

/// Whether a definition of this file is one of the graph: a graph kind, and not an associated
/// type or constant of an impl (`type Value = Value;` in `impl Visitor for ValueVisitor` binds a
/// trait's item; counting it would make `Value` "defined in many files" and weigh it down).
fn in_graph(symbols: &FileSymbols, d: &crate::symbols::Symbol) -> bool {
    if !is_graph_kind(d.kind) {
        return false;
    }
    if matches!(d.kind, Kind::Type | Kind::Constant) {
        let parent = d.parent_index.and_then(|p| symbols.defs.get(p as usize));
        if parent.is_some_and(|p| p.kind == Kind::Impl) {
            return false;
        }
    }
    true
}

/// The line a definition shows in the map: its signature (a macro's name only: its signature
/// holds its first rules; a constant's or static's without its value), at most 160
/// characters.
fn display(d: &crate::symbols::Symbol) -> String {
    if d.signature.is_empty() {
        return d.name.clone();
    }
    if d.kind == Kind::Macro {
        if let Some(at) = d.signature.find(&d.name) {
            return d.signature[..at + d.name.len()].to_string();
        }
    }
    // A constant's value (a table, often) is left out.
    if matches!(d.kind, Kind::Constant | Kind::Static) {
        if let Some(at) = d.signature.find(" = ") {
            return d.signature[..at].to_string();
        }
    }
    match d.signature.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &d.signature[..at]),
        None => d.signature.clone(),
    }
}

/// The token estimate: each run of letters, digits and `_` counts one token per 4 characters
/// (rounded up), each other character that is not a space or tab one token (a newline too).
/// It is not a real tokenizer's count; it tends to count more than a BPE tokenizer on code
/// (which merges `->`, `::` or ` (&` into one token), so a map fits a model's budget.
pub fn estimate_tokens(text: &str) -> usize {
    let mut n = 0;
    let mut run = 0usize;
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            run += 1;
            continue;
        }
        n += run.div_ceil(4);
        run = 0;
        if c != ' ' && c != '\t' {
            n += 1;
        }
    }
    n + run.div_ceil(4)
}

/// aider's weight of a name before focus and the number of files defining it.
fn name_weight(name: &str) -> f64 {
    let alpha = name.chars().any(char::is_alphabetic);
    let snake = name.contains('_') && alpha;
    let kebab = name.contains('-') && alpha;
    let camel = name.chars().any(char::is_uppercase) && name.chars().any(char::is_lowercase);
    let mut mul = 1.0;
    if (snake || kebab || camel) && name.chars().count() >= 8 {
        mul *= 10.0;
    }
    if name.starts_with('_') {
        mul *= 0.1;
    }
    mul
}

type FileId = u32;
type NameId = u32;

/// One file's contribution to the graph.
struct Slot {
    path: String,
    symbols: Arc<FileSymbols>,
    /// The distinct names it defines (graph kinds).
    defs: Vec<NameId>,
    /// The names it references, with how many references.
    refs: Vec<(NameId, u32)>,
}

struct Name {
    name: String,
    weight: f64,
    /// Sorted.
    definers: Vec<FileId>,
    /// Sorted by file.
    refs: Vec<(FileId, u32)>,
}

/// The graph, kept per file.
#[derive(Default)]
pub struct Graph {
    slots: Vec<Option<Slot>>,
    free: Vec<FileId>,
    by_path: HashMap<String, FileId>,
    names: Vec<Name>,
    by_name: HashMap<String, NameId>,
}

fn sorted_insert<T: Ord + Copy>(v: &mut Vec<T>, x: T) {
    if let Err(at) = v.binary_search(&x) {
        v.insert(at, x);
    }
}

impl Graph {
    fn name_id(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.names.len() as NameId;
        self.names.push(Name {
            name: name.to_string(),
            weight: name_weight(name),
            definers: Vec::new(),
            refs: Vec::new(),
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Put a file in (it must not be in).
    fn add(&mut self, path: &str, symbols: Arc<FileSymbols>) {
        let mut defs: Vec<NameId> = Vec::new();
        for d in symbols.defs.iter().filter(|d| in_graph(&symbols, d)) {
            let id = self.name_id(&d.name);
            sorted_insert(&mut defs, id);
        }
        let mut counts: BTreeMap<NameId, u32> = BTreeMap::new();
        for r in &symbols.refs {
            let id = self.name_id(&r.name);
            *counts.entry(id).or_insert(0) += 1;
        }
        let refs: Vec<(NameId, u32)> = counts.into_iter().collect();
        let fid = match self.free.pop() {
            Some(f) => f,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as FileId
            }
        };
        for &n in &defs {
            sorted_insert(&mut self.names[n as usize].definers, fid);
        }
        for &(n, c) in &refs {
            let v = &mut self.names[n as usize].refs;
            let at = v.partition_point(|&(f, _)| f < fid);
            v.insert(at, (fid, c));
        }
        self.by_path.insert(path.to_string(), fid);
        self.slots[fid as usize] = Some(Slot { path: path.to_string(), symbols, defs, refs });
    }

    /// Take a file out.
    fn remove(&mut self, path: &str) {
        let Some(fid) = self.by_path.remove(path) else { return };
        let Some(slot) = self.slots[fid as usize].take() else { return };
        for n in slot.defs {
            let v = &mut self.names[n as usize].definers;
            if let Ok(at) = v.binary_search(&fid) {
                v.remove(at);
            }
        }
        for (n, _) in slot.refs {
            let v = &mut self.names[n as usize].refs;
            if let Ok(at) = v.binary_search_by_key(&fid, |&(f, _)| f) {
                v.remove(at);
            }
        }
        self.free.push(fid);
    }

    /// Bring the graph up to date with `index`: the files whose symbols changed (or that came
    /// or went) are taken out and put back. Answers how many.
    pub fn sync(&mut self, index: &RepoIndex) -> usize {
        let mut updated = 0;
        let gone: Vec<String> =
            self.by_path.keys().filter(|p| !index.files.contains_key(*p)).cloned().collect();
        for p in gone {
            self.remove(&p);
            updated += 1;
        }
        for (path, entry) in &index.files {
            if let Some(&fid) = self.by_path.get(path) {
                let same = self.slots[fid as usize]
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(&s.symbols, &entry.symbols));
                if same {
                    continue;
                }
                self.remove(path);
            }
            self.add(path, entry.symbols.clone());
            updated += 1;
        }
        updated
    }

    pub fn files(&self) -> usize {
        self.by_path.len()
    }

    /// The `n` best ranked definitions (for benchmarks and inspection).
    pub fn top(&self, focus: &[String], n: usize) -> Result<Vec<RankedName>, Error> {
        let ranking = self.rank(&self.resolve_focus(focus)?);
        Ok(ranking
            .units
            .iter()
            .take(n)
            .map(|u| {
                let name = &self.names[u.name as usize];
                RankedName {
                    path: self.slot(u.file).path.clone(),
                    name: name.name.clone(),
                    rank: u.rank,
                    definers: name.definers.len(),
                    referencers: name.refs.len(),
                }
            })
            .collect())
    }

    /// A map of the graph as it is (no cache; for benchmarks).
    pub fn map(&self, focus: &[String], tokens: usize) -> Result<Fitted, Error> {
        let ranking = self.rank(&self.resolve_focus(focus)?);
        let (text, _, tokens, included) = self.fit(&ranking, tokens);
        Ok(Fitted { text, tokens, included, ranked: ranking.total, iterations: ranking.iterations })
    }

    fn slot(&self, f: FileId) -> &Slot {
        self.slots[f as usize].as_ref().expect("a live file")
    }
}

/// One ranked definition, as [`Graph::top`] lists it.
#[derive(Clone, Debug, Serialize)]
pub struct RankedName {
    pub path: String,
    pub name: String,
    pub rank: f64,
    /// Files defining the name.
    pub definers: usize,
    /// Files referencing it.
    pub referencers: usize,
}

/// A map made by [`Graph::map`]: its text, estimated tokens, the ranked definitions it holds
/// and in all, and the PageRank iterations.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub text: String,
    pub tokens: usize,
    pub included: usize,
    pub ranked: usize,
    pub iterations: usize,
}

/// What a request focuses on, resolved against the graph.
#[derive(Default)]
struct Focus {
    files: HashSet<FileId>,
    names: HashSet<NameId>,
}

/// One ranked definition: all definitions of `name` in `file`.
#[derive(Clone, Copy, Debug)]
struct Unit {
    file: FileId,
    name: NameId,
    rank: f64,
}

/// The ranked definitions for one focus.
pub struct Ranking {
    /// The best ranked, best first (at most MAX_TOKENS of them).
    units: Vec<Unit>,
    /// How many definitions were ranked.
    total: usize,
    pub iterations: usize,
}

impl Graph {
    fn resolve_focus(&self, focus: &[String]) -> Result<Focus, Error> {
        let mut out = Focus::default();
        for f in focus {
            let f = f.trim();
            let path = f.trim_start_matches("./");
            if let Some(&fid) = self.by_path.get(path) {
                out.files.insert(fid);
            } else if let Some(&n) =
                self.by_name.get(f).filter(|&&n| !self.names[n as usize].definers.is_empty())
            {
                out.names.insert(n);
            } else {
                return Err(Error::bad_request(format!(
                    "focus {f:?} is neither a file of the repository (a path relative to its \
                     root, '/' separators) nor the name of a definition in it"
                )));
            }
        }
        Ok(out)
    }

    /// The weight multiplier of a name (aider's rules, with this focus).
    fn mul(&self, n: &Name, id: NameId, focus: &Focus) -> f64 {
        let mut m = n.weight;
        if focus.names.contains(&id) {
            m *= 10.0;
        }
        if n.definers.len() > 5 {
            m *= 0.1;
        }
        m
    }

    /// Personalized PageRank over the files and the rank of every (file, name) definition.
    fn rank(&self, focus: &Focus) -> Ranking {
        let size = self.slots.len();
        let from = |f: FileId| if focus.files.contains(&f) { 50.0 } else { 1.0 };
        let mut out_w = vec![0.0f64; size];
        let mut node = vec![false; size];
        let mut muls = vec![0.0f64; self.names.len()];
        for (id, n) in self.names.iter().enumerate() {
            if n.definers.is_empty() {
                continue;
            }
            if n.refs.is_empty() {
                for &d in &n.definers {
                    out_w[d as usize] += 0.1;
                    node[d as usize] = true;
                }
                continue;
            }
            let m = self.mul(n, id as NameId, focus);
            muls[id] = m;
            let k = n.definers.len() as f64;
            for &(r, c) in &n.refs {
                out_w[r as usize] += m * (c as f64).sqrt() * from(r) * k;
                node[r as usize] = true;
            }
            for &d in &n.definers {
                node[d as usize] = true;
            }
        }
        let nodes: Vec<usize> = (0..size).filter(|&f| node[f]).collect();
        let count = nodes.len();
        if count == 0 {
            return Ranking { units: Vec::new(), total: 0, iterations: 0 };
        }
        // Personalization: the focus files and the files defining focus names.
        let mut p = vec![0.0f64; size];
        let mut chosen: BTreeSet<usize> = focus.files.iter().map(|&f| f as usize).collect();
        for &n in &focus.names {
            chosen.extend(self.names[n as usize].definers.iter().map(|&f| f as usize));
        }
        chosen.retain(|&f| node[f]);
        if chosen.is_empty() {
            for &f in &nodes {
                p[f] = 1.0 / count as f64;
            }
        } else {
            for &f in &chosen {
                p[f] = 1.0 / chosen.len() as f64;
            }
        }
        // Power iteration, as networkx's pagerank (x starts uniform).
        let mut x = vec![0.0f64; size];
        for &f in &nodes {
            x[f] = 1.0 / count as f64;
        }
        let mut next = vec![0.0f64; size];
        let mut iterations = 0;
        // What flows into each definer of a name (the same for each of them).
        let inflow = |x: &[f64], id: usize, n: &Name| -> f64 {
            let mut s = 0.0;
            for &(r, c) in &n.refs {
                let w = out_w[r as usize];
                if w > 0.0 {
                    s += x[r as usize] * (c as f64).sqrt() * from(r) / w;
                }
            }
            s * muls[id]
        };
        for _ in 0..MAX_ITER {
            iterations += 1;
            let dangling: f64 = nodes.iter().filter(|&&f| out_w[f] == 0.0).map(|&f| x[f]).sum();
            for &f in &nodes {
                next[f] = (1.0 - DAMPING) * p[f] + DAMPING * dangling * p[f];
            }
            for (id, n) in self.names.iter().enumerate() {
                if n.definers.is_empty() {
                    continue;
                }
                if n.refs.is_empty() {
                    for &d in &n.definers {
                        let d = d as usize;
                        next[d] += DAMPING * x[d] * 0.1 / out_w[d];
                    }
                    continue;
                }
                let s = DAMPING * inflow(&x, id, n);
                for &d in &n.definers {
                    next[d as usize] += s;
                }
            }
            let err: f64 = nodes.iter().map(|&f| (next[f] - x[f]).abs()).sum();
            std::mem::swap(&mut x, &mut next);
            if err < count as f64 * TOL {
                break;
            }
        }
        // Each file's rank flows along its out-edges into (definer, name): for a referenced
        // name the same amount into each of its definers (computed once per name).
        let mut units = Vec::new();
        for (id, n) in self.names.iter().enumerate() {
            if n.definers.is_empty() {
                continue;
            }
            let flow = if n.refs.is_empty() { 0.0 } else { inflow(&x, id, n) };
            for &d in &n.definers {
                let rank =
                    if n.refs.is_empty() { x[d as usize] * 0.1 / out_w[d as usize] } else { flow };
                units.push(Unit { file: d, name: id as NameId, rank });
            }
        }
        let total = units.len();
        let first = |u: &Unit| focus.files.contains(&u.file) || focus.names.contains(&u.name);
        let order = |a: &Unit, b: &Unit| {
            first(b)
                .cmp(&first(a))
                .then(b.rank.total_cmp(&a.rank))
                .then_with(|| self.slot(a.file).path.cmp(&self.slot(b.file).path))
                .then_with(|| {
                    self.names[a.name as usize].name.cmp(&self.names[b.name as usize].name)
                })
        };
        // Only the best MAX_TOKENS can be in a map (each takes a line, at least 2 tokens).
        if units.len() > MAX_TOKENS {
            units.select_nth_unstable_by(MAX_TOKENS, order);
            units.truncate(MAX_TOKENS);
        }
        units.sort_by(order);
        Ranking { units, total, iterations }
    }

    /// The map of the first `k` ranked definitions: its text and its files.
    fn render(&self, units: &[Unit]) -> (String, Vec<MapFile>) {
        // The names chosen per file, then one pass over each file's definitions.
        let mut wanted: BTreeMap<&str, (FileId, HashSet<&str>)> = BTreeMap::new();
        for u in units {
            let slot = self.slot(u.file);
            let e = wanted.entry(slot.path.as_str()).or_insert_with(|| (u.file, HashSet::new()));
            e.1.insert(self.names[u.name as usize].name.as_str());
        }
        let mut by_file: BTreeMap<&str, (FileId, BTreeSet<usize>, BTreeSet<usize>)> =
            BTreeMap::new();
        for (path, (fid, names)) in wanted {
            let symbols = &self.slot(fid).symbols;
            let chosen: BTreeSet<usize> = symbols
                .defs
                .iter()
                .enumerate()
                .filter(|(_, d)| names.contains(d.name.as_str()) && in_graph(symbols, d))
                .map(|(i, _)| i)
                .collect();
            by_file.insert(path, (fid, chosen, BTreeSet::new()));
        }
        let mut text = String::new();
        let mut files = Vec::new();
        for (path, (fid, chosen, mut shown)) in by_file {
            let defs = &self.slot(fid).symbols.defs;
            let depth = |mut i: usize| {
                let mut d = 0;
                while let Some(p) = defs[i].parent_index {
                    let p = p as usize;
                    if p >= defs.len() || p == i || d > 64 {
                        break;
                    }
                    d += 1;
                    i = p;
                }
                d
            };
            for &i in &chosen {
                shown.insert(i);
                let mut j = i;
                let mut hops = 0;
                while let Some(p) = defs[j].parent_index {
                    let p = p as usize;
                    if p >= defs.len() || p == j || hops > 64 {
                        break;
                    }
                    shown.insert(p);
                    j = p;
                    hops += 1;
                }
            }
            let mut order: Vec<usize> = shown.into_iter().collect();
            order.sort_by_key(|&i| (defs[i].line, i));
            order.dedup_by_key(|i| defs[*i].line);
            text.push_str(path);
            text.push_str(":\n");
            let mut last: Option<u32> = None;
            for &i in &order {
                let d = &defs[i];
                let gap = match last {
                    None => d.line > 1,
                    Some(l) => d.line > l + 1,
                };
                if gap {
                    text.push_str("⋮\n");
                }
                text.push('│');
                for _ in 0..depth(i) {
                    text.push_str("    ");
                }
                text.push_str(&display(d));
                text.push('\n');
                last = Some(d.line);
            }
            text.push_str("⋮\n");
            files.push(MapFile {
                path: path.to_string(),
                symbols: chosen
                    .iter()
                    .map(|&i| MapSymbol {
                        name: defs[i].name.clone(),
                        kind: defs[i].kind,
                        line: defs[i].line,
                        end_line: defs[i].end_line,
                        parent: defs[i].parent.clone(),
                    })
                    .collect(),
            });
        }
        (text, files)
    }

    /// Fit the ranking to `tokens`: the largest prefix whose map fits (binary search).
    fn fit(&self, ranking: &Ranking, tokens: usize) -> (String, Vec<MapFile>, usize, usize) {
        let (mut lo, mut hi) = (0usize, ranking.units.len().min(tokens));
        let mut best = (String::new(), Vec::new(), 0usize, 0usize);
        // Invariant: the prefix of `lo` fits (0 always does: an empty map).
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let (text, files) = self.render(&ranking.units[..mid]);
            let t = estimate_tokens(&text);
            if t <= tokens {
                lo = mid;
                best = (text, files, t, mid);
            } else {
                hi = mid - 1;
            }
        }
        if best.3 != lo {
            let (text, files) = self.render(&ranking.units[..lo]);
            let t = estimate_tokens(&text);
            best = (text, files, t, lo);
        }
        best
    }
}

/// One file of the map with the definitions chosen in it (not those shown as context).
#[derive(Clone, Debug, Serialize)]
pub struct MapFile {
    pub path: String,
    pub symbols: Vec<MapSymbol>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapSymbol {
    pub name: String,
    pub kind: Kind,
    pub line: u32,
    pub end_line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `code.map`'s answer.
#[derive(Clone, Debug, Serialize)]
pub struct MapAnswer {
    /// The map's text.
    pub map: String,
    /// Its estimated tokens (<= the budget asked for).
    pub tokens: usize,
    /// Files in path order with their chosen definitions.
    pub files: Vec<MapFile>,
    /// How many ranked definitions ((file, name) pairs) the graph gave.
    pub ranked: usize,
    /// How many of them (the best ranked) the map holds.
    pub included: usize,
    /// Served from the cache: neither the graph nor the question changed since it was made.
    pub cached: bool,
    /// Files whose contributions to the graph were recomputed for this answer (0 when the
    /// graph was up to date; every file on the first map of a repository).
    pub updated: usize,
    /// The index generation the map was made from.
    pub generation: u64,
    /// Files in the graph.
    pub graph_files: usize,
}

/// One repository's cache.
struct RepoMap {
    entry: Weak<RepoEntry>,
    generation: u64,
    graph: Graph,
    rankings: Vec<(Vec<String>, Arc<Ranking>)>,
    answers: Vec<((Vec<String>, usize), MapAnswer)>,
}

/// Every repository's map cache.
#[derive(Default)]
pub struct Maps {
    repos: Mutex<HashMap<String, Arc<Mutex<RepoMap>>>>,
}

impl Maps {
    /// Drop every cache (at stop).
    pub fn clear(&self) {
        if let Ok(mut m) = self.repos.lock() {
            m.clear();
        }
    }

    fn slot(
        &self,
        repos: &Repos,
        name: &str,
        entry: &Arc<RepoEntry>,
    ) -> Result<Arc<Mutex<RepoMap>>, Error> {
        let mut all = self.repos.lock().map_err(|_| poisoned())?;
        // Forget repositories removed since.
        let live: HashSet<String> = repos.all().iter().map(|e| e.name.clone()).collect();
        all.retain(|k, _| live.contains(k));
        let fresh = || {
            Arc::new(Mutex::new(RepoMap {
                entry: Arc::downgrade(entry),
                generation: 0,
                graph: Graph::default(),
                rankings: Vec::new(),
                answers: Vec::new(),
            }))
        };
        let m = all.entry(name.to_string()).or_insert_with(fresh);
        let same = m.lock().map_err(|_| poisoned())?.entry.ptr_eq(&Arc::downgrade(entry));
        if !same {
            *m = fresh();
        }
        Ok(m.clone())
    }
}

/// `code.map`.
pub fn answer(maps: &Maps, repos: &Repos, req: &CodeMap) -> Result<MapAnswer, Error> {
    if !(MIN_TOKENS..=MAX_TOKENS).contains(&req.tokens) {
        return Err(Error::bad_request(format!(
            "tokens {}: use {MIN_TOKENS} to {MAX_TOKENS}",
            req.tokens
        )));
    }
    if req.focus.len() > MAX_FOCUS {
        return Err(Error::bad_request(format!(
            "focus has {} entries: at most {MAX_FOCUS}",
            req.focus.len()
        )));
    }
    if req.focus.iter().any(|f| f.trim().is_empty()) {
        return Err(Error::bad_request("focus: an entry is empty (give paths or names)"));
    }
    let entry = repos.get(&req.repo)?;
    repos.with_index(&req.repo, |index| {
        let cache = maps.slot(repos, &req.repo, &entry)?;
        let mut cache = cache.lock().map_err(|_| poisoned())?;
        let mut updated = 0;
        if cache.generation != index.generation {
            updated = cache.graph.sync(index);
            cache.generation = index.generation;
            cache.rankings.clear();
            cache.answers.clear();
        }
        let mut focus: Vec<String> = req.focus.iter().map(|f| f.trim().to_string()).collect();
        focus.sort();
        focus.dedup();
        let key = (focus.clone(), req.tokens);
        if let Some((_, a)) = cache.answers.iter().find(|(k, _)| *k == key) {
            let mut a = a.clone();
            a.cached = true;
            a.updated = updated;
            return Ok(a);
        }
        let ranking = match cache.rankings.iter().find(|(k, _)| *k == focus) {
            Some((_, r)) => r.clone(),
            None => {
                let resolved = cache.graph.resolve_focus(&focus)?;
                let r = Arc::new(cache.graph.rank(&resolved));
                if cache.rankings.len() >= KEEP {
                    cache.rankings.remove(0);
                }
                cache.rankings.push((focus.clone(), r.clone()));
                r
            }
        };
        let (map, files, tokens, included) = cache.graph.fit(&ranking, req.tokens);
        let a = MapAnswer {
            map,
            tokens,
            files,
            ranked: ranking.total,
            included,
            cached: false,
            updated,
            generation: index.generation,
            graph_files: cache.graph.files(),
        };
        if cache.answers.len() >= KEEP {
            cache.answers.remove(0);
        }
        cache.answers.push((key, a.clone()));
        Ok(a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::Lang;
    use crate::symbols::Extractor;

    fn syms(ex: &Extractor, lang: Lang, src: &str) -> Arc<FileSymbols> {
        Arc::new(ex.extract(lang, src.as_bytes()).unwrap())
    }

    /// aider's algorithm with every edge of the multigraph spelled out (as networkx sees it):
    /// the ranks of (file, name).
    fn reference_ranks(
        files: &[(&str, Arc<FileSymbols>)],
        focus: &[&str],
    ) -> Vec<(String, String, f64)> {
        let mut defines: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        let mut references: BTreeMap<String, BTreeMap<usize, u32>> = BTreeMap::new();
        for (i, (_, s)) in files.iter().enumerate() {
            for d in s.defs.iter().filter(|d| in_graph(s, d)) {
                defines.entry(d.name.clone()).or_default().insert(i);
            }
            for r in &s.refs {
                *references.entry(r.name.clone()).or_default().entry(i).or_insert(0) += 1;
            }
        }
        let focus_files: BTreeSet<usize> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| focus.contains(&f.0))
            .map(|(i, _)| i)
            .collect();
        let focus_names: BTreeSet<&str> =
            focus.iter().copied().filter(|f| defines.contains_key(*f)).collect();
        // (src, dst, name, weight)
        let mut edges: Vec<(usize, usize, String, f64)> = Vec::new();
        for (name, definers) in &defines {
            match references.get(name) {
                None => {
                    for &d in definers {
                        edges.push((d, d, name.clone(), 0.1));
                    }
                }
                Some(refs) => {
                    let mut mul = name_weight(name);
                    if focus_names.contains(name.as_str()) {
                        mul *= 10.0;
                    }
                    if definers.len() > 5 {
                        mul *= 0.1;
                    }
                    for (&r, &c) in refs {
                        for &d in definers {
                            let m = if focus_files.contains(&r) { mul * 50.0 } else { mul };
                            edges.push((r, d, name.clone(), m * (c as f64).sqrt()));
                        }
                    }
                }
            }
        }
        let nodes: BTreeSet<usize> = edges.iter().flat_map(|e| [e.0, e.1]).collect();
        let n = files.len();
        let mut chosen: BTreeSet<usize> = focus_files.clone();
        for name in &focus_names {
            chosen.extend(defines[*name].iter().copied());
        }
        chosen.retain(|f| nodes.contains(f));
        let mut p = vec![0.0; n];
        let pick: Vec<usize> = if chosen.is_empty() {
            nodes.iter().copied().collect()
        } else {
            chosen.into_iter().collect()
        };
        for &f in &pick {
            p[f] = 1.0 / pick.len() as f64;
        }
        let mut out = vec![0.0; n];
        for e in &edges {
            out[e.0] += e.3;
        }
        let mut x = vec![0.0; n];
        for &f in &nodes {
            x[f] = 1.0 / nodes.len() as f64;
        }
        for _ in 0..MAX_ITER {
            let dangling: f64 = nodes.iter().filter(|&&f| out[f] == 0.0).map(|&f| x[f]).sum();
            let mut next = vec![0.0; n];
            for &f in &nodes {
                next[f] = (1.0 - DAMPING) * p[f] + DAMPING * dangling * p[f];
            }
            for e in &edges {
                next[e.1] += DAMPING * x[e.0] * e.3 / out[e.0];
            }
            let err: f64 = nodes.iter().map(|&f| (next[f] - x[f]).abs()).sum();
            x = next;
            if err < nodes.len() as f64 * TOL {
                break;
            }
        }
        let mut ranks: BTreeMap<(usize, String), f64> = BTreeMap::new();
        for e in &edges {
            *ranks.entry((e.1, e.2.clone())).or_insert(0.0) += x[e.0] * e.3 / out[e.0];
        }
        let mut v: Vec<_> =
            ranks.into_iter().map(|((f, name), r)| (files[f].0.to_string(), name, r)).collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    fn ranks_of(g: &Graph, focus: &[&str]) -> Vec<(String, String, f64)> {
        let focus: Vec<String> = focus.iter().map(|s| s.to_string()).collect();
        let r = g.rank(&g.resolve_focus(&focus).unwrap());
        let mut v: Vec<_> = r
            .units
            .iter()
            .map(|u| (g.slot(u.file).path.clone(), g.names[u.name as usize].name.clone(), u.rank))
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    fn assert_close(got: &[(String, String, f64)], want: &[(String, String, f64)]) {
        assert_eq!(got.len(), want.len(), "got {got:?}\nwant {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((&g.0, &g.1), (&w.0, &w.1));
            assert!((g.2 - w.2).abs() < 1e-9, "{g:?} vs {w:?}");
        }
    }

    fn sample(ex: &Extractor) -> Vec<(&'static str, Arc<FileSymbols>)> {
        vec![
            (
                "src/value.rs",
                syms(ex, Lang::Rust, "pub enum Value { Null, Bool(bool) }\nimpl Value {\n    pub fn is_null(&self) -> bool { matches!(self, Value::Null) }\n}\nfn _private_helper() {}\n"),
            ),
            (
                "src/de.rs",
                syms(ex, Lang::Rust, "use crate::value::Value;\npub fn from_str(s: &str) -> Value { parse_value(s) }\nfn parse_value(s: &str) -> Value { let v: Value = Value::Null; v }\n"),
            ),
            (
                "src/ser.rs",
                syms(ex, Lang::Rust, "pub fn to_string(v: &Value) -> String { if v.is_null() { String::new() } else { format_value(v) } }\nfn format_value(v: &Value) -> String { String::new() }\n"),
            ),
            (
                "src/lib.rs",
                syms(ex, Lang::Rust, "pub fn roundtrip(s: &str) -> String { to_string(&from_str(s)) }\n"),
            ),
            ("src/empty.rs", syms(ex, Lang::Rust, "// nothing\n")),
        ]
    }

    #[test]
    fn ranks_equal_aiders_multigraph_with_and_without_focus() {
        let ex = Extractor::new();
        let files = sample(&ex);
        let mut g = Graph::default();
        for (p, s) in &files {
            g.add(p, s.clone());
        }
        for focus in [&[][..], &["src/ser.rs"][..], &["from_str"][..], &["src/lib.rs", "Value"][..]]
        {
            let want = reference_ranks(&files, focus);
            assert!(!want.is_empty());
            assert_close(&ranks_of(&g, focus), &want);
        }
        // value.rs is what everything references: its definitions rank first (all its rank
        // flows along its only out-edge, the self-edge of its unreferenced helper, as in aider).
        let r = g.rank(&Focus::default());
        assert_eq!(g.slot(r.units[0].file).path, "src/value.rs");
        let value = r.units.iter().position(|u| g.names[u.name as usize].name == "Value");
        let from_str = r.units.iter().position(|u| g.names[u.name as usize].name == "from_str");
        assert!(value < from_str, "Value before from_str");
    }

    #[test]
    fn a_graph_updated_file_by_file_ranks_as_one_built_from_scratch() {
        let ex = Extractor::new();
        let old = sample(&ex);
        let mut g = Graph::default();
        for (p, s) in &old {
            g.add(p, s.clone());
        }
        // ser.rs changes, lib.rs goes, a new file comes; the others keep their Arcs.
        let mut files = old.clone();
        files[2].1 =
            syms(&ex, Lang::Rust, "pub fn to_string(v: &Value) -> String { helper_fn(v) }\n");
        files.remove(3);
        let more = "pub fn helper_fn(v: &Value) -> String { to_string(v) }\n";
        files.push(("src/more.rs", syms(&ex, Lang::Rust, more)));
        let mut index = RepoIndex {
            name: "t".into(),
            root: "/nonexistent".into(),
            files: BTreeMap::new(),
            generation: 2,
            dirs: BTreeSet::new(),
            skipped_large: BTreeSet::new(),
            skipped_binary: BTreeSet::new(),
            indexed_at: 0,
            indexed_ms: 0,
        };
        for (p, s) in &files {
            let entry = crate::index::FileEntry {
                lang: Some(Lang::Rust),
                tokei: None,
                bytes: 0,
                mtime_ns: 0,
                inode: 0,
                counts: None,
                symbols: s.clone(),
                metrics: None,
            };
            index.files.insert(p.to_string(), entry);
        }
        assert_eq!(g.sync(&index), 3, "ser.rs changed, lib.rs gone, more.rs new");
        assert_eq!(g.sync(&index), 0, "nothing changed since");
        let mut fresh = Graph::default();
        for (p, s) in &files {
            fresh.add(p, s.clone());
        }
        for focus in [&[][..], &["src/more.rs"][..]] {
            assert_close(&ranks_of(&g, focus), &ranks_of(&fresh, focus));
            assert_close(&ranks_of(&g, focus), &reference_ranks(&files, focus));
        }
    }

    #[test]
    fn the_map_fits_its_budget_and_a_larger_budget_holds_a_superset() {
        let ex = Extractor::new();
        let mut g = Graph::default();
        for (p, s) in sample(&ex) {
            g.add(p, s);
        }
        let r = g.rank(&Focus::default());
        let mut last: Vec<(String, String, u32)> = Vec::new();
        for budget in [16, 24, 40, 60, 100, 400] {
            let (text, files, tokens, included) = g.fit(&r, budget);
            assert!(tokens <= budget && tokens == estimate_tokens(&text), "{budget}: {tokens}");
            let now: Vec<(String, String, u32)> = files
                .iter()
                .flat_map(|f| f.symbols.iter().map(|s| (f.path.clone(), s.name.clone(), s.line)))
                .collect();
            assert!(last.iter().all(|x| now.contains(x)), "{budget}: {last:?} not in {now:?}");
            assert!(included <= r.units.len());
            last = now;
        }
        let (text, _, _, included) = g.fit(&r, 400);
        assert_eq!(included, r.units.len(), "everything fits in 400: {text}");
        // Methods are shown under their impl, indented; gaps marked.
        assert!(
            text.contains(
                "src/value.rs:\n│pub enum Value\n│impl Value\n│    pub fn is_null(&self) -> bool\n"
            ),
            "{text}"
        );
        assert!(text.contains("⋮\n"), "{text}");
    }

    #[test]
    fn an_impls_associated_type_is_not_a_definition_of_its_name() {
        // serde's visitors: `type Value = Value;` in six impls must not make `Value` a name
        // defined in more than 5 files (weighed x0.1); the trait's own declaration still counts.
        let ex = Extractor::new();
        let mut g = Graph::default();
        g.add("src/value.rs", syms(&ex, Lang::Rust, "pub enum Value { Null }\n"));
        g.add("src/visitor.rs", syms(&ex, Lang::Rust, "pub trait Visitor { type Value; }\n"));
        for i in 0..6 {
            let src = format!(
                "struct V{i};\nimpl Visitor for V{i} {{\n    type Value = Value;\n    const N: u8 = 1;\n}}\n"
            );
            g.add(&format!("src/v{i}.rs"), syms(&ex, Lang::Rust, &src));
        }
        let value = &g.names[g.by_name["Value"] as usize];
        let definers: Vec<&str> = value.definers.iter().map(|&f| g.slot(f).path.as_str()).collect();
        assert_eq!(definers, ["src/value.rs", "src/visitor.rs"]);
        assert!(g.by_name.get("N").is_none_or(|&n| g.names[n as usize].definers.is_empty()));
    }

    #[test]
    fn tokens_are_estimated_per_word_piece_and_symbol() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("fn a"), 2);
        assert_eq!(estimate_tokens("from_str"), 2);
        assert_eq!(estimate_tokens("x: &'a str\n"), 7);
        assert_eq!(estimate_tokens("│    ⋮"), 2);
    }

    #[test]
    fn aiders_name_weights() {
        assert_eq!(name_weight("from_str"), 10.0);
        assert_eq!(name_weight("to_str"), 1.0);
        assert_eq!(name_weight("Deserializer"), 10.0);
        assert_eq!(name_weight("DESERIALIZER"), 1.0);
        assert!((name_weight("_private_thing") - 1.0).abs() < 1e-12);
        assert!((name_weight("_x") - 0.1).abs() < 1e-12);
    }
}
