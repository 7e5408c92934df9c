//! Complexity per function and per file, computed from tree-sitter nodes (no
//! rust-code-analysis: it pins an older tree-sitter whose runtime would be linked twice).
//!
//! What a function is, per language (each one its own entry; its complexity is not counted in
//! the function around it):
//! - Rust `fn` items with a body (free, in `impl`, in `trait`, nested); C and C++ function
//!   definitions (in and out of classes); Python `def` (methods, nested); Go `func` and methods;
//!   Java methods and constructors; C# methods, constructors, destructors, operators, local
//!   functions and property/event accessors with a body; Ruby `def` and `def self.x`;
//!   JavaScript/TypeScript function declarations, methods, and function expressions or arrow
//!   functions bound to a name (`const f = () => ..`, `{ f: function () {..} }`, a class field).
//! - Lambdas (Rust closures, Python `lambda`, anonymous JS functions and arrows passed as
//!   arguments, Java/C#/C++ lambdas, Go function literals, Ruby blocks) are folded into the
//!   function around them, as lizard and SonarSource do: their decisions count there, and for
//!   cognitive complexity they add one nesting level. A lambda outside every function is an
//!   entry of its own (named by its binding, else `<anonymous>`).
//!
//! The rules (README "code.metrics" repeats them):
//! - cyclomatic = 1 + decision points: `if`/`elif`/`else if`/`elsif`/`unless` (and their
//!   modifier forms), loops with a condition (`for`, `while`, `do`, foreach, comprehension `for`
//!   and `if` clauses; Rust's `loop` has none), each non-default `case`/`when` arm (a Rust
//!   `match` with n arms adds n - 1: it is exhaustive, so one arm is the fall-through), a match
//!   guard or `when` clause, `catch`/`except`/`rescue`, the ternary `?:` (Python's `x if c else
//!   y`, Ruby's `c ? a : b`), each `&&`/`||`/`and`/`or`, C#/JS `??`, Rust's `?` (an early
//!   return) and `let .. else`.
//! - cognitive: SonarSource's specification (G. Ann Campbell, "Cognitive Complexity", 2018).
//!   +1 for `if`, `else if`, `else`, ternary, `switch`/`match`/`case` (once for the whole
//!   statement), loops (Rust `loop` too), `catch`, labelled `break`/`continue`, `goto`, Rust
//!   `let .. else`, and each run of like boolean operators (`a && b && c` is 1, `a && b || c` 2,
//!   `a && !(b && c)` 2); `if`, ternary, `switch`, loops, `catch` and `let .. else` also add
//!   the nesting level they stand at. Nesting grows inside those structures, `else` branches
//!   and lambdas. Not counted: `try`, `finally`, `??`, Rust's `?` (shorthands, like the
//!   paper's null-coalescing operators), match guards, early `return`, and recursion (the
//!   paper's optional increment: a call's target is not resolved here).
//! - lines: from the line of the definition's first token (after decorators and attributes)
//!   to its last, both included.
//! - params: the parameters written in the list, a written receiver included (Rust `self`,
//!   Python `self`); Go's receiver stands outside the list and is not counted; `*args`,
//!   defaults and variadics count one each; C's `(void)` is none.
//! - exits: `return`, `throw`/`raise`, Rust `?` (each is a way out), plus one for the end of
//!   the body unless its last statement is a `return` or `throw` (reachability is not
//!   analysed). Exits inside a lambda leave the lambda, not the function, and are not counted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bkg_abi::{Error, Response};
use rayon::prelude::*;
use serde::Serialize;
use tree_sitter::{Node, Parser};

use crate::lang::Lang;
use crate::pool::Pool;
use crate::repos::Repos;
use crate::{api, churn};

#[derive(Clone, Debug, Serialize)]
pub struct FnMetrics {
    pub name: String,
    pub parent: Option<String>,
    pub line: u32,
    pub end_line: u32,
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub lines: u32,
    pub params: u32,
    pub exits: u32,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FileMetrics {
    pub functions: Vec<FnMetrics>,
    /// Sums over the file's functions.
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub max_cyclomatic: u32,
}

/// Parses `source` as `lang` and measures every function in it. A file with syntax errors is
/// measured as tree-sitter recovered it.
pub fn analyze(lang: Lang, source: &[u8]) -> Result<FileMetrics, String> {
    let mut parser = Parser::new();
    parser
        .set_language(&lang.grammar())
        .map_err(|e| format!("cannot load the {} grammar: {e}", lang.name()))?;
    let tree = parser
        .parse(source, None)
        .ok_or_else(|| format!("the {} parser gave no tree", lang.name()))?;
    let mut walker =
        Walker { lang, src: source, fns: Vec::new(), scopes: Vec::new(), consumed: HashSet::new() };
    walker.walk(tree.root_node());
    let mut out = FileMetrics { functions: walker.fns, ..FileMetrics::default() };
    for f in &out.functions {
        out.cyclomatic += f.cyclomatic;
        out.cognitive += f.cognitive;
        out.max_cyclomatic = out.max_cyclomatic.max(f.cyclomatic);
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A function of its own.
    Function,
    /// Folded into the enclosing function, one nesting level deeper.
    Lambda,
    /// A class, impl, trait, module...: names the parent of the functions inside.
    Container,
    If,
    Ternary,
    Loop {
        decision: bool,
    },
    Switch,
    /// Decision points of a `case` arm (0 for a default).
    Arm(u32),
    /// A match guard or `when` clause: cyclomatic only.
    Guard,
    Catch,
    /// `&&`, `||`, `and`, `or`.
    Logical,
    /// `??`: cyclomatic only.
    Coalesce,
    /// Rust's `?`: cyclomatic and an exit.
    Try,
    /// `return`, `throw`, `raise`.
    Exit,
    /// A labelled `break`/`continue`, `goto`.
    Jump,
    /// Rust's `let PATTERN = EXPR else { .. }`.
    LetElse,
    Other,
}

#[derive(Clone, Copy)]
enum Mode {
    Node {
        else_if: bool,
    },
    /// The `alternative` of an if: an `else` (or `elif`/`else if`) branch.
    Alternative,
}

#[derive(Clone, Copy)]
struct Item<'t> {
    node: Node<'t>,
    mode: Mode,
    nesting: u32,
    /// Index into `fns` of the function being measured.
    unit: Option<usize>,
    in_lambda: bool,
    /// Index into `scopes` of the nearest container's name.
    scope: Option<usize>,
}

struct Walker<'s> {
    lang: Lang,
    src: &'s [u8],
    fns: Vec<FnMetrics>,
    scopes: Vec<String>,
    /// Logical operators already counted as part of a longer sequence.
    consumed: HashSet<usize>,
}

fn is_comment(node: Node) -> bool {
    node.kind().contains("comment")
}

fn named_children(node: Node) -> Vec<Node> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).filter(|c| !is_comment(*c)).collect()
}

fn end_line(node: Node) -> u32 {
    let start = node.start_position();
    let end = node.end_position();
    // A node that ends with its newline ends on the line before.
    let row = if end.column == 0 && end.row > start.row { end.row - 1 } else { end.row };
    row as u32 + 1
}

