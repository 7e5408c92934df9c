//! `code.symbols`, `code.outline` and `code.refs`: answers read from a repository's index
//! (the definitions and references `Extractor` found when the file was indexed); `code.refs`
//! reads the lines of the references it returns from the files as they are now.

use std::collections::BTreeMap;

use bkg_abi::Error;

use super::{FileSymbols, Kind, RefKind, Symbol};
use crate::api::{
    CodeOutline, CodeRefs, CodeSymbols, EnclosingSymbol, NameMatch, OutlineAnswer, OutlineNode,
    RefHit, RefsAnswer, SymbolHit, SymbolsAnswer,
};
use crate::index::RepoIndex;
use crate::lang::Lang;
use crate::repos::Repos;
use crate::stats::{clean_rel_path, is_under};

pub const DEFAULT_SYMBOLS_LIMIT: usize = 1000;
pub const MAX_SYMBOLS_LIMIT: usize = 100_000;
pub const DEFAULT_REFS_LIMIT: usize = 200;
pub const MAX_REFS_LIMIT: usize = 10_000;
/// Characters of a reference's line in an answer.
const TEXT_CHARS: usize = 300;

fn check_limit(limit: usize, max: usize) -> Result<(), Error> {
    if (1..=max).contains(&limit) {
        Ok(())
    } else {
        Err(Error::bad_request(format!("limit {limit}: use 1 to {max}")))
    }
}

fn kind_of(name: &str) -> Result<Kind, Error> {
    Kind::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        Error::bad_request(format!("kind {name:?} is not one of {}", known.join(", ")))
    })
}

fn lang_of(name: &str) -> Result<Lang, Error> {
    Lang::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Lang::ALL.iter().map(|l| l.name()).collect();
        Error::bad_request(format!("language {name:?} is not one of {}", known.join(", ")))
    })
}

fn ref_kind_of(name: &str) -> Result<RefKind, Error> {
    match name.to_ascii_lowercase().as_str() {
        "call" => Ok(RefKind::Call),
        "type" => Ok(RefKind::Type),
        "other" => Ok(RefKind::Other),
        _ => Err(Error::bad_request(format!("kind {name:?} is not one of call, type, other"))),
    }
}

/// A `path` filter, cleaned; 404 when it holds no file of the index.
fn under(index: &RepoIndex, repo: &str, path: Option<&str>) -> Result<String, Error> {
    let under = match path {
        Some(p) => clean_rel_path(p).map_err(Error::bad_request)?,
        None => return Ok(String::new()),
    };
    if !under.is_empty() && !index.files.keys().any(|rel| is_under(rel, &under)) {
        return Err(Error::not_found(format!(
            "no file or folder {under:?} in repository {repo:?}"
        )));
    }
    Ok(under)
}

fn hit(path: &str, lang: Lang, s: &Symbol) -> SymbolHit {
    SymbolHit {
        path: path.to_string(),
        kind: s.kind,
        name: s.name.clone(),
        line: s.line,
        end_line: s.end_line,
        parent: s.parent.clone(),
        signature: s.signature.clone(),
        language: lang,
    }
}

/// Every definition of the index under `under` (path order, then source order).
fn defs<'a>(
    index: &'a RepoIndex,
    under: &'a str,
) -> impl Iterator<Item = (&'a str, Lang, &'a Symbol)> + 'a {
    index.files.iter().filter(move |(rel, _)| is_under(rel, under)).flat_map(|(rel, e)| {
        let lang = e.lang;
        e.symbols.defs.iter().filter_map(move |s| Some((rel.as_str(), lang?, s)))
    })
}

/// `code.symbols`.
pub fn symbols(repos: &Repos, req: &CodeSymbols) -> Result<SymbolsAnswer, Error> {
    check_limit(req.limit, MAX_SYMBOLS_LIMIT)?;
    let kind = req.kind.as_deref().map(kind_of).transpose()?;
    let language = req.language.as_deref().map(lang_of).transpose()?;
    let name = req.name.as_deref().filter(|n| !n.is_empty());
    repos.with_index(&req.repo, |index| {
        let under = under(index, &req.repo, req.path.as_deref())?;
        let filtered = || {
            defs(index, &under).filter(move |(_, l, s)| {
                kind.is_none_or(|k| s.kind == k) && language.is_none_or(|want| *l == want)
            })
        };
        let mut name_match = None;
        let lower = name.map(str::to_lowercase);
        let matching: Box<dyn Iterator<Item = (&str, Lang, &Symbol)>> = match (name, &lower) {
            (Some(n), Some(lower)) => {
                if filtered().any(|(_, _, s)| s.name == n) {
                    name_match = Some(NameMatch::Exact);
                    Box::new(filtered().filter(move |(_, _, s)| s.name == n))
                } else {
                    name_match = Some(NameMatch::Substring);
                    Box::new(
                        filtered().filter(move |(_, _, s)| s.name.to_lowercase().contains(lower)),
                    )
                }
            }
            _ => Box::new(filtered()),
        };
        let mut symbols = Vec::new();
        let mut total = 0;
        for (path, lang, s) in matching {
            total += 1;
            if symbols.len() < req.limit {
                symbols.push(hit(path, lang, s));
            }
        }
        Ok(SymbolsAnswer { truncated: total > symbols.len(), symbols, total, name_match })
    })
}

