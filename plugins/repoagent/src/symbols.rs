//! placeholder: rasymbols replaces this
//! Symbols: tree-sitter definitions and references (the contract's types, minimal bodies).

use serde::{Deserialize, Serialize};

use crate::lang::Lang;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

#[derive(Clone, Debug, Serialize)]
pub struct Symbol {
    pub kind: Kind,
    pub name: String,
    pub line: u32,
    pub end_line: u32,
    pub parent: Option<String>,
    pub signature: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    Call,
    Type,
    Other,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ref {
    pub name: String,
    pub line: u32,
    pub kind: RefKind,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FileSymbols {
    pub defs: Vec<Symbol>,
    pub refs: Vec<Ref>,
}

impl FileSymbols {
    /// The innermost definition whose span holds `line`.
    pub fn enclosing(&self, line: u32) -> Option<&Symbol> {
        self.defs
            .iter()
            .filter(|s| s.line <= line && line <= s.end_line)
            .min_by_key(|s| s.end_line - s.line)
    }
}

/// Compiled queries for every language (none in this placeholder).
#[derive(Default)]
pub struct Extractor {}

impl Extractor {
    pub fn new() -> Self {
        Extractor {}
    }

    pub fn extract(&self, _lang: Lang, _source: &[u8]) -> Result<FileSymbols, String> {
        Ok(FileSymbols::default())
    }
}