impl<'s> Walker<'s> {
    fn text(&self, node: Node) -> &'s str {
        std::str::from_utf8(&self.src[node.byte_range()]).unwrap_or("")
    }

    fn js_like(&self) -> bool {
        matches!(self.lang, Lang::JavaScript | Lang::TypeScript | Lang::Tsx)
    }

    fn c_like(&self) -> bool {
        matches!(self.lang, Lang::C | Lang::Cpp)
    }

    /// The binding that names a JS function expression or arrow, if it has one.
    fn js_binding_name(&self, node: Node) -> Option<String> {
        let parent = node.parent()?;
        let field = |f: &str| parent.child_by_field_name(f).map(|n| self.text(n).to_string());
        match parent.kind() {
            "variable_declarator" => field("name"),
            "pair" => field("key"),
            "assignment_expression" => field("left"),
            "public_field_definition" | "field_definition" => field("property").or(field("name")),
            _ => None,
        }
    }

    fn role(&self, node: Node) -> Role {
        // Keywords share their kind with nodes in some grammars (Ruby's `if`, Python's `lambda`).
        if !node.is_named() {
            return Role::Other;
        }
        let kind = node.kind();
        let lang = self.lang;
        // Boolean operators, ternaries and exits are spelled alike in most grammars.
        match kind {
            "binary_expression" | "boolean_operator" | "binary" => {
                let op = node.child_by_field_name("operator").map(|o| o.kind()).unwrap_or("");
                return match op {
                    "&&" | "||" | "and" | "or" => Role::Logical,
                    "??" => Role::Coalesce,
                    _ => Role::Other,
                };
            }
            "return_statement"
            | "return_expression"
            | "throw_statement"
            | "throw_expression"
            | "raise_statement"
            | "co_return_statement" => return Role::Exit,
            _ => {}
        }
        match lang {
            Lang::Rust => match kind {
                "function_item" => Role::Function,
                "closure_expression" => Role::Lambda,
                "impl_item" | "trait_item" => Role::Container,
                "if_expression" => Role::If,
                "for_expression" | "while_expression" => Role::Loop { decision: true },
                "loop_expression" => Role::Loop { decision: false },
                "match_expression" => Role::Switch,
                "match_pattern" if node.child_by_field_name("condition").is_some() => Role::Guard,
                "try_expression" => Role::Try,
                "break_expression" | "continue_expression"
                    if named_children(node).iter().any(|c| c.kind() == "label") =>
                {
                    Role::Jump
                }
                "let_declaration" if node.child_by_field_name("alternative").is_some() => {
                    Role::LetElse
                }
                _ => Role::Other,
            },
            Lang::Python => match kind {
                "function_definition" => Role::Function,
                "lambda" => Role::Lambda,
                "class_definition" => Role::Container,
                "if_statement" | "elif_clause" => Role::If,
                "if_clause" if node.parent().is_some_and(|p| p.kind() == "case_clause") => {
                    Role::Guard
                }
                "if_clause" => Role::If,
                "conditional_expression" => Role::Ternary,
                "for_statement" | "while_statement" | "for_in_clause" => {
                    Role::Loop { decision: true }
                }
                "match_statement" => Role::Switch,
                "case_clause" => {
                    let wildcard = named_children(node)
                        .iter()
                        .any(|c| c.kind() == "case_pattern" && self.text(*c).trim() == "_");
                    Role::Arm(u32::from(!wildcard))
                }
                "except_clause" | "except_group_clause" => Role::Catch,
                _ => Role::Other,
            },
            Lang::JavaScript | Lang::TypeScript | Lang::Tsx => match kind {
                "function_declaration" | "generator_function_declaration" | "method_definition" => {
                    Role::Function
                }
                "function_expression" | "function" | "generator_function" | "arrow_function" => {
                    if self.js_binding_name(node).is_some() {
                        Role::Function
                    } else {
                        Role::Lambda
                    }
                }
                "class_declaration" | "class" | "abstract_class_declaration" => Role::Container,
                "if_statement" => Role::If,
                "ternary_expression" => Role::Ternary,
                "for_statement" | "for_in_statement" | "while_statement" | "do_statement" => {
                    Role::Loop { decision: true }
                }
                "switch_statement" => Role::Switch,
                "switch_case" => Role::Arm(1),
                "catch_clause" => Role::Catch,
                "break_statement" | "continue_statement"
                    if node.child_by_field_name("label").is_some() =>
                {
                    Role::Jump
                }
                _ => Role::Other,
            },
            Lang::Go => match kind {
                "function_declaration" | "method_declaration" => Role::Function,
                "func_literal" => Role::Lambda,
                "if_statement" => Role::If,
                "for_statement" => Role::Loop { decision: true },
                "expression_switch_statement" | "type_switch_statement" | "select_statement" => {
                    Role::Switch
                }
                "expression_case" | "type_case" | "communication_case" => Role::Arm(1),
                "goto_statement" => Role::Jump,
                "break_statement" | "continue_statement"
                    if named_children(node).iter().any(|c| c.kind() == "label_name") =>
                {
                    Role::Jump
                }
                _ => Role::Other,
            },
            Lang::Java => match kind {
                "method_declaration"
                | "constructor_declaration"
                | "compact_constructor_declaration" => Role::Function,
                "lambda_expression" => Role::Lambda,
                "class_declaration"
                | "interface_declaration"
                | "enum_declaration"
                | "record_declaration"
                | "annotation_type_declaration" => Role::Container,
                "object_creation_expression"
                    if named_children(node).iter().any(|c| c.kind() == "class_body") =>
                {
                    Role::Container
                }
                "if_statement" => Role::If,
                "ternary_expression" => Role::Ternary,
                "for_statement" | "enhanced_for_statement" | "while_statement" | "do_statement" => {
                    Role::Loop { decision: true }
                }
                "switch_expression" | "switch_statement" => Role::Switch,
                "switch_label" => {
                    let is_case = node.child(0).is_some_and(|c| c.kind() == "case");
                    let guard = named_children(node).iter().any(|c| c.kind() == "guard");
                    Role::Arm(u32::from(is_case) + u32::from(guard))
                }
                "catch_clause" => Role::Catch,
                "break_statement" | "continue_statement"
                    if named_children(node).iter().any(|c| c.kind() == "identifier") =>
                {
                    Role::Jump
                }
                _ => Role::Other,
            },
            Lang::C | Lang::Cpp => match kind {
                "function_definition" => Role::Function,
                "lambda_expression" => Role::Lambda,
                "class_specifier" | "struct_specifier" | "union_specifier" => Role::Container,
                "if_statement" => Role::If,
                "conditional_expression" => Role::Ternary,
                "for_statement" | "for_range_loop" | "while_statement" | "do_statement" => {
                    Role::Loop { decision: true }
                }
                "switch_statement" => Role::Switch,
                "case_statement" => {
                    Role::Arm(u32::from(node.child_by_field_name("value").is_some()))
                }
                "catch_clause" => Role::Catch,
                "goto_statement" => Role::Jump,
                _ => Role::Other,
            },
            Lang::Ruby => match kind {
                "method" | "singleton_method" => Role::Function,
                "block" | "do_block" | "lambda" => Role::Lambda,
                "class" | "module" | "singleton_class" => Role::Container,
                "if" | "unless" | "elsif" | "if_modifier" | "unless_modifier" => Role::If,
                "conditional" => Role::Ternary,
                "while" | "until" | "for" | "while_modifier" | "until_modifier" => {
                    Role::Loop { decision: true }
                }
                "case" | "case_match" => Role::Switch,
                "when" | "in_clause" => Role::Arm(1),
                "if_guard" | "unless_guard" => Role::Guard,
                "rescue" | "rescue_modifier" => Role::Catch,
                "return" => Role::Exit,
                "call"
                    if node.child_by_field_name("receiver").is_none()
                        && node
                            .child_by_field_name("method")
                            .is_some_and(|m| self.text(m) == "raise") =>
                {
                    Role::Exit
                }
                "identifier"
                    if self.text(node) == "raise"
                        && node.parent().is_none_or(|p| p.kind() != "call") =>
                {
                    Role::Exit
                }
                _ => Role::Other,
            },
            Lang::CSharp => match kind {
                "method_declaration"
                | "constructor_declaration"
                | "destructor_declaration"
                | "operator_declaration"
                | "conversion_operator_declaration"
                | "local_function_statement"
                | "accessor_declaration" => Role::Function,
                "lambda_expression" | "anonymous_method_expression" => Role::Lambda,
                "class_declaration"
                | "struct_declaration"
                | "interface_declaration"
                | "record_declaration"
                | "record_struct_declaration"
                | "property_declaration"
                | "event_declaration"
                | "indexer_declaration" => Role::Container,
                "if_statement" => Role::If,
                "conditional_expression" => Role::Ternary,
                "for_statement" | "foreach_statement" | "while_statement" | "do_statement" => {
                    Role::Loop { decision: true }
                }
                "switch_statement" | "switch_expression" => Role::Switch,
                "switch_section" => {
                    let mut cursor = node.walk();
                    let cases = node.children(&mut cursor).filter(|c| c.kind() == "case").count();
                    Role::Arm(cases as u32)
                }
                "switch_expression_arm" => {
                    let discard =
                        named_children(node).first().is_some_and(|p| self.text(*p).trim() == "_");
                    Role::Arm(u32::from(!discard))
                }
                "when_clause" => Role::Guard,
                "catch_clause" => Role::Catch,
                "goto_statement" => Role::Jump,
                _ => Role::Other,
            },
        }
    }

    fn is_if_kind(&self, node: Node) -> bool {
        matches!(node.kind(), "if_statement" | "if_expression" | "elif_clause" | "elsif" | "if")
    }

    /// The name a function is listed under.
    fn fn_name(&self, node: Node) -> String {
        let text = |n: Node| self.text(n).to_string();
        if self.c_like() {
            // function_definition -> (pointer_/reference_)declarator ... -> function_declarator
            let mut d = node.child_by_field_name("declarator");
            while let Some(n) = d {
                if n.kind() == "function_declarator" {
                    return n
                        .child_by_field_name("declarator")
                        .map(text)
                        .unwrap_or_else(|| "<anonymous>".into());
                }
                d = n
                    .child_by_field_name("declarator")
                    .or_else(|| named_children(n).into_iter().last());
            }
            return "<anonymous>".into();
        }
        match (self.lang, node.kind()) {
            (Lang::CSharp, "operator_declaration") => {
                let op = node.child_by_field_name("operator").map(text).unwrap_or_default();
                return format!("operator {op}");
            }
            (Lang::CSharp, "conversion_operator_declaration") => {
                let ty = node.child_by_field_name("type").map(text).unwrap_or_default();
                return format!("operator {ty}");
            }
            (Lang::CSharp, "destructor_declaration") => {
                let name = node.child_by_field_name("name").map(text).unwrap_or_default();
                return format!("~{name}");
            }
            _ => {}
        }
        if let Some(name) = node.child_by_field_name("name") {
            return text(name);
        }
        if self.js_like() {
            if let Some(name) = self.js_binding_name(node) {
                return name;
            }
        }
        "<anonymous>".into()
    }

    /// The name a container gives the functions inside it.
    fn container_name(&self, node: Node) -> Option<String> {
        let text = |n: Node| self.text(n).to_string();
        match node.kind() {
            "impl_item" => node.child_by_field_name("type").map(text),
            "object_creation_expression" => node.child_by_field_name("type").map(text),
            _ => node.child_by_field_name("name").map(text),
        }
    }

    fn count_params(&self, node: Node) -> u32 {
        let params = if self.c_like() {
            let mut d = node.child_by_field_name("declarator");
            let mut found = None;
            while let Some(n) = d {
                if n.kind() == "function_declarator" {
                    found = n.child_by_field_name("parameters");
                    break;
                }
                d = n
                    .child_by_field_name("declarator")
                    .or_else(|| named_children(n).into_iter().last());
            }
            found
        } else if let Some(p) = node.child_by_field_name("parameters") {
            Some(p)
        } else if node.child_by_field_name("parameter").is_some() {
            return 1; // `x => ..`
        } else {
            None
        };
        let Some(params) = params else { return 0 };
        let children = named_children(params);
        if self.c_like() && children.len() == 1 && self.text(children[0]).trim() == "void" {
            return 0;
        }
        let mut n = 0;
        for c in children {
            match c.kind() {
                "positional_separator"
                | "keyword_separator"
                | "attribute_item"
                | "receiver_parameter" => {}
                "parameter_declaration" if self.lang == Lang::Go => {
                    let mut cursor = c.walk();
                    let names = c.children_by_field_name("name", &mut cursor).count() as u32;
                    n += names.max(1);
                }
                _ => n += 1,
            }
        }
        n
    }

    fn is_exit_node(&self, node: Node) -> bool {
        matches!(self.role(node), Role::Exit)
    }

    /// Whether the body's last statement leaves the function (then its end is no exit).
    fn ends_with_exit(&self, node: Node) -> bool {
        let Some(mut n) = node.child_by_field_name("body") else {
            return false;
        };
        for _ in 0..4 {
            let Some(last) = named_children(n).into_iter().last() else {
                return false;
            };
            if self.is_exit_node(last) {
                return true;
            }
            match last.kind() {
                "expression_statement" | "statement_list" | "body_statement" | "block" => n = last,
                _ => return false,
            }
        }
        false
    }

    fn new_unit(&mut self, node: Node, scope: Option<usize>) -> usize {
        let line = node.start_position().row as u32 + 1;
        let end = end_line(node);
        let mut parent = scope.map(|s| self.scopes[s].clone());
        let mut name = self.fn_name(node);
        if self.lang == Lang::Go && node.kind() == "method_declaration" {
            // The receiver's type: `func (s *Server) Run()` -> Server.
            if let Some(recv) = node.child_by_field_name("receiver") {
                if let Some(ty) =
                    named_children(recv).first().and_then(|p| p.child_by_field_name("type"))
                {
                    let t = self.text(ty).trim_start_matches('*');
                    let t = t.split('[').next().unwrap_or(t);
                    parent = Some(t.to_string());
                }
            }
        }
        if self.lang == Lang::CSharp && node.kind() == "accessor_declaration" {
            name = format!("{}.{}", parent.clone().unwrap_or_default(), name);
        }
        let exits = u32::from(!self.ends_with_exit(node));
        self.fns.push(FnMetrics {
            name,
            parent,
            line,
            end_line: end,
            cyclomatic: 1,
            cognitive: 0,
            lines: end + 1 - line,
            params: self.count_params(node),
            exits,
        });
        self.fns.len() - 1
    }

    /// The operators of the boolean expression rooted at `node`, in source order, through
    /// parentheses but not through a negation or a call; all of them are marked counted.
    fn flatten_logical(&mut self, node: Node) -> Vec<&'static str> {
        let mut ops = Vec::new();
        // (node, its left side already emitted)
        let mut stack = vec![(node, false)];
        while let Some((n, left_done)) = stack.pop() {
            let n = skip_parens(n);
            if self.role(n) != Role::Logical {
                continue;
            }
            if !left_done {
                self.consumed.insert(n.id());
                stack.push((n, true));
                if let Some(l) = n.child_by_field_name("left") {
                    stack.push((l, false));
                }
            } else {
                let op = match n.child_by_field_name("operator").map(|o| o.kind()) {
                    Some("&&") | Some("and") => "&&",
                    _ => "||",
                };
                ops.push(op);
                if let Some(r) = n.child_by_field_name("right") {
                    stack.push((r, false));
                }
            }
        }
        ops
    }

    fn walk(&mut self, root: Node) {
        let mut stack = vec![Item {
            node: root,
            mode: Mode::Node { else_if: false },
            nesting: 0,
            unit: None,
            in_lambda: false,
            scope: None,
        }];
        while let Some(item) = stack.pop() {
            let node = item.node;
            let mut children_nesting = item.nesting;
            let mut unit = item.unit;
            let mut in_lambda = item.in_lambda;
            let mut scope = item.scope;

            if let Mode::Alternative = item.mode {
                // `else if` / `elif` / `elsif` continue the chain; a plain `else` is +1 and
                // nests its body.
                let target = if self.is_if_kind(node) {
                    Some(node)
                } else if matches!(node.kind(), "else_clause" | "else") {
                    let kids = named_children(node);
                    (kids.len() == 1 && self.is_if_kind(kids[0])).then(|| kids[0])
                } else {
                    None
                };
                if let Some(t) = target {
                    stack.push(Item { node: t, mode: Mode::Node { else_if: true }, ..item });
                } else {
                    self.add(unit, 0, 1);
                    stack.push(Item {
                        node,
                        mode: Mode::Node { else_if: false },
                        nesting: item.nesting + 1,
                        ..item
                    });
                }
                continue;
            }
            let else_if = matches!(item.mode, Mode::Node { else_if: true });

            let mut role = self.role(node);
            if role == Role::Lambda && unit.is_none() {
                role = Role::Function;
            }
            // Functions without a body (declarations, abstract methods) are not measured.
            if role == Role::Function
                && node.child_by_field_name("body").is_none()
                && !self.c_like()
            {
                role = Role::Other;
            }
            let exit_here = !in_lambda;
            match role {
                Role::Function => {
                    let idx = self.new_unit(node, scope);
                    let name = self.fns[idx].name.clone();
                    self.scopes.push(name);
                    scope = Some(self.scopes.len() - 1);
                    unit = Some(idx);
                    in_lambda = false;
                    children_nesting = 0;
                }
                Role::Lambda => {
                    in_lambda = true;
                    children_nesting += 1;
                }
                Role::Container => {
                    if let Some(name) = self.container_name(node) {
                        self.scopes.push(name);
                        scope = Some(self.scopes.len() - 1);
                    }
                }
                Role::If => {
                    let cog = if else_if { 1 } else { 1 + item.nesting };
                    self.add(unit, 1, cog);
                    // The condition stays at this level, the branches go one deeper, and the
                    // alternative continues the chain.
                    let mut cursor = node.walk();
                    let mut kids = Vec::new();
                    for (i, child) in node.children(&mut cursor).enumerate() {
                        let field = node.field_name_for_child(i as u32);
                        kids.push((child, field));
                    }
                    for (child, field) in kids.into_iter().rev() {
                        let (mode, nesting) = match field {
                            Some("alternative") => (Mode::Alternative, item.nesting),
                            Some("consequence") | Some("body") => {
                                (Mode::Node { else_if: false }, item.nesting + 1)
                            }
                            _ => (Mode::Node { else_if: false }, item.nesting),
                        };
                        stack.push(Item { node: child, mode, nesting, unit, in_lambda, scope });
                    }
                    continue;
                }
                Role::Ternary | Role::Catch | Role::LetElse => {
                    self.add(unit, 1, 1 + item.nesting);
                    children_nesting += 1;
                }
                Role::Loop { decision } => {
                    self.add(unit, u32::from(decision), 1 + item.nesting);
                    children_nesting += 1;
                }
                Role::Switch => {
                    let mut cyc = 0;
                    if self.lang == Lang::Rust {
                        if let Some(body) = node.child_by_field_name("body") {
                            let arms = named_children(body)
                                .iter()
                                .filter(|c| c.kind() == "match_arm")
                                .count() as u32;
                            cyc = arms.saturating_sub(1);
                        }
                    }
                    self.add(unit, cyc, 1 + item.nesting);
                    children_nesting += 1;
                }
                Role::Arm(n) => self.add(unit, n, 0),
                Role::Guard | Role::Coalesce => self.add(unit, 1, 0),
                Role::Logical => {
                    let seq = if self.consumed.contains(&node.id()) {
                        0
                    } else {
                        let ops = self.flatten_logical(node);
                        ops.iter()
                            .enumerate()
                            .filter(|(i, op)| *i == 0 || ops[i - 1] != **op)
                            .count() as u32
                    };
                    self.add(unit, 1, seq);
                }
                Role::Try => {
                    self.add(unit, 1, 0);
                    if exit_here {
                        self.add_exit(unit);
                    }
                }
                Role::Exit => {
                    if exit_here {
                        self.add_exit(unit);
                    }
                }
                Role::Jump => self.add(unit, 0, 1),
                Role::Other => {}
            }
            let mut cursor = node.walk();
            let kids: Vec<Node> = node.children(&mut cursor).collect();
            for child in kids.into_iter().rev() {
                stack.push(Item {
                    node: child,
                    mode: Mode::Node { else_if: false },
                    nesting: children_nesting,
                    unit,
                    in_lambda,
                    scope,
                });
            }
        }
    }

    fn add(&mut self, unit: Option<usize>, cyclomatic: u32, cognitive: u32) {
        if let Some(f) = unit.and_then(|u| self.fns.get_mut(u)) {
            f.cyclomatic += cyclomatic;
            f.cognitive += cognitive;
        }
    }

    fn add_exit(&mut self, unit: Option<usize>) {
        if let Some(f) = unit.and_then(|u| self.fns.get_mut(u)) {
            f.exits += 1;
        }
    }
}