/// The definitions of one file nested by what encloses them.
pub fn outline_of(fs: &FileSymbols) -> Vec<OutlineNode> {
    // A definition comes after the one enclosing it: build from the last, handing each node
    // to its parent's list (in reverse, put right at the end).
    let mut children: Vec<Vec<OutlineNode>> = vec![Vec::new(); fs.defs.len()];
    let mut roots = Vec::new();
    for (i, s) in fs.defs.iter().enumerate().rev() {
        let mut kids = std::mem::take(&mut children[i]);
        kids.reverse();
        let node = OutlineNode {
            kind: s.kind,
            name: s.name.clone(),
            line: s.line,
            end_line: s.end_line,
            signature: s.signature.clone(),
            children: kids,
        };
        match s.parent_index.map(|p| p as usize).filter(|&p| p < i) {
            Some(p) => children[p].push(node),
            None => roots.push(node),
        }
    }
    roots.reverse();
    roots
}

/// `code.outline`.
pub fn outline(repos: &Repos, req: &CodeOutline) -> Result<OutlineAnswer, Error> {
    let path = clean_rel_path(&req.path).map_err(Error::bad_request)?;
    if path.is_empty() {
        return Err(Error::bad_request("`path` must name a file of the repository"));
    }
    repos.with_index(&req.repo, |index| {
        let entry = index.files.get(&path).ok_or_else(|| {
            Error::not_found(format!("no file {path:?} in the index of repository {:?}", req.repo))
        })?;
        Ok(OutlineAnswer {
            path: path.clone(),
            language: entry.lang,
            symbols: outline_of(&entry.symbols),
        })
    })
}

/// The line `line` (1-based) of `text`, trimmed and bounded.
fn line_text(text: &str, line: u32) -> String {
    let l = text.lines().nth(line.saturating_sub(1) as usize).unwrap_or("").trim();
    if l.chars().count() > TEXT_CHARS {
        let mut s: String = l.chars().take(TEXT_CHARS - 1).collect();
        s.push('…');
        s
    } else {
        l.to_string()
    }
}

/// `code.refs`.
pub fn refs(repos: &Repos, req: &CodeRefs) -> Result<RefsAnswer, Error> {
    check_limit(req.limit, MAX_REFS_LIMIT)?;
    if req.name.trim().is_empty() {
        return Err(Error::bad_request("`name` is empty: give the name to find references of"));
    }
    let kind = req.kind.as_deref().map(ref_kind_of).transpose()?;
    let name = req.name.as_str();
    let (root, definitions, found, total) = repos.with_index(&req.repo, |index| {
        let under = under(index, &req.repo, req.path.as_deref())?;
        let definitions: Vec<SymbolHit> = defs(index, &under)
            .filter(|(_, _, s)| s.name == name)
            .take(req.limit)
            .map(|(p, l, s)| hit(p, l, s))
            .collect();
        // (path, line, kind, enclosing) of the first `limit`; all counted.
        let mut found: Vec<(String, u32, RefKind, Option<EnclosingSymbol>)> = Vec::new();
        let mut total = 0;
        for (rel, e) in index.files.iter().filter(|(rel, _)| is_under(rel, &under)) {
            for r in e.symbols.refs.iter().filter(|r| r.name == name) {
                if kind.is_some_and(|k| r.kind != k) {
                    continue;
                }
                total += 1;
                if found.len() < req.limit {
                    let symbol = e.symbols.enclosing(r.line).map(|s| EnclosingSymbol {
                        kind: s.kind,
                        name: s.name.clone(),
                        line: s.line,
                    });
                    found.push((rel.clone(), r.line, r.kind, symbol));
                }
            }
        }
        Ok((index.root.clone(), definitions, found, total))
    })?;
    // The lines, each file read once (outside the index).
    let mut texts: BTreeMap<&str, String> = BTreeMap::new();
    let mut references = Vec::with_capacity(found.len());
    for (path, line, kind, symbol) in &found {
        let text = texts.entry(path.as_str()).or_insert_with(|| {
            std::fs::read(root.join(path))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        });
        references.push(RefHit {
            path: path.clone(),
            line: *line,
            kind: *kind,
            text: line_text(text, *line),
            symbol: symbol.clone(),
        });
    }
    Ok(RefsAnswer {
        name: req.name.clone(),
        definitions,
        truncated: total > references.len(),
        references,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Extractor;

    #[test]
    fn outline_nests_by_enclosing_definition() {
        let src = "mod a {\n    struct S { x: u32 }\n    impl S {\n        fn f() {}\n        fn g() {}\n    }\n}\nfn main() {}\n";
        let fs = Extractor::new().extract(Lang::Rust, src.as_bytes()).unwrap();
        let o = outline_of(&fs);
        let names = |v: &[OutlineNode]| v.iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&o), ["a", "main"]);
        assert_eq!(names(&o[0].children), ["S", "S"]);
        assert_eq!(o[0].children[0].kind, Kind::Struct);
        assert_eq!(names(&o[0].children[0].children), ["x"]);
        assert_eq!(o[0].children[1].kind, Kind::Impl);
        assert_eq!(names(&o[0].children[1].children), ["f", "g"]);
        assert_eq!(o[0].children[1].children[1].kind, Kind::Method);
        assert!(o[1].children.is_empty());
    }

    #[test]
    fn line_text_is_trimmed_and_bounded() {
        assert_eq!(line_text("a\n   b c  \nd", 2), "b c");
        assert_eq!(line_text("a", 5), "");
        let long = "x".repeat(1000);
        assert_eq!(line_text(&long, 1).chars().count(), TEXT_CHARS);
    }

    #[test]
    fn bad_filters_say_what_is_allowed() {
        assert!(kind_of("structure").unwrap_err().message.contains("struct, enum"));
        assert!(lang_of("cobol").unwrap_err().message.contains("rust, python"));
        assert!(ref_kind_of("read").unwrap_err().message.contains("call, type, other"));
        assert!(check_limit(0, 10).unwrap_err().message.contains("1 to 10"));
        assert_eq!(kind_of("Method").unwrap(), Kind::Method);
    }
}
