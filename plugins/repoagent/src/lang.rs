//! The languages repoagent parses: which file is which (by extension), the tree-sitter grammar
//! of each, and the name tokei gives it. One table, read by symbols, metrics and stats.

use std::path::Path;

use serde::Serialize;
use tree_sitter::Language;

/// A language with a tree-sitter grammar here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
    C,
    Cpp,
    Ruby,
    CSharp,
}

impl Lang {
    pub const ALL: [Lang; 11] = [
        Lang::Rust,
        Lang::Python,
        Lang::JavaScript,
        Lang::TypeScript,
        Lang::Tsx,
        Lang::Go,
        Lang::Java,
        Lang::C,
        Lang::Cpp,
        Lang::Ruby,
        Lang::CSharp,
    ];

    /// The language of a file, from its extension (`.h` is C: a C++ header parses as C well
    /// enough for its declarations, and the C grammar is the conservative choice).
    pub fn of_path(path: &Path) -> Option<Lang> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "rs" => Lang::Rust,
            "py" | "pyi" | "pyw" => Lang::Python,
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "go" => Lang::Go,
            "java" => Lang::Java,
            "c" | "h" => Lang::C,
            "cc" | "cpp" | "cxx" | "c++" | "hh" | "hpp" | "hxx" | "h++" | "ipp" | "inl" => {
                Lang::Cpp
            }
            "rb" | "rake" | "gemspec" => Lang::Ruby,
            "cs" => Lang::CSharp,
            _ => return None,
        })
    }

    /// The name users and the API use (`"rust"`, `"c++"` is `"cpp"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
            Lang::Tsx => "tsx",
            Lang::Go => "go",
            Lang::Java => "java",
            Lang::C => "c",
            Lang::Cpp => "cpp",
            Lang::Ruby => "ruby",
            Lang::CSharp => "csharp",
        }
    }

    pub fn from_name(name: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// The tree-sitter grammar.
    pub fn grammar(self) -> Language {
        match self {
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
            Lang::C => tree_sitter_c::LANGUAGE.into(),
            Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
            Lang::Ruby => tree_sitter_ruby::LANGUAGE.into(),
            Lang::CSharp => tree_sitter_c_sharp::LANGUAGE.into(),
        }
    }

    /// The grammar crate's stock tag query (TypeScript's extends JavaScript's, as the
    /// tree-sitter CLI composes them).
    pub fn stock_tags_query(self) -> String {
        match self {
            Lang::Rust => tree_sitter_rust::TAGS_QUERY.to_string(),
            Lang::Python => tree_sitter_python::TAGS_QUERY.to_string(),
            Lang::JavaScript => tree_sitter_javascript::TAGS_QUERY.to_string(),
            Lang::TypeScript | Lang::Tsx => format!(
                "{}\n{}",
                tree_sitter_javascript::TAGS_QUERY,
                tree_sitter_typescript::TAGS_QUERY
            ),
            Lang::Go => tree_sitter_go::TAGS_QUERY.to_string(),
            Lang::Java => tree_sitter_java::TAGS_QUERY.to_string(),
            Lang::C => tree_sitter_c::TAGS_QUERY.to_string(),
            Lang::Cpp => tree_sitter_cpp::TAGS_QUERY.to_string(),
            Lang::Ruby => tree_sitter_ruby::TAGS_QUERY.to_string(),
            Lang::CSharp => tree_sitter_c_sharp::TAGS_QUERY.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grammar_loads_and_parses_and_names_round_trip() {
        for lang in Lang::ALL {
            let mut parser = tree_sitter::Parser::new();
            parser.set_language(&lang.grammar()).unwrap_or_else(|e| panic!("{lang:?}: {e}"));
            let tree = parser.parse("x", None).expect("a tree");
            assert!(tree.root_node().end_byte() >= 1, "{lang:?}");
            assert_eq!(Lang::from_name(lang.name()), Some(lang));
        }
        assert_eq!(Lang::of_path(Path::new("a/b.RS")), Some(Lang::Rust));
        assert_eq!(Lang::of_path(Path::new("x.hpp")), Some(Lang::Cpp));
        assert_eq!(Lang::of_path(Path::new("Makefile")), None);
    }
}