fn skip_parens(mut node: Node) -> Node {
    while matches!(node.kind(), "parenthesized_expression" | "parenthesized_statements") {
        let kids = named_children(node);
        if kids.len() != 1 {
            break;
        }
        node = kids[0];
    }
    node
}

// ---------------------------------------------------------------------------------------------
// code.metrics
// ---------------------------------------------------------------------------------------------

/// Default and largest `limit` of `code.metrics`.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 10_000;
/// How long `git log` may run for the hotspots.
pub const CHURN_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads one file of the index again (a regular file, not a link) and measures it.
fn measure(abs: &Path, lang: Lang) -> Result<FileMetrics, String> {
    let meta = std::fs::symlink_metadata(abs).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("no longer a regular file".into());
    }
    let bytes = std::fs::read(abs).map_err(|e| format!("cannot read it: {e}"))?;
    analyze(lang, &bytes)
}

/// A file to measure, as the index knows it.
struct Wanted {
    rel: String,
    lang: Lang,
    cached: Option<Arc<FileMetrics>>,
    mtime_ns: i128,
    bytes: u64,
}

/// A file measured.
struct Measured {
    rel: String,
    lang: Lang,
    metrics: Arc<FileMetrics>,
}

/// The metrics of the given files of `repo`, from the index's cache where it has them;
/// the others are computed on the plugin's pool and kept in the index (unless the file
/// changed meanwhile: the watcher's new entry has none and the next call computes it).
/// Files that cannot be measured are listed with why.
fn metrics_of(
    repos: &Repos,
    pool: &Pool,
    repo: &str,
    wanted: Vec<Wanted>,
    root: &Path,
) -> Result<(Vec<Measured>, Vec<String>), Error> {
    let (cached, missing): (Vec<_>, Vec<_>) = wanted.into_iter().partition(|w| w.cached.is_some());
    let computed: Vec<(Wanted, Result<FileMetrics, String>)> = pool.install(|| {
        missing
            .into_par_iter()
            .map(|w| {
                let m = measure(&root.join(&w.rel), w.lang);
                (w, m)
            })
            .collect()
    })?;
    let mut out: Vec<Measured> = cached
        .into_iter()
        .filter_map(|w| {
            let metrics = w.cached?;
            Some(Measured { rel: w.rel, lang: w.lang, metrics })
        })
        .collect();
    let mut errors = Vec::new();
    let mut fresh = Vec::new();
    for (w, m) in computed {
        match m {
            Ok(m) => {
                let metrics = Arc::new(m);
                fresh.push((w.rel.clone(), w.mtime_ns, w.bytes, metrics.clone()));
                out.push(Measured { rel: w.rel, lang: w.lang, metrics });
            }
            Err(e) => errors.push(format!("{}: {e}", w.rel)),
        }
    }
    if !fresh.is_empty() {
        repos.with_index_mut(repo, |index| {
            for (rel, mtime, bytes, m) in fresh {
                if let Some(e) = index.files.get_mut(&rel) {
                    if e.mtime_ns == mtime && e.bytes == bytes && e.metrics.is_none() {
                        e.metrics = Some(m);
                    }
                }
            }
            Ok(())
        })?;
    }
    Ok((out, errors))
}

