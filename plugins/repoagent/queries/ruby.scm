; repoagent's Ruby definitions and references (captures: see rust.scm). `def` in a class or
; module is a method; `def self.x` too.

(method name: (_) @name) @def.function
(singleton_method name: (_) @name) @def.method
(class name: [(constant) @name (scope_resolution name: (_) @name)]) @def.class
(module name: [(constant) @name (scope_resolution name: (_) @name)]) @def.module
(assignment left: (constant) @name) @def.constant

; references
(call method: (identifier) @ref.call)
(superclass (constant) @ref.type)
(scope_resolution name: (constant) @ref.type)
