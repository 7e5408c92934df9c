//! Metadata filters: `{"field": value}` equality, `{"field": {"$in": [..]}}`, `$ne`,
//! `$gt`/`$gte`/`$lt`/`$lte` on numbers, `{"$and": [..]}`, `{"$or": [..]}`, `{"$not": f}`;
//! several keys in one object are all required.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Eq(String, Value),
    Ne(String, Value),
    In(String, Vec<Value>),
    Cmp(String, Cmp, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

fn scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn list(op: &str, v: &Value) -> Result<Vec<Filter>, String> {
    let items = v.as_array().ok_or_else(|| format!("{op} takes an array of filters, not {v}"))?;
    if items.is_empty() {
        return Err(format!("{op} takes at least one filter"));
    }
    items.iter().map(parse).collect()
}

/// Parse a filter; the error names what is wrong.
pub fn parse(v: &Value) -> Result<Filter, String> {
    let obj = v.as_object().ok_or_else(|| format!("a filter is a JSON object, not {v}"))?;
    if obj.is_empty() {
        return Err("a filter object needs at least one key".into());
    }
    let mut all = Vec::new();
    for (key, value) in obj {
        all.push(match key.as_str() {
            "$and" => Filter::All(list("$and", value)?),
            "$or" => Filter::Any(list("$or", value)?),
            "$not" => Filter::Not(Box::new(parse(value)?)),
            k if k.starts_with('$') => {
                return Err(format!("unknown filter operator {k} (use $and, $or or $not)"))
            }
            field => condition(field, value)?,
        });
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Filter::All(all) })
}

fn condition(field: &str, v: &Value) -> Result<Filter, String> {
    let ops = match v {
        v if scalar(v) => return Ok(Filter::Eq(field.into(), v.clone())),
        Value::Object(ops) if !ops.is_empty() => ops,
        other => {
            return Err(format!(
                "field {field}: compare with a string, number or boolean, or an operator object \
                 ($in, $ne, $gt, $gte, $lt, $lte), not {other}"
            ))
        }
    };
    let mut all = Vec::new();
    for (op, arg) in ops {
        let cmp = match op.as_str() {
            "$in" => {
                let items = arg.as_array().filter(|a| a.iter().all(scalar)).ok_or_else(|| {
                    format!("field {field}: $in takes an array of values, not {arg}")
                })?;
                all.push(Filter::In(field.into(), items.clone()));
                continue;
            }
            "$ne" | "$eq" if scalar(arg) => {
                all.push(if op == "$ne" {
                    Filter::Ne(field.into(), arg.clone())
                } else {
                    Filter::Eq(field.into(), arg.clone())
                });
                continue;
            }
            "$ne" | "$eq" => return Err(format!("field {field}: {op} takes a value, not {arg}")),
            "$gt" => Cmp::Gt,
            "$gte" => Cmp::Gte,
            "$lt" => Cmp::Lt,
            "$lte" => Cmp::Lte,
            other => {
                return Err(format!(
                    "field {field}: unknown operator {other} (use $in, $ne, $gt, $gte, $lt, $lte)"
                ))
            }
        };
        let n =
            arg.as_f64().ok_or_else(|| format!("field {field}: {op} takes a number, not {arg}"))?;
        all.push(Filter::Cmp(field.into(), cmp, n));
    }
    Ok(if all.len() == 1 { all.remove(0) } else { Filter::All(all) })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl Filter {
    /// Does a document with this metadata pass?
    pub fn matches(&self, meta: &Map<String, Value>) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.matches(meta)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(meta)),
            Filter::Not(f) => !f.matches(meta),
            Filter::Eq(k, v) => meta.get(k).is_some_and(|m| same(m, v)),
            Filter::Ne(k, v) => !meta.get(k).is_some_and(|m| same(m, v)),
            Filter::In(k, vs) => meta.get(k).is_some_and(|m| vs.iter().any(|v| same(m, v))),
            Filter::Cmp(k, cmp, n) => {
                meta.get(k).and_then(Value::as_f64).is_some_and(|m| match cmp {
                    Cmp::Gt => m > *n,
                    Cmp::Gte => m >= *n,
                    Cmp::Lt => m < *n,
                    Cmp::Lte => m <= *n,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn check(filter: Value, doc: Value) -> bool {
        parse(&filter).unwrap().matches(&meta(doc))
    }

    #[test]
    fn equality_in_ne_and_ranges() {
        let doc = json!({ "lang": "en", "year": 2007, "draft": false });
        assert!(check(json!({ "lang": "en" }), doc.clone()));
        assert!(!check(json!({ "lang": "de" }), doc.clone()));
        assert!(check(json!({ "year": 2007.0 }), doc.clone()), "numbers compare as numbers");
        assert!(check(json!({ "draft": false }), doc.clone()));
        assert!(check(json!({ "lang": { "$in": ["de", "en"] } }), doc.clone()));
        assert!(!check(json!({ "lang": { "$in": ["de"] } }), doc.clone()));
        assert!(check(json!({ "lang": { "$ne": "de" } }), doc.clone()));
        assert!(check(json!({ "missing": { "$ne": "x" } }), doc.clone()));
        assert!(check(json!({ "year": { "$gte": 2007, "$lt": 2008 } }), doc.clone()));
        assert!(!check(json!({ "year": { "$gt": 2007 } }), doc.clone()));
        assert!(check(json!({ "year": { "$lte": 2007 } }), doc.clone()));
        assert!(!check(json!({ "lang": { "$gt": 1 } }), doc.clone()), "a string is no number");
        assert!(!check(json!({ "missing": 1 }), doc.clone()));
    }

    #[test]
    fn and_or_not_and_several_keys() {
        let doc = json!({ "lang": "en", "year": 2007 });
        assert!(check(json!({ "lang": "en", "year": 2007 }), doc.clone()));
        assert!(!check(json!({ "lang": "en", "year": 1991 }), doc.clone()));
        assert!(check(json!({ "$or": [{ "year": 1991 }, { "lang": "en" }] }), doc.clone()));
        assert!(!check(json!({ "$and": [{ "year": 1991 }, { "lang": "en" }] }), doc.clone()));
        assert!(check(json!({ "$not": { "year": 1991 } }), doc.clone()));
        assert!(!check(json!({ "$not": { "$or": [{ "lang": "en" }] } }), doc.clone()));
    }

    #[test]
    fn malformed_filters_name_the_problem() {
        let cases = [
            (json!([1]), "JSON object"),
            (json!({}), "at least one key"),
            (json!({ "$xor": [] }), "$xor"),
            (json!({ "$and": {} }), "array"),
            (json!({ "$or": [] }), "at least one"),
            (json!({ "lang": { "$like": "e%" } }), "$like"),
            (json!({ "year": { "$gt": "2000" } }), "number"),
            (json!({ "lang": { "$in": "en" } }), "$in"),
            (json!({ "lang": null }), "field lang"),
            (json!({ "lang": [1, 2] }), "field lang"),
            (json!({ "$not": 3 }), "JSON object"),
        ];
        for (filter, needle) in cases {
            let e = parse(&filter).expect_err(&filter.to_string());
            assert!(e.contains(needle), "{filter}: {e}");
        }
    }
}
