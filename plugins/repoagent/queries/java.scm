; repoagent's Java definitions and references (captures: see rust.scm).

(class_declaration name: (identifier) @name) @def.class
(record_declaration name: (identifier) @name) @def.class
(interface_declaration name: (identifier) @name) @def.interface
(annotation_type_declaration name: (identifier) @name) @def.interface
(enum_declaration name: (identifier) @name) @def.enum
(enum_constant name: (identifier) @name) @def.variant
(method_declaration name: (identifier) @name) @def.method
(constructor_declaration name: (identifier) @name) @def.constructor
(field_declaration declarator: (variable_declarator name: (identifier) @name)) @def.field
(constant_declaration declarator: (variable_declarator name: (identifier) @name)) @def.constant
(package_declaration [(identifier) (scoped_identifier)] @name) @def.module

; references
(method_invocation name: (identifier) @ref.call)
(object_creation_expression type: (type_identifier) @ref.type)
(type_identifier) @ref.type
