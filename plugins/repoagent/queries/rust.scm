; repoagent's Rust definitions and references. Captures: @def.<kind> on the definition's node,
; @name on its name, @parent (optional) overrides the enclosing definition's name, @body
; (optional) marks where the signature ends; @ref.call / @ref.type / @ref.other on a reference.
; A function whose enclosing definition is an impl or a trait becomes a method.

(function_item name: (identifier) @name) @def.function
(function_signature_item name: (identifier) @name) @def.function
(struct_item name: (type_identifier) @name) @def.struct
(enum_item name: (type_identifier) @name) @def.enum
(union_item name: (type_identifier) @name) @def.union
(type_item name: (type_identifier) @name) @def.type
(associated_type name: (type_identifier) @name) @def.type
(trait_item name: (type_identifier) @name) @def.trait
(mod_item name: (identifier) @name) @def.module
(macro_definition name: (identifier) @name) @def.macro
(const_item name: (identifier) @name) @def.constant
(static_item name: (identifier) @name) @def.static
(field_declaration name: (field_identifier) @name) @def.field
(enum_variant name: (identifier) @name) @def.variant
(impl_item
  type: [
    (type_identifier) @name
    (primitive_type) @name
    (scoped_type_identifier name: (type_identifier) @name)
    (generic_type type: [
      (type_identifier) @name
      (scoped_type_identifier name: (type_identifier) @name)])
    (array_type element: [(type_identifier) @name (primitive_type) @name])
    (reference_type type: [
      (type_identifier) @name
      (primitive_type) @name
      (generic_type type: (type_identifier) @name)])
  ]) @def.impl
; Any other type (tuples, arrays, references to arrays, fn pointers): named by its text.
(impl_item type: (_) @name) @def.impl

; references
(call_expression function: (identifier) @ref.call)
(call_expression function: (field_expression field: (field_identifier) @ref.call))
(call_expression function: (scoped_identifier name: (identifier) @ref.call))
(call_expression function: (generic_function function: [
  (identifier) @ref.call
  (scoped_identifier name: (identifier) @ref.call)
  (field_expression field: (field_identifier) @ref.call)]))
(macro_invocation macro: [
  (identifier) @ref.call
  (scoped_identifier name: (identifier) @ref.call)])
(type_identifier) @ref.type
