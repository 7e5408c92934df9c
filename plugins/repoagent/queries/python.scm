; repoagent's Python definitions and references (captures: see rust.scm). A function whose
; enclosing definition is a class becomes a method.

(class_definition name: (identifier) @name) @def.class
(function_definition name: (identifier) @name) @def.function
(expression_statement (assignment left: (identifier) @name right: (lambda)) @def.function)
; Assignments outside functions: in a class a field, elsewhere a variable (also inside
; module-level `if`/`try` blocks); in a function a local, dropped.
(expression_statement (assignment left: (identifier) @name) @def.variable)
(expression_statement (assignment left: (pattern_list (identifier) @name)) @def.variable)

; references
(call function: (identifier) @ref.call)
(call function: (attribute attribute: (identifier) @ref.call))
(class_definition superclasses: (argument_list [
  (identifier) @ref.type
  (attribute attribute: (identifier) @ref.type)]))
(type (identifier) @ref.type)
(type (attribute attribute: (identifier) @ref.type))
(type (generic_type (identifier) @ref.type))
(decorator (identifier) @ref.call)
(decorator (attribute attribute: (identifier) @ref.call))
