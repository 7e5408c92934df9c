//! Definitions and references from tree-sitter: one query of our own per language
//! (`queries/<lang>.scm`), compiled once per language on first use and kept by the plugin's
//! `Extractor` (never in a static: a compiled query holds C heap memory that must be freed
//! before the library unloads).
//!
//! A query tags a definition's node with `@def.<kind>` and its name with `@name`; `@parent`
//! names the enclosing type where the syntax says it (a Go method's receiver, a C++
//! `Type::method`), otherwise the parent is the innermost definition whose byte span holds this
//! one. A function whose parent is a type (impl, trait, class, interface, struct...) becomes a
//! method. References are `@ref.call`, `@ref.type`, `@ref.other` captures on the name itself;
//! a name that is a definition's own name is not a reference.

pub mod answer;

use std::collections::HashSet;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser, Query, QueryCursor, StreamingIterator};

use crate::lang::Lang;

/// What a definition is. `Variable` is a module-level variable (Python, JavaScript, C, Go).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Function,
    Method,
    Class,
    Struct,
    Enum,
    Union,
    Trait,
    Interface,
    Type,
    Module,
    Namespace,
    Macro,
    Constant,
    Static,
    Field,
    Variant,
    Impl,
    Constructor,
    Property,
    Variable,
}

impl Kind {
    pub const ALL: [Kind; 20] = [
        Kind::Function,
        Kind::Method,
        Kind::Class,
        Kind::Struct,
        Kind::Enum,
        Kind::Union,
        Kind::Trait,
        Kind::Interface,
        Kind::Type,
        Kind::Module,
        Kind::Namespace,
        Kind::Macro,
        Kind::Constant,
        Kind::Static,
        Kind::Field,
        Kind::Variant,
        Kind::Impl,
        Kind::Constructor,
        Kind::Property,
        Kind::Variable,
    ];

    /// The name in the API (`"function"`, `"enum"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Method => "method",
            Kind::Class => "class",
            Kind::Struct => "struct",
            Kind::Enum => "enum",
            Kind::Union => "union",
            Kind::Trait => "trait",
            Kind::Interface => "interface",
            Kind::Type => "type",
            Kind::Module => "module",
            Kind::Namespace => "namespace",
            Kind::Macro => "macro",
            Kind::Constant => "constant",
            Kind::Static => "static",
            Kind::Field => "field",
            Kind::Variant => "variant",
            Kind::Impl => "impl",
            Kind::Constructor => "constructor",
            Kind::Property => "property",
            Kind::Variable => "variable",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name().eq_ignore_ascii_case(name))
    }

    /// A node of this kind defines one name (a declaration of fields or variables can define
    /// several: `int a, b;`).
    fn one_name_per_node(self) -> bool {
        !matches!(self, Kind::Field | Kind::Variable | Kind::Constant | Kind::Static)
    }

    /// A function directly inside a definition of this kind is a method.
    fn holds_methods(self, lang: Lang) -> bool {
        match self {
            Kind::Impl
            | Kind::Trait
            | Kind::Class
            | Kind::Interface
            | Kind::Struct
            | Kind::Union
            | Kind::Enum => true,
            // Ruby's `def` in a module is a method of the module (`module_function`, mixins).
            Kind::Module => lang == Lang::Ruby,
            _ => false,
        }
    }
}

/// One definition.
#[derive(Clone, Debug, Serialize)]
pub struct Symbol {
    pub kind: Kind,
    pub name: String,
    /// 1-based line of the name.
    pub line: u32,
    /// 1-based last line of the definition.
    pub end_line: u32,
    /// The enclosing definition's name (an impl's type, a class, a module, a namespace).
    pub parent: Option<String>,
    /// The definition's first line(s) up to its body, whitespace collapsed, at most 200 chars.
    pub signature: String,
    /// Index of the enclosing definition in `FileSymbols::defs` (from byte spans; the outline
    /// nests by it).
    #[serde(skip)]
    pub parent_index: Option<u32>,
}

/// How a name is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// Called (a function, method or macro).
    Call,
    /// Named as a type (annotations, generics, base classes, struct literals).
    Type,
    Other,
}

/// One reference to a name.
#[derive(Clone, Debug, Serialize)]
pub struct Ref {
    pub name: String,
    pub line: u32,
    pub kind: RefKind,
}

