//! Validation of plugin configs against the JSON Schema a plugin declares.

use serde::Serialize;

/// One way a value fails its schema.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// JSON Pointer to the failing value ("" for the whole document).
    pub path: String,
    pub message: String,
}

/// Why a config cannot be checked or was found invalid.
#[derive(Debug)]
pub enum Invalid {
    /// The plugin's schema itself is broken.
    Schema(String),
    Fields(Vec<FieldError>),
}

/// Check `value` against `schema`, collecting every failure.
pub fn check(schema: &serde_json::Value, value: &serde_json::Value) -> Result<(), Invalid> {
    let validator =
        jsonschema::validator_for(schema).map_err(|e| Invalid::Schema(e.to_string()))?;
    let errors: Vec<FieldError> = validator
        .iter_errors(value)
        .map(|e| FieldError { path: e.instance_path().to_string(), message: e.to_string() })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Invalid::Fields(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "greeting": { "type": "string", "maxLength": 5 },
                "repeat": { "type": "integer", "minimum": 1 }
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_config_passes() {
        assert!(check(&schema(), &json!({ "greeting": "hi", "repeat": 2 })).is_ok());
    }

    #[test]
    fn every_failing_path_is_reported() {
        let Err(Invalid::Fields(errors)) =
            check(&schema(), &json!({ "greeting": "too long", "repeat": 0, "x": 1 }))
        else {
            panic!("expected field errors");
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"/greeting"), "{errors:?}");
        assert!(paths.contains(&"/repeat"), "{errors:?}");
        assert!(paths.contains(&""), "additionalProperties is reported at the root: {errors:?}");
    }

    #[test]
    fn a_broken_schema_is_its_own_error() {
        assert!(matches!(check(&json!({ "type": 12 }), &json!({})), Err(Invalid::Schema(_))));
    }
}