/// `code.metrics {repo, path?, limit?}`.
/// `cancelled`: the client left or the plugin is stopping (checked around the measuring and
/// while `git` runs, which is then killed).
pub fn answer(
    repos: &Repos,
    pool: &Pool,
    churn_commits: u32,
    req: &api::CodeMetrics,
    cancelled: &dyn Fn() -> bool,
) -> Result<Response, Error> {
    let limit = req.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad_request(format!("limit {limit}: use 1 to {MAX_LIMIT}")));
    }
    let (root, wanted): (PathBuf, Vec<Wanted>) = repos.with_index(&req.repo, |index| {
        let pick = |rel: &String, e: &crate::index::FileEntry| {
            e.lang.map(|lang| Wanted {
                rel: rel.clone(),
                lang,
                cached: e.metrics.clone(),
                mtime_ns: e.mtime_ns,
                bytes: e.bytes,
            })
        };
        let wanted = match &req.path {
            Some(path) => {
                let rel = path.trim_start_matches("./").to_string();
                let Some(e) = index.files.get(&rel) else {
                    return Err(Error::not_found(format!(
                        "{path:?} is not a file of repository {} (paths are relative to its \
                         root, with / separators)",
                        req.repo
                    )));
                };
                let Some(w) = pick(&rel, e) else {
                    let names: Vec<&str> = Lang::ALL.iter().map(|l| l.name()).collect();
                    return Err(Error::bad_request(format!(
                        "{path:?}: no metrics for this kind of file; the languages measured: {}",
                        names.join(", ")
                    )));
                };
                vec![w]
            }
            None => index.files.iter().filter_map(|(rel, e)| pick(rel, e)).collect(),
        };
        Ok((index.root.clone(), wanted))
    })?;
    let (measured, errors) = metrics_of(repos, pool, &req.repo, wanted, &root)?;
    if cancelled() {
        return Err(Error::cancelled());
    }

    if let Some(path) = &req.path {
        let Some(Measured { rel, lang, metrics: m }) = measured.into_iter().next() else {
            return Err(Error::not_found(format!(
                "{path:?} in repository {}: {}",
                req.repo,
                errors.join("; ")
            )));
        };
        return Response::json(&api::FileMetricsAnswer {
            path: rel,
            language: lang,
            functions: m.functions.clone(),
            cyclomatic: m.cyclomatic,
            cognitive: m.cognitive,
            max_cyclomatic: m.max_cyclomatic,
        });
    }

    let mut totals = api::MetricsTotals::default();
    let mut files: Vec<api::FileComplexity> = measured
        .iter()
        .map(|Measured { rel, lang, metrics: m }| {
            totals.files += 1;
            totals.functions += m.functions.len();
            totals.cyclomatic += u64::from(m.cyclomatic);
            totals.cognitive += u64::from(m.cognitive);
            api::FileComplexity {
                path: rel.clone(),
                language: *lang,
                functions: m.functions.len(),
                cyclomatic: m.cyclomatic,
                cognitive: m.cognitive,
                max_cyclomatic: m.max_cyclomatic,
            }
        })
        .collect();
    files.sort_by(|a, b| b.cyclomatic.cmp(&a.cyclomatic).then_with(|| a.path.cmp(&b.path)));
    let truncated = files.len() > limit;
    files.truncate(limit);

    let churn = churn::read(&root, churn_commits, CHURN_TIMEOUT, cancelled);
    if churn.as_ref().is_err_and(|e| e == churn::CANCELLED) {
        return Err(Error::cancelled());
    }
    let (hotspots, commits, churn_error) = match churn {
        Ok(churn) => {
            let mut hot: Vec<api::Hotspot> = measured
                .iter()
                .filter_map(|Measured { rel, metrics: m, .. }| {
                    let c = *churn.files.get(rel)?;
                    let score = churn::score(c, m.cyclomatic);
                    (score > 0).then(|| api::Hotspot {
                        path: rel.clone(),
                        churn: c,
                        complexity: m.cyclomatic,
                        score,
                    })
                })
                .collect();
            hot.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.path.cmp(&b.path)));
            hot.truncate(limit);
            (hot, churn.commits, None)
        }
        Err(e) => (Vec::new(), 0, Some(e)),
    };
    Response::json(&api::RepoMetricsAnswer {
        files,
        truncated,
        totals,
        hotspots,
        churn_commits: commits,
        churn_error,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(lang: Lang, src: &str, name: &str) -> FnMetrics {
        let m = analyze(lang, src.as_bytes()).unwrap();
        m.functions
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not among {:?}", m.functions))
    }

    fn cog(lang: Lang, src: &str, name: &str) -> u32 {
        one(lang, src, name).cognitive
    }

    // The examples of G. Ann Campbell, "Cognitive Complexity: A new way of measuring
    // understandability", SonarSource, version 1.4 (2018), written out with the scores the
    // paper gives.

    /// Figure 1 and section "Nesting" examples: sumOfPrimes 7, getWords 1 (both cyclomatic 4).
    const SUM_OF_PRIMES_JAVA: &str = r#"
class A {
  int sumOfPrimes(int max) {
    int total = 0;
    OUT: for (int i = 1; i <= max; ++i) {
      for (int j = 2; j < i; ++j) {
        if (i % j == 0) {
          continue OUT;
        }
      }
      total += i;
    }
    return total;
  }

  String getWords(int number) {
    switch (number) {
      case 1:
        return "one";
      case 2:
        return "a couple";
      case 3:
        return "a few";
      default:
        return "lots";
    }
  }
}
"#;

    fn m(f: &FnMetrics) -> (u32, u32, u32, u32) {
        (f.cyclomatic, f.cognitive, f.params, f.exits)
    }

    #[test]
    fn go_receivers_multi_name_params_switch_cases_and_function_literals() {
        let src = r#"
package p

func (s *Server) Handle(a, b int, rest ...string) (int, error) {
	if a > 0 && b > 0 {
		return 1, nil
	} else if a < 0 {
		return 2, nil
	}
	for i := 0; i < b; i++ {
		switch i {
		case 1, 2:
			continue
		case 3:
			break
		default:
		}
	}
	f := func() int {
		if a == b {
			return 1
		}
		return 0
	}
	return f(), nil
}
"#;
        let f = one(Lang::Go, src, "Handle");
        assert_eq!(f.parent.as_deref(), Some("Server"));
        // if && else-if for case case (lambda) if
        assert_eq!(m(&f), (8, 8, 3, 3));
    }

    #[test]
    fn javascript_methods_named_arrows_folded_callbacks_and_coalescing() {
        let src = r#"
class Box {
  open(x, {y}, ...rest) {
    try {
      if (x ?? y) { return 1; }
    } catch (e) {
      throw e;
    }
    const h = (v) => v ? 1 : 2;
    items.forEach((i) => { while (i) { i--; } });
    return x || y || 0;
  }
}
"#;
        let f = one(Lang::JavaScript, src, "open");
        assert_eq!(f.parent.as_deref(), Some("Box"));
        // if ?? catch while(folded) || ||; cognitive: if catch while(+1 nesting) ||-run
        assert_eq!(m(&f), (7, 5, 3, 3));
        let h = one(Lang::JavaScript, src, "h");
        assert_eq!(h.parent.as_deref(), Some("open"));
        assert_eq!(m(&h), (2, 1, 1, 1));
        let ts = "function f(a: number, b?: string): number { switch (a) { case 1: return 1; default: return 0; } }";
        assert_eq!(m(&one(Lang::TypeScript, ts, "f")), (2, 1, 2, 3));
        assert_eq!(m(&one(Lang::Tsx, ts, "f")), (2, 1, 2, 3));
    }

    #[test]
    fn c_and_cpp_declarators_lambdas_and_catch() {
        let c = r#"
static int f(void) { return 0; }
int *g(int a, char **b) {
  do { a--; } while (a > 0 && b);
  switch (a) { case 0: break; case 1: a++; break; default: break; }
  return a ? b[0] : 0;
}
"#;
        assert_eq!(m(&one(Lang::C, c, "f")), (1, 0, 0, 1));
        // do && case case ?:
        assert_eq!(m(&one(Lang::C, c, "g")), (6, 4, 2, 1));
        let cpp = r#"
namespace n {
class Widget {
 public:
  int size(int x) const {
    auto f = [&](int y) { return y > 0 ? y : -y; };
    for (int v : items) { if (v == x || v == -x) return f(v); }
    try { run(); } catch (const std::exception& e) { throw; }
    return 0;
  }
};
}
int Widget::count() { return 1; }
"#;
        let size = one(Lang::Cpp, cpp, "size");
        assert_eq!(size.parent.as_deref(), Some("Widget"));
        // ?: (in the lambda, nesting 1) for if || catch
        assert_eq!(m(&size), (6, 7, 1, 3));
        assert_eq!(m(&one(Lang::Cpp, cpp, "Widget::count")), (1, 0, 0, 1));
    }

    #[test]
    fn ruby_modifiers_case_when_blocks_rescue_and_raise() {
        let src = r#"
class Shop
  def self.price(item, qty = 1, *rest, **opts, &blk)
    raise ArgumentError, "no item" unless item
    total = case item.kind
            when :book then 10
            when :pen, :pencil then 2
            else 0
            end
    items.each do |i|
      total += 1 if i && qty > 0
    end
    begin
      compute
    rescue StandardError => e
      return 0
    end
    total > 100 ? total : total * qty
  end
end
"#;
        let f = one(Lang::Ruby, src, "price");
        assert_eq!(f.parent.as_deref(), Some("Shop"));
        // unless when when if && rescue ?:
        assert_eq!(m(&f), (8, 7, 5, 3));
    }

    #[test]
    fn csharp_accessors_switch_expressions_and_coalescing() {
        let src = r#"
class Account {
    public int Balance { get { return x > 0 ? x : 0; } }
    public string Kind(int v) => v switch { 1 => "one", 2 => "two", _ => "many" };
    public void Run(int a, int[] b) {
        foreach (var i in b) { if (i > 0 || a == 1) continue; }
        var s = name ?? "none";
        try { Go(); } catch (IOException e) { throw; }
    }
}
"#;
        let get = one(Lang::CSharp, src, "Balance.get");
        assert_eq!(get.parent.as_deref(), Some("Balance"));
        assert_eq!(m(&get), (2, 1, 0, 1));
        assert_eq!(m(&one(Lang::CSharp, src, "Kind")), (3, 1, 1, 1));
        // foreach if || ?? catch
        assert_eq!(m(&one(Lang::CSharp, src, "Run")), (6, 5, 2, 2));
    }

    #[test]
    fn file_totals_sum_the_functions_and_nothing_outside_them_counts() {
        let src = "x = 1 if a else 2\n\ndef f(a):\n    return a and b\n\ndef g():\n    if a:\n        pass\n";
        let fm = analyze(Lang::Python, src.as_bytes()).unwrap();
        assert_eq!(fm.functions.len(), 2);
        assert_eq!((fm.cyclomatic, fm.cognitive, fm.max_cyclomatic), (4, 2, 2));
        assert_eq!(
            (fm.functions[0].line, fm.functions[0].end_line, fm.functions[0].lines),
            (3, 4, 2)
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // 20000 nested ifs and a 20000-term boolean chain: the walk is iterative.
        let mut src = String::from("fn deep() {\n");
        for _ in 0..20_000 {
            src.push_str("if a {");
        }
        src.push_str(&"}".repeat(20_000));
        src.push_str("\nlet x = a");
        src.push_str(&" && a".repeat(20_000));
        src.push_str(";\n}\n");
        let f = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || analyze(Lang::Rust, src.as_bytes()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(f.functions[0].cyclomatic, 1 + 20_000 + 20_000);
    }

    #[test]
    fn paper_figure_1_sum_of_primes_and_get_words() {
        let s = one(Lang::Java, SUM_OF_PRIMES_JAVA, "sumOfPrimes");
        assert_eq!((s.cognitive, s.cyclomatic), (7, 4));
        assert_eq!(s.parent.as_deref(), Some("A"));
        assert_eq!((s.params, s.exits), (1, 1));
        let w = one(Lang::Java, SUM_OF_PRIMES_JAVA, "getWords");
        assert_eq!((w.cognitive, w.cyclomatic), (1, 4));
        // four returns; the switch is the last statement, so the end counts too
        assert_eq!(w.exits, 5);
    }

    /// "Increments" / "Nesting": a try whose catch nests, 9; a lambda adds nesting, 2.
    const NESTING_JAVA: &str = r#"
class B {
  void myMethod() {
    try {
      if (condition1) { // +1
        for (int i = 0; i < 10; i++) { // +2 (nesting=1)
          while (condition2) { work(); } // +3 (nesting=2)
        }
      }
    } catch (ExcepType1 | ExcepType2 e) { // +1
      if (condition2) { work(); } // +2 (nesting=1)
    }
  }

  void myMethod2() {
    Runnable r = () -> { // +0 (but nesting level is now 1)
      if (condition1) { work(); } // +2 (nesting=1)
    };
  }
}
"#;

    #[test]
    fn paper_nesting_examples() {
        assert_eq!(cog(Lang::Java, NESTING_JAVA, "myMethod"), 9);
        assert_eq!(cog(Lang::Java, NESTING_JAVA, "myMethod2"), 2);
    }

    /// "Sequences of logical operators": `a && b && c || d || e && f` is 3 besides the if,
    /// `a && !(b && c)` 2.
    #[test]
    fn paper_boolean_operator_sequences() {
        let src = r#"
class C {
  void m1() { if (a && b && c || d || e && f) { x(); } }
  void m2() { if (a && !(b && c)) { x(); } }
  void m3() { if (a && (b && c)) { x(); } }
}
"#;
        assert_eq!(cog(Lang::Java, src, "m1"), 1 + 3);
        assert_eq!(cog(Lang::Java, src, "m2"), 1 + 2);
        // parentheses alone do not break a sequence
        assert_eq!(cog(Lang::Java, src, "m3"), 1 + 1);
        assert_eq!(one(Lang::Java, src, "m1").cyclomatic, 1 + 1 + 5);
    }

    /// Appendix C: overriddenSymbolFrom 19, addVersion 35, toRegexp 20 (sonar-java code).
    const APPENDIX_C_JAVA: &str = r#"
class MethodJavaSymbol {
  @Nullable
  private MethodJavaSymbol overriddenSymbolFrom(ClassJavaType classType) {
    if (classType.isUnknown()) { // +1
      return Symbols.unknownMethodSymbol;
    }
    boolean unknownFound = false;
    List<JavaSymbol> symbols = classType.getSymbol().members().lookup(name);
    for (JavaSymbol overrideSymbol : symbols) { // +1
      if (overrideSymbol.isKind(JavaSymbol.MTH) // +2 (nesting = 1)
          && !overrideSymbol.isStatic()) { // +1
        MethodJavaSymbol methodJavaSymbol = (MethodJavaSymbol)overrideSymbol;
        if (canOverride(methodJavaSymbol)) { // +3 (nesting = 2)
          Boolean overriding = checkOverridingParameters(methodJavaSymbol, classType);
          if (overriding == null) { // +4 (nesting = 3)
            if (!unknownFound) { // +5 (nesting = 4)
              unknownFound = true;
            }
          } else if (overriding) { // +1
            return methodJavaSymbol;
          }
        }
      }
    }
    if (unknownFound) { // +1
      return Symbols.unknownMethodSymbol;
    }
    return null;
  } // total complexity = 19

  private void addVersion(final Entry entry, final Transaction txn)
      throws PersistitInterruptedException, RollbackException {
    final TransactionIndex ti = _persistit.getTransactionIndex();
    while (true) { // +1
      try {
        synchronized (this) {
          if (frst != null) { // +2 (nesting = 1)
            if (frst.getVersion() > entry.getVersion()) { // +3 (nesting = 2)
              throw new RollbackException();
            }
            if (txn.isActive()) { // +3 (nesting = 2)
              for // +4 (nesting = 3)
                  (Entry e = frst; e != null; e = e.getPrevious()) {
                final long version = e.getVersion();
                final long depends = ti.wwDependency(version,
                    txn.getTransactionStatus(), 0);
                if (depends == TIMED_OUT) { // +5 (nesting = 4)
                  throw new WWRetryException(version);
                }
                if (depends != 0 // +5 (nesting = 4)
                    && depends != ABORTED) { // +1
                  throw new RollbackException();
                }
              }
            }
          }
          entry.setPrevious(frst);
          frst = entry;
          break;
        }
      } catch (final WWRetryException re) { // +2 (nesting = 1)
        try {
          final long depends = _persistit.getTransactionIndex()
              .wwDependency(re.getVersionHandle(),txn.getTransactionStatus(),
                  SharedResourcePool.DEFAULT_MAX_WAIT_TIME);
          if (depends != 0 // +3 (nesting = 2)
              && depends != ABORTED) { // +1
            throw new RollbackException();
          }
        } catch (final InterruptedException ie) { // +3 (nesting = 2)
          throw new PersistitInterruptedException(ie);
        }
      } catch (final InterruptedException ie) { // +2 (nesting = 1)
        throw new PersistitInterruptedException(ie);
      }
    }
  } // total complexity = 35

  private static String toRegexp(String antPattern, String directorySeparator) {
    final String escapedDirectorySeparator = '\\' + directorySeparator;
    final StringBuilder sb = new StringBuilder(antPattern.length());
    sb.append('^');
    int i = antPattern.startsWith("/") || // +1
        antPattern.startsWith("\\") ? 1 : 0; // +1
    while (i < antPattern.length()) { // +1
      final char ch = antPattern.charAt(i);
      if (SPECIAL_CHARS.indexOf(ch) != -1) { // +2 (nesting = 1)
        sb.append('\\').append(ch);
      } else if (ch == '*') { // +1
        if (i + 1 < antPattern.length() // +3 (nesting = 2)
            && antPattern.charAt(i + 1) == '*') { // +1
          if (i + 2 < antPattern.length() // +4 (nesting = 3)
              && isSlash(antPattern.charAt(i + 2))) { // +1
            sb.append("(?:.*")
                .append(escapedDirectorySeparator).append("|)");
            i += 2;
          } else { // +1
            sb.append(".*");
            i += 1;
          }
        } else { // +1
          sb.append("[^").append(escapedDirectorySeparator).append("]*?");
        }
      } else if (ch == '?') { // +1
        sb.append("[^").append(escapedDirectorySeparator).append("]");
      } else if (isSlash(ch)) { // +1
        sb.append(escapedDirectorySeparator);
      } else { // +1
        sb.append(ch);
      }
      i++;
    }
    sb.append('$');
    return sb.toString();
  } // total complexity = 20
}
"#;

    #[test]
    fn paper_appendix_c_java() {
        assert_eq!(cog(Lang::Java, APPENDIX_C_JAVA, "overriddenSymbolFrom"), 19);
        assert_eq!(cog(Lang::Java, APPENDIX_C_JAVA, "addVersion"), 35);
        assert_eq!(cog(Lang::Java, APPENDIX_C_JAVA, "toRegexp"), 20);
        let o = one(Lang::Java, APPENDIX_C_JAVA, "overriddenSymbolFrom");
        // if, for, if, &&, if, if, if, else-if, if
        assert_eq!(o.cyclomatic, 1 + 9);
        // four returns, the last one ends the body
        assert_eq!(o.exits, 4);
        let a = one(Lang::Java, APPENDIX_C_JAVA, "addVersion");
        // six throws; the loop ends the body, so its end counts too
        assert_eq!((a.params, a.exits), (2, 6 + 1));
    }

    /// The paper's examples in Python: the same structures give the same scores.
    const PAPER_PYTHON: &str = r#"
def sum_of_primes(max):
    total = 0
    for i in range(1, max + 1):        # +1
        for j in range(2, i):          # +2
            if i % j == 0:             # +3
                break
        total += i
    return total

def get_words(number):
    match number:                      # +1
        case 1:
            return "one"
        case 2:
            return "a couple"
        case 3:
            return "a few"
        case _:
            return "lots"

def my_method():
    try:
        if condition1:                 # +1
            for i in range(10):        # +2
                while condition2:      # +3
                    pass
    except (ExcepType1, ExcepType2):   # +1
        if condition2:                 # +2
            pass

def my_method2():
    r = lambda: 1 if condition1 else 2 # lambda nests: ternary +2
    return r

def sequences():
    if a and b and c or d or e and f:  # +1 +3
        pass
    if a and not (b and c):            # +1 +2
        pass

def to_regexp(ant_pattern, directory_separator):
    escaped = '\\' + directory_separator
    sb = ['^']
    i = 1 if ant_pattern.startswith("/") or ant_pattern.startswith("\\") else 0  # +1 +1
    while i < len(ant_pattern):                       # +1
        ch = ant_pattern[i]
        if ch in SPECIAL_CHARS:                       # +2
            sb.append('\\' + ch)
        elif ch == '*':                               # +1
            if i + 1 < len(ant_pattern) and ant_pattern[i + 1] == '*':   # +3 +1
                if i + 2 < len(ant_pattern) and is_slash(ant_pattern[i + 2]):  # +4 +1
                    sb.append("(?:.*" + escaped + "|)")
                    i += 2
                else:                                 # +1
                    sb.append(".*")
                    i += 1
            else:                                     # +1
                sb.append("[^" + escaped + "]*?")
        elif ch == '?':                               # +1
            sb.append("[^" + escaped + "]")
        elif is_slash(ch):                            # +1
            sb.append(escaped)
        else:                                         # +1
            sb.append(ch)
        i += 1
    sb.append('$')
    return ''.join(sb)
"#;

    #[test]
    fn paper_examples_in_python() {
        // `break` for the labelled `continue OUT` (Python has no labels): 7 - 1
        assert_eq!(cog(Lang::Python, PAPER_PYTHON, "sum_of_primes"), 6);
        let w = one(Lang::Python, PAPER_PYTHON, "get_words");
        assert_eq!((w.cognitive, w.cyclomatic, w.exits), (1, 4, 5));
        assert_eq!(cog(Lang::Python, PAPER_PYTHON, "my_method"), 9);
        assert_eq!(cog(Lang::Python, PAPER_PYTHON, "my_method2"), 2);
        assert_eq!(cog(Lang::Python, PAPER_PYTHON, "sequences"), 4 + 3);
        assert_eq!(cog(Lang::Python, PAPER_PYTHON, "to_regexp"), 20);
        let t = one(Lang::Python, PAPER_PYTHON, "to_regexp");
        assert_eq!((t.params, t.exits), (2, 1));
    }

    /// The paper's examples in Rust (a labelled `continue` exists; `match` is its switch).
    const PAPER_RUST: &str = r#"
fn sum_of_primes(max: u64) -> u64 {
    let mut total = 0;
    'out: for i in 1..=max {          // +1
        for j in 2..i {               // +2
            if i % j == 0 {           // +3
                continue 'out;        // +1
            }
        }
        total += i;
    }
    total
}

fn get_words(number: u32) -> &'static str {
    match number {                    // +1
        1 => "one",
        2 => "a couple",
        3 => "a few",
        _ => "lots",
    }
}

fn my_method2() {
    let r = || {                      // nesting 1
        if condition1() {             // +2
            work();
        }
    };
    r();
}

impl Matcher {
    fn overridden(&self, class_type: &Type) -> Option<Symbol> {
        if class_type.is_unknown() {                           // +1
            return None;
        }
        let mut unknown_found = false;
        for s in class_type.members() {                        // +1
            if s.is_method() && !s.is_static() {               // +2 +1
                if can_override(s) {                           // +3
                    let overriding = check(s, class_type)?;
                    if overriding.is_none() {                  // +4
                        if !unknown_found {                    // +5
                            unknown_found = true;
                        }
                    } else if overriding == Some(true) {       // +1
                        return Some(s.clone());
                    }
                }
            }
        }
        if unknown_found {                                     // +1
            return None;
        }
        None
    }
}
"#;

    #[test]
    fn paper_examples_in_rust() {
        let s = one(Lang::Rust, PAPER_RUST, "sum_of_primes");
        assert_eq!((s.cognitive, s.cyclomatic, s.exits), (7, 4, 1));
        let w = one(Lang::Rust, PAPER_RUST, "get_words");
        // four arms of an exhaustive match: three decisions
        assert_eq!((w.cognitive, w.cyclomatic), (1, 4));
        assert_eq!(cog(Lang::Rust, PAPER_RUST, "my_method2"), 2);
        let o = one(Lang::Rust, PAPER_RUST, "overridden");
        assert_eq!(o.cognitive, 19);
        assert_eq!(o.parent.as_deref(), Some("Matcher"));
        // `?` is one more decision and one more exit
        assert_eq!(o.cyclomatic, 1 + 9 + 1);
        assert_eq!((o.params, o.exits), (2, 3 + 1 + 1));
    }
}