/// A file's definitions (in source order; an enclosing definition before what it holds) and
/// references (by line; one per name, line and kind).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileSymbols {
    pub defs: Vec<Symbol>,
    pub refs: Vec<Ref>,
}

impl FileSymbols {
    /// The innermost definition whose span holds `line` (for search hits).
    pub fn enclosing(&self, line: u32) -> Option<&Symbol> {
        let mut best: Option<&Symbol> = None;
        for d in &self.defs {
            let start = d.line.min(d.end_line);
            if start <= line && line <= d.end_line {
                // Later definitions in source order are nested deeper or start later: both
                // are the better answer on a tie.
                if best.is_none_or(|b| d.end_line - start <= b.end_line - b.line.min(b.end_line)) {
                    best = Some(d);
                }
            }
        }
        best
    }
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Def(Kind),
    Name,
    Parent,
    Body,
    Ref(RefKind),
    Ignore,
}

struct Compiled {
    query: Query,
    roles: Vec<Role>,
}

/// Compiled queries for every language, built lazily; owned by the plugin.
pub struct Extractor {
    langs: [OnceLock<Result<Compiled, String>>; Lang::ALL.len()],
}

impl Default for Extractor {
    fn default() -> Self {
        Self::new()
    }
}

/// The query text of a language (ours, not the grammar's stock tags query).
pub fn query_source(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => include_str!("../queries/rust.scm"),
        Lang::Python => include_str!("../queries/python.scm"),
        Lang::JavaScript => include_str!("../queries/javascript.scm"),
        Lang::TypeScript => include_str!("../queries/typescript.scm"),
        Lang::Tsx => include_str!("../queries/typescript.scm"),
        Lang::Go => include_str!("../queries/go.scm"),
        Lang::Java => include_str!("../queries/java.scm"),
        Lang::C => include_str!("../queries/c.scm"),
        Lang::Cpp => include_str!("../queries/cpp.scm"),
        Lang::Ruby => include_str!("../queries/ruby.scm"),
        Lang::CSharp => include_str!("../queries/csharp.scm"),
    }
}

fn compile(lang: Lang) -> Result<Compiled, String> {
    let query = Query::new(&lang.grammar(), query_source(lang))
        .map_err(|e| format!("symbol query for {}: {e}", lang.name()))?;
    let mut roles = Vec::with_capacity(query.capture_names().len());
    for name in query.capture_names() {
        let role = match *name {
            "name" => Role::Name,
            "parent" => Role::Parent,
            "body" => Role::Body,
            "ref.call" => Role::Ref(RefKind::Call),
            "ref.type" => Role::Ref(RefKind::Type),
            "ref.other" => Role::Ref(RefKind::Other),
            n => match n.strip_prefix("def.").map(|k| (k, Kind::from_name(k))) {
                Some((_, Some(kind))) => Role::Def(kind),
                Some((k, None)) => {
                    return Err(format!("symbol query for {}: unknown kind {k:?}", lang.name()))
                }
                None if n.starts_with('_') => Role::Ignore,
                None => {
                    return Err(format!("symbol query for {}: unknown capture @{n}", lang.name()))
                }
            },
        };
        roles.push(role);
    }
    Ok(Compiled { query, roles })
}

/// A definition before its parent and signature are worked out.
struct RawDef<'t> {
    kind: Kind,
    name: String,
    node: Node<'t>,
    name_start: usize,
    line: u32,
    parent: Option<String>,
    body_start: Option<usize>,
    pattern: usize,
}

const SIGNATURE_CHARS: usize = 200;
/// Bytes of source looked at for a signature (whitespace collapses, so a bit more than 200).
const SIGNATURE_SCAN: usize = 1024;

fn text(node: Node, source: &[u8]) -> String {
    String::from_utf8_lossy(&source[node.byte_range()]).into_owned()
}

fn line_of(node: Node) -> u32 {
    node.start_position().row as u32 + 1
}

fn end_line_of(node: Node) -> u32 {
    let end = node.end_position();
    // A node that ends at the start of a line (after its newline) ends on the line before.
    let row =
        if end.column == 0 && end.row > node.start_position().row { end.row - 1 } else { end.row };
    row as u32 + 1
}

/// The definition's text from its start to its body (or its end), whitespace collapsed,
/// without a trailing `{`, `:` or `,`, at most 200 characters.
fn signature(node: Node, body_start: Option<usize>, source: &[u8]) -> String {
    let start = node.start_byte();
    let mut end = body_start.filter(|&b| b > start).unwrap_or(node.end_byte());
    end = end.min(start + SIGNATURE_SCAN).min(source.len());
    let raw = String::from_utf8_lossy(&source[start..end]);
    let mut out = String::with_capacity(raw.len().min(SIGNATURE_CHARS * 4));
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let trimmed = out.trim_end_matches(['{', ':', ',', ' ']).len();
    out.truncate(trimmed);
    if out.chars().count() > SIGNATURE_CHARS {
        out = out.chars().take(SIGNATURE_CHARS - 1).collect();
        out.push('…');
    }
    out
}

impl Extractor {
    pub fn new() -> Self {
        Self { langs: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn compiled(&self, lang: Lang) -> Result<&Compiled, String> {
        self.langs[lang as usize].get_or_init(|| compile(lang)).as_ref().map_err(Clone::clone)
    }

    /// Definitions and references of one file.
    pub fn extract(&self, lang: Lang, source: &[u8]) -> Result<FileSymbols, String> {
        let compiled = self.compiled(lang)?;
        let mut parser = Parser::new();
        parser
            .set_language(&lang.grammar())
            .map_err(|e| format!("{} grammar: {e}", lang.name()))?;
        let tree = parser
            .parse(source, None)
            .ok_or_else(|| format!("{} parser gave no tree", lang.name()))?;

        let mut raw: Vec<RawDef> = Vec::new();
        let mut refs: Vec<(usize, Node, RefKind)> = Vec::new();
        let mut cursor = QueryCursor::new();
        let mut matches = cursor.matches(&compiled.query, tree.root_node(), source);
        while let Some(m) = matches.next() {
            let (mut def, mut name, mut parent, mut body) = (None, None, None, None);
            for cap in m.captures {
                match compiled.roles[cap.index as usize] {
                    Role::Def(kind) => def = Some((kind, cap.node)),
                    Role::Name => name = Some(cap.node),
                    Role::Parent => parent = Some(cap.node),
                    Role::Body => body = Some(cap.node),
                    Role::Ref(kind) => refs.push((cap.node.start_byte(), cap.node, kind)),
                    Role::Ignore => {}
                }
            }
            let (Some((kind, node)), Some(name)) = (def, name) else { continue };
            let name_text = text(name, source);
            if name_text.is_empty() {
                continue;
            }
            let body_start =
                body.or_else(|| node.child_by_field_name("body")).map(|b| b.start_byte());
            raw.push(RawDef {
                kind,
                name: name_text,
                node,
                name_start: name.start_byte(),
                line: line_of(name),
                parent: parent.map(|p| text(p, source)),
                body_start,
                pattern: m.pattern_index,
            });
        }

        // Source order, an enclosing node before what it holds; one definition per node and
        // name, and per node and kind where a node has one name (the first pattern wins).
        raw.sort_by_key(|d| (d.node.start_byte(), std::cmp::Reverse(d.node.end_byte()), d.pattern));
        raw.dedup_by(|b, a| {
            a.node.start_byte() == b.node.start_byte()
                && a.node.end_byte() == b.node.end_byte()
                && (a.name == b.name || (a.kind == b.kind && a.kind.one_name_per_node()))
        });

        let mut defs: Vec<Symbol> = Vec::with_capacity(raw.len());
        // The definitions that may hold the next one: (index in `raw`, index in `defs`).
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for (ri, d) in raw.iter().enumerate() {
            let (start, end) = (d.node.start_byte(), d.node.end_byte());
            while let Some(&(top, _)) = stack.last() {
                let t = &raw[top].node;
                // A node with several names (`a, b = 1, 2`) holds none of them.
                let same = t.start_byte() == start && t.end_byte() == end;
                if t.start_byte() <= start && end <= t.end_byte() && !same {
                    break;
                }
                stack.pop();
            }
            let enclosing = stack.last().map(|&(_, i)| i);
            let enclosing_kind = enclosing.map(|p| defs[p].kind);
            let mut kind = d.kind;
            match (kind, enclosing_kind) {
                (Kind::Function, Some(p)) if p.holds_methods(lang) => kind = Kind::Method,
                // A variable inside a function is a local: not a definition here.
                (Kind::Variable, Some(Kind::Function | Kind::Method | Kind::Constructor)) => {
                    continue
                }
                (Kind::Variable, Some(Kind::Class | Kind::Struct)) => kind = Kind::Field,
                _ => {}
            }
            let parent = d.parent.clone().or_else(|| enclosing.map(|p| defs[p].name.clone()));
            defs.push(Symbol {
                kind,
                name: d.name.clone(),
                line: d.line,
                end_line: end_line_of(d.node).max(d.line),
                parent,
                signature: signature(d.node, d.body_start, source),
                parent_index: enclosing.map(|p| p as u32),
            });
            stack.push((ri, defs.len() - 1));
        }

        // References: not a definition's own name; one per name, line and kind.
        let name_starts: HashSet<usize> = raw.iter().map(|d| d.name_start).collect();
        refs.sort_by_key(|r| r.0);
        let mut out_refs: Vec<Ref> = Vec::with_capacity(refs.len());
        let mut seen: HashSet<(u32, &[u8], RefKind)> = HashSet::with_capacity(refs.len());
        for (_, node, kind) in &refs {
            let bytes = &source[node.byte_range()];
            let line = line_of(*node);
            if bytes.is_empty()
                || name_starts.contains(&node.start_byte())
                || !seen.insert((line, bytes, *kind))
            {
                continue;
            }
            out_refs.push(Ref {
                name: String::from_utf8_lossy(bytes).into_owned(),
                line,
                kind: *kind,
            });
        }
        Ok(FileSymbols { defs, refs: out_refs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(lang: Lang, src: &str) -> Vec<(Kind, String, u32, Option<String>)> {
        let ex = Extractor::new();
        let fs = ex.extract(lang, src.as_bytes()).unwrap();
        fs.defs.into_iter().map(|d| (d.kind, d.name, d.line, d.parent)).collect()
    }

    fn has(
        defs: &[(Kind, String, u32, Option<String>)],
        kind: Kind,
        name: &str,
        parent: Option<&str>,
    ) {
        assert!(
            defs.iter().any(|d| d.0 == kind && d.1 == name && d.3.as_deref() == parent),
            "{kind:?} {name} (parent {parent:?}) not in {defs:?}"
        );
    }

    #[test]
    fn rust_definitions_kinds_parents_and_signatures() {
        let src = "\
mod outer {
    pub struct Point<T> { pub x: T, y: T }
    pub enum Shape { Circle { r: f64 }, Square(f64), Empty }
    pub const ORIGIN: u32 = 0;
    static mut COUNT: usize = 0;
    pub type Pair = (u32, u32);
    pub trait Area { type Unit; fn area(&self) -> f64; }
    impl<T: Copy> Point<T> {
        pub fn new(x: T,
                   y: T) -> Self { fn helper() {} Point { x, y } }
    }
    impl Area for Shape { type Unit = f64; fn area(&self) -> f64 { 0.0 } }
    impl Area for (u32, u32) { type Unit = u32; fn area(&self) -> f64 { 1.0 } }
    union Bits { i: u32, f: f32 }
    macro_rules! twice { ($e:expr) => { $e * 2 } }
}
fn main() { let p = outer::Point::new(1, 2); twice!(p.x); }
";
        let d = defs(Lang::Rust, src);
        has(&d, Kind::Module, "outer", None);
        has(&d, Kind::Struct, "Point", Some("outer"));
        has(&d, Kind::Field, "x", Some("Point"));
        has(&d, Kind::Field, "y", Some("Point"));
        has(&d, Kind::Enum, "Shape", Some("outer"));
        has(&d, Kind::Variant, "Circle", Some("Shape"));
        has(&d, Kind::Field, "r", Some("Circle"));
        has(&d, Kind::Variant, "Empty", Some("Shape"));
        has(&d, Kind::Constant, "ORIGIN", Some("outer"));
        has(&d, Kind::Static, "COUNT", Some("outer"));
        has(&d, Kind::Type, "Pair", Some("outer"));
        has(&d, Kind::Trait, "Area", Some("outer"));
        has(&d, Kind::Type, "Unit", Some("Area"));
        has(&d, Kind::Method, "area", Some("Area"));
        has(&d, Kind::Impl, "Point", Some("outer"));
        has(&d, Kind::Method, "new", Some("Point"));
        has(&d, Kind::Function, "helper", Some("new"));
        has(&d, Kind::Impl, "Shape", Some("outer"));
        has(&d, Kind::Method, "area", Some("Shape"));
        has(&d, Kind::Impl, "(u32, u32)", Some("outer"));
        has(&d, Kind::Method, "area", Some("(u32, u32)"));
        has(&d, Kind::Union, "Bits", Some("outer"));
        has(&d, Kind::Macro, "twice", Some("outer"));
        has(&d, Kind::Function, "main", None);
        assert_eq!(d.len(), 29, "{d:?}");

        let fs = Extractor::new().extract(Lang::Rust, src.as_bytes()).unwrap();
        let new = fs.defs.iter().find(|s| s.name == "new").unwrap();
        assert_eq!((new.line, new.end_line), (9, 10));
        assert_eq!(new.signature, "pub fn new(x: T, y: T) -> Self");
        let point = fs.defs.iter().find(|s| s.name == "Point").unwrap();
        assert_eq!(point.signature, "pub struct Point<T>");
        let x = fs.defs.iter().find(|s| s.name == "x").unwrap();
        assert_eq!(x.signature, "pub x: T");
        // the outline's parent links agree with the parent names
        for s in &fs.defs {
            let by_index = s.parent_index.map(|i| fs.defs[i as usize].name.clone());
            assert_eq!(by_index, s.parent, "{s:?}");
        }
        // enclosing: the innermost definition holding a line
        assert_eq!(fs.enclosing(10).map(|s| s.name.as_str()), Some("helper"));
        assert_eq!(fs.enclosing(9).map(|s| s.name.as_str()), Some("new"));
        assert_eq!(fs.enclosing(17).map(|s| s.name.as_str()), Some("main"));
        assert!(fs.enclosing(18).is_none());

        let refs: Vec<(&str, u32, RefKind)> =
            fs.refs.iter().map(|r| (r.name.as_str(), r.line, r.kind)).collect();
        assert!(refs.contains(&("new", 17, RefKind::Call)), "{refs:?}");
        assert!(refs.contains(&("twice", 17, RefKind::Call)), "{refs:?}");
        assert!(refs.contains(&("Point", 10, RefKind::Type)), "{refs:?}");
        assert!(refs.contains(&("Area", 12, RefKind::Type)), "{refs:?}");
        // a definition's own name is not a reference to it
        assert!(!refs.iter().any(|r| r.0 == "Point" && r.1 == 2), "{refs:?}");
    }

    #[test]
    fn python_definitions_methods_fields_and_locals() {
        let src = "\
import os
VERSION = '1'
a, b = 1, 2
if os.name == 'nt':
    SEP = '\\\\'
square = lambda x: x * x

class Base(object):
    kind: str = 'base'
    def __init__(self, n):
        self.n = n
        local = n + 1

    @property
    def double(self) -> int:
        def inner():
            return 2
        return inner() * self.n

def top(x: Base) -> Base:
    y = x
    return y
";
        let d = defs(Lang::Python, src);
        has(&d, Kind::Variable, "VERSION", None);
        has(&d, Kind::Variable, "a", None);
        has(&d, Kind::Variable, "b", None);
        has(&d, Kind::Variable, "SEP", None);
        has(&d, Kind::Function, "square", None);
        has(&d, Kind::Class, "Base", None);
        has(&d, Kind::Field, "kind", Some("Base"));
        has(&d, Kind::Method, "__init__", Some("Base"));
        has(&d, Kind::Method, "double", Some("Base"));
        has(&d, Kind::Function, "inner", Some("double"));
        has(&d, Kind::Function, "top", None);
        assert!(!d.iter().any(|s| s.1 == "local" || s.1 == "y"), "locals: {d:?}");
        assert_eq!(d.len(), 11, "{d:?}");
        let fs = Extractor::new().extract(Lang::Python, src.as_bytes()).unwrap();
        let double = fs.defs.iter().find(|s| s.name == "double").unwrap();
        assert_eq!((double.line, double.end_line), (15, 18));
        assert_eq!(double.signature, "def double(self) -> int");
        let refs: Vec<(&str, u32, RefKind)> =
            fs.refs.iter().map(|r| (r.name.as_str(), r.line, r.kind)).collect();
        assert!(refs.contains(&("inner", 18, RefKind::Call)), "{refs:?}");
        assert!(refs.contains(&("object", 8, RefKind::Type)), "{refs:?}");
        assert!(refs.contains(&("Base", 20, RefKind::Type)), "{refs:?}");
        assert!(refs.contains(&("property", 14, RefKind::Call)), "{refs:?}");
    }

    #[test]
    fn javascript_and_typescript_definitions() {
        let js = "\
export const LIMIT = 10;
function add(a, b) { return a + b; }
const mul = (a, b) => a * b;
class Counter extends Base {
  #count = 0;
  increment() { this.#count = add(this.#count, 1); }
}
";
        let d = defs(Lang::JavaScript, js);
        has(&d, Kind::Variable, "LIMIT", None);
        has(&d, Kind::Function, "add", None);
        has(&d, Kind::Function, "mul", None);
        has(&d, Kind::Class, "Counter", None);
        has(&d, Kind::Field, "#count", Some("Counter"));
        has(&d, Kind::Method, "increment", Some("Counter"));
        assert_eq!(d.len(), 6, "{d:?}");

        let ts = "\
export interface Repo { name: string; files(): number; }
export type Id = string | number;
enum Color { Red, Green = 2 }
namespace Util { export function id<T>(x: T): T { return x; } }
export abstract class Store<T> implements Repo {
  name = 'store';
  abstract files(): number;
  get(id: Id): T | undefined { return undefined; }
}
";
        for lang in [Lang::TypeScript, Lang::Tsx] {
            let d = defs(lang, ts);
            has(&d, Kind::Interface, "Repo", None);
            has(&d, Kind::Property, "name", Some("Repo"));
            has(&d, Kind::Method, "files", Some("Repo"));
            has(&d, Kind::Type, "Id", None);
            has(&d, Kind::Enum, "Color", None);
            has(&d, Kind::Variant, "Red", Some("Color"));
            has(&d, Kind::Variant, "Green", Some("Color"));
            has(&d, Kind::Namespace, "Util", None);
            has(&d, Kind::Function, "id", Some("Util"));
            has(&d, Kind::Class, "Store", None);
            has(&d, Kind::Field, "name", Some("Store"));
            has(&d, Kind::Method, "files", Some("Store"));
            has(&d, Kind::Method, "get", Some("Store"));
            assert_eq!(d.len(), 13, "{lang:?} {d:?}");
        }
    }

    #[test]
    fn go_java_csharp_definitions() {
        let go = "\
package shapes

const Pi = 3.14
var registry = map[string]Shape{}

type Shape interface { Area() float64 }
type Circle struct { R float64 }
type Meters = float64

func (c *Circle) Area() float64 { return Pi * c.R * c.R }
func New(r float64) *Circle { return &Circle{R: r} }
";
        let d = defs(Lang::Go, go);
        has(&d, Kind::Module, "shapes", None);
        has(&d, Kind::Constant, "Pi", None);
        has(&d, Kind::Variable, "registry", None);
        has(&d, Kind::Interface, "Shape", None);
        has(&d, Kind::Method, "Area", Some("Shape"));
        has(&d, Kind::Struct, "Circle", None);
        has(&d, Kind::Field, "R", Some("Circle"));
        has(&d, Kind::Type, "Meters", None);
        has(&d, Kind::Method, "Area", Some("Circle"));
        has(&d, Kind::Function, "New", None);
        assert_eq!(d.len(), 10, "{d:?}");

        let java = "\
package org.example;
public class Account implements Comparable<Account> {
    private long balance, limit;
    public Account(long b) { balance = b; }
    public long balance() { return balance; }
    enum State { OPEN, CLOSED }
    interface Listener { int MAX = 3; void changed(Account a); }
    record Entry(long amount) {}
}
";
        let d = defs(Lang::Java, java);
        has(&d, Kind::Module, "org.example", None);
        has(&d, Kind::Class, "Account", None);
        has(&d, Kind::Field, "balance", Some("Account"));
        has(&d, Kind::Field, "limit", Some("Account"));
        has(&d, Kind::Constructor, "Account", Some("Account"));
        has(&d, Kind::Method, "balance", Some("Account"));
        has(&d, Kind::Enum, "State", Some("Account"));
        has(&d, Kind::Variant, "OPEN", Some("State"));
        has(&d, Kind::Interface, "Listener", Some("Account"));
        has(&d, Kind::Constant, "MAX", Some("Listener"));
        has(&d, Kind::Method, "changed", Some("Listener"));
        has(&d, Kind::Class, "Entry", Some("Account"));
        assert_eq!(d.len(), 13, "{d:?}");

        let cs = "\
namespace Shop.Core {
    public interface IPriced { decimal Price { get; } }
    public struct Money { public decimal Amount; }
    public enum Currency { Eur, Usd }
    public delegate void Changed(object sender);
    public class Item : IPriced {
        private int count = 0, max;
        public decimal Price { get; set; }
        public Item(int c) { count = c; }
        public int Count() { int Twice(int x) => x * 2; return Twice(count); }
    }
}
";
        let d = defs(Lang::CSharp, cs);
        has(&d, Kind::Namespace, "Shop.Core", None);
        has(&d, Kind::Interface, "IPriced", Some("Shop.Core"));
        has(&d, Kind::Property, "Price", Some("IPriced"));
        has(&d, Kind::Struct, "Money", Some("Shop.Core"));
        has(&d, Kind::Field, "Amount", Some("Money"));
        has(&d, Kind::Enum, "Currency", Some("Shop.Core"));
        has(&d, Kind::Variant, "Usd", Some("Currency"));
        has(&d, Kind::Type, "Changed", Some("Shop.Core"));
        has(&d, Kind::Class, "Item", Some("Shop.Core"));
        has(&d, Kind::Field, "count", Some("Item"));
        has(&d, Kind::Field, "max", Some("Item"));
        has(&d, Kind::Property, "Price", Some("Item"));
        has(&d, Kind::Constructor, "Item", Some("Item"));
        has(&d, Kind::Method, "Count", Some("Item"));
        has(&d, Kind::Function, "Twice", Some("Count"));
        assert_eq!(d.len(), 16, "{d:?}");
    }

    #[test]
    fn c_cpp_ruby_definitions() {
        let c = "\
#define MAX 10
#define SQ(x) ((x) * (x))
typedef struct node { int value; struct node *next; } node_t;
enum color { RED, GREEN };
union num { int i; float f; };
static int count = 0;
static const char *
name_of(enum color c)
{
    return c == RED ? \"red\" : \"green\";
}
int prototype_only(void);
";
        let d = defs(Lang::C, c);
        has(&d, Kind::Macro, "MAX", None);
        has(&d, Kind::Macro, "SQ", None);
        has(&d, Kind::Struct, "node", Some("node_t"));
        has(&d, Kind::Field, "value", Some("node"));
        has(&d, Kind::Field, "next", Some("node"));
        has(&d, Kind::Type, "node_t", None);
        has(&d, Kind::Enum, "color", None);
        has(&d, Kind::Variant, "RED", Some("color"));
        has(&d, Kind::Union, "num", None);
        has(&d, Kind::Variable, "count", None);
        has(&d, Kind::Function, "name_of", None);
        assert!(d.iter().any(|s| s.1 == "name_of" && s.2 == 8), "the name's line: {d:?}");
        assert!(!d.iter().any(|s| s.1 == "prototype_only"), "{d:?}");
        assert_eq!(d.len(), 14, "{d:?}");

        let cpp = "\
namespace geo {
class Shape {
public:
    virtual double area() const = 0;
    int id() const { return id_; }
private:
    int id_;
};
struct Square : Shape { double side; double area() const override; };
double Square::area() const { return side * side; }
using Real = double;
}
";
        let d = defs(Lang::Cpp, cpp);
        has(&d, Kind::Namespace, "geo", None);
        has(&d, Kind::Class, "Shape", Some("geo"));
        has(&d, Kind::Method, "area", Some("Shape"));
        has(&d, Kind::Method, "id", Some("Shape"));
        has(&d, Kind::Field, "id_", Some("Shape"));
        has(&d, Kind::Struct, "Square", Some("geo"));
        has(&d, Kind::Field, "side", Some("Square"));
        has(&d, Kind::Method, "area", Some("Square"));
        has(&d, Kind::Type, "Real", Some("geo"));
        assert_eq!(d.len(), 10, "{d:?}");

        let rb = "\
module Billing
  RATE = 3
  class Invoice < Base
    def initialize(total)
      @total = total
    end
    def self.build(x) = new(x)
  end
  def self.helper; end
end
def main; end
";
        let d = defs(Lang::Ruby, rb);
        has(&d, Kind::Module, "Billing", None);
        has(&d, Kind::Constant, "RATE", Some("Billing"));
        has(&d, Kind::Class, "Invoice", Some("Billing"));
        has(&d, Kind::Method, "initialize", Some("Invoice"));
        has(&d, Kind::Method, "build", Some("Invoice"));
        has(&d, Kind::Method, "helper", Some("Billing"));
        has(&d, Kind::Function, "main", None);
        assert_eq!(d.len(), 7, "{d:?}");
    }

    #[test]
    fn c_globals_inside_include_guards_are_variables_and_locals_are_not() {
        let h = "\
#ifndef LENGTH_H_
#define LENGTH_H_
static const int LENGTH_MAX = 10;
static char *names[4];
static int twice(int x) {
    int local = x * 2;
    return local;
}
#endif
";
        let d = defs(Lang::C, h);
        has(&d, Kind::Variable, "LENGTH_MAX", None);
        has(&d, Kind::Variable, "names", None);
        has(&d, Kind::Function, "twice", None);
        assert!(!d.iter().any(|s| s.1 == "local"), "a local: {d:?}");
    }

    #[test]
    fn names_declared_together_are_siblings_not_parent_and_child() {
        let d = defs(Lang::Python, "a, b = 1, 2\nclass C:\n    x = y = 0\n");
        has(&d, Kind::Variable, "a", None);
        has(&d, Kind::Variable, "b", None);
        let d = defs(Lang::Java, "class C { int p, q; }");
        has(&d, Kind::Field, "p", Some("C"));
        has(&d, Kind::Field, "q", Some("C"));
        let d = defs(Lang::Go, "package m\nconst A, B = 1, 2\n");
        has(&d, Kind::Constant, "A", None);
        has(&d, Kind::Constant, "B", None);
        let d = defs(Lang::Go, "package m\ntype P struct { X, Y int }\n");
        has(&d, Kind::Field, "X", Some("P"));
        has(&d, Kind::Field, "Y", Some("P"));
        for lang in [Lang::C, Lang::Cpp] {
            let d = defs(lang, "struct s { int a, *b; };\nint x = 1, y;\n");
            has(&d, Kind::Field, "a", Some("s"));
            has(&d, Kind::Field, "b", Some("s"));
            has(&d, Kind::Variable, "x", None);
            has(&d, Kind::Variable, "y", None);
        }
        let d = defs(Lang::CSharp, "class C { int p, q; }");
        has(&d, Kind::Field, "p", Some("C"));
        has(&d, Kind::Field, "q", Some("C"));
    }

    #[test]
    fn signatures_are_collapsed_and_bounded() {
        let long = format!(
            "fn f({}) {{}}\n",
            (0..80).map(|i| format!("a{i}: u32")).collect::<Vec<_>>().join(",\n ")
        );
        let fs = Extractor::new().extract(Lang::Rust, long.as_bytes()).unwrap();
        let sig = &fs.defs[0].signature;
        assert_eq!(sig.chars().count(), 200, "{sig}");
        assert!(sig.starts_with("fn f(a0: u32, a1: u32,") && sig.ends_with('…'), "{sig}");
        // a file that does not parse cleanly still gives what it can, and an empty one nothing
        let fs = Extractor::new().extract(Lang::Rust, b"fn ok() {}\nfn broken( {").unwrap();
        assert!(fs.defs.iter().any(|s| s.name == "ok"));
        assert!(Extractor::new().extract(Lang::Go, b"").unwrap().defs.is_empty());
    }

    #[test]
    fn every_language_query_compiles() {
        let ex = Extractor::new();
        let errors: Vec<String> =
            Lang::ALL.into_iter().filter_map(|l| ex.compiled(l).err()).collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}
