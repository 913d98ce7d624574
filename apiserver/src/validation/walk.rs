//! Walks an object alongside its schema: types, formats, enums, required fields, unknown
//! fields, int-or-string and quantity values. Paths are built as kube prints them:
//! `.` between properties, `[i]` for list items, `[key]` for map entries.

use serde_json::Value;

use super::schema::Schemas;
use super::{FieldError, FieldErrorReason, FieldValidation};

/// Deepest nesting followed; a bound on recursion for hostile input.
const MAX_DEPTH: usize = 64;
const QUANTITY_DEF: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// What a walk found.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

struct Walker<'a> {
    s: &'a Schemas,
    mode: FieldValidation,
    out: &'a mut Findings,
}

/// Checks `object` against the definition `root`.
pub(super) fn check(
    s: &Schemas,
    root: &Value,
    object: &Value,
    mode: FieldValidation,
    out: &mut Findings,
) {
    if !object.is_object() {
        out.errors.push(FieldError::new(
            "",
            FieldErrorReason::TypeInvalid,
            "the object must be a JSON object",
        ));
        return;
    }
    Walker { s, mode, out }.value("", object, root, 0);
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Walker<'_> {
    fn error(&mut self, path: &str, reason: FieldErrorReason, detail: String) {
        self.out.errors.push(FieldError::new(path, reason, detail));
    }

    fn type_error(&mut self, path: &str, want: &str, got: &Value) {
        self.error(
            path,
            FieldErrorReason::TypeInvalid,
            format!("must be of type {want}, not {}", type_name(got)),
        );
    }

    fn value(&mut self, path: &str, v: &Value, schema: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            self.error(
                path,
                FieldErrorReason::Invalid,
                format!("nested deeper than {MAX_DEPTH} levels"),
            );
            return;
        }
        // Null is "not set" for every optional field, as Go's decoder reads it.
        if v.is_null() {
            return;
        }
        if self.s.ref_name(schema) == Some(QUANTITY_DEF) {
            self.quantity(path, v);
            return;
        }
        let schema = self.s.resolve(schema);
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            if !(v.is_string() || v.is_i64() || v.is_u64()) {
                self.type_error(path, "integer or string", v);
            }
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            self.error(
                path,
                FieldErrorReason::NotSupported,
                format!("{v}: supported values: {}", list.join(", ")),
            );
            return;
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(path, v, schema, depth),
            Some("array") => {
                let Some(items) = v.as_array() else {
                    return self.type_error(path, "array", v);
                };
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.value(&format!("{path}[{i}]"), item, item_schema, depth + 1);
                    }
                }
            }
            Some("string") => {
                if !v.is_string() {
                    self.type_error(path, "string", v);
                } else if schema.get("format").and_then(Value::as_str) == Some("date-time")
                    && !looks_like_rfc3339(v.as_str().unwrap_or(""))
                {
                    self.error(
                        path,
                        FieldErrorReason::Invalid,
                        format!(
                            "{v}: must be an RFC 3339 date-time such as \"2024-01-02T03:04:05Z\""
                        ),
                    );
                }
            }
            Some("integer") => self.integer(path, v, schema),
            Some("number") if !v.is_number() => self.type_error(path, "number", v),
            Some("boolean") if !v.is_boolean() => self.type_error(path, "boolean", v),
            // No type: free-form (RawExtension, JSON); anything goes.
            _ => {}
        }
    }

    fn integer(&mut self, path: &str, v: &Value, schema: &Value) {
        let Some(n) = v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX)) else {
            return self.type_error(path, "integer", v);
        };
        if schema.get("format").and_then(Value::as_str) == Some("int32")
            && i32::try_from(n).is_err()
        {
            self.error(
                path,
                FieldErrorReason::Invalid,
                format!("{n}: must fit in a 32-bit signed integer"),
            );
        }
    }

    fn quantity(&mut self, path: &str, v: &Value) {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return self.type_error(path, "quantity (string or number)", other),
        };
        if let Err(e) = api::quantity::parse_quantity(&text) {
            self.error(path, FieldErrorReason::Invalid, format!("{v}: {e}"));
        }
    }

    fn object(&mut self, path: &str, v: &Value, schema: &Value, depth: usize) {
        let Some(map) = v.as_object() else {
            return self.type_error(path, "object", v);
        };
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if map.get(r).is_none_or(Value::is_null) {
                    self.error(
                        &join(path, r),
                        FieldErrorReason::Required,
                        format!("{r} is required"),
                    );
                }
            }
        }
        for (k, child) in map {
            if let Some(prop) = props.and_then(|p| p.get(k)) {
                self.value(&join(path, k), child, prop, depth + 1);
            } else if let Some(a) = additional {
                self.value(&format!("{path}[{k}]"), child, a, depth + 1);
            } else if props.is_some() {
                self.unknown(&join(path, k));
            }
        }
    }

    fn unknown(&mut self, path: &str) {
        match self.mode {
            FieldValidation::Ignore => {}
            FieldValidation::Warn => self.out.warnings.push(format!("unknown field {path:?}")),
            FieldValidation::Strict => self.error(
                path,
                FieldErrorReason::UnknownField,
                format!("unknown field {path:?}"),
            ),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`: the shape kube's time fields take.
fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || !(b[10] == b'T' || b[10] == b't')
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_rfc3339;

    #[test]
    fn rfc3339_shapes() {
        assert!(looks_like_rfc3339("2024-01-02T03:04:05Z"));
        assert!(looks_like_rfc3339("2024-01-02T03:04:05.123456Z"));
        assert!(looks_like_rfc3339("2024-01-02T03:04:05+02:00"));
        assert!(!looks_like_rfc3339("2024-01-02 03:04:05Z"));
        assert!(!looks_like_rfc3339("yesterday"));
        assert!(!looks_like_rfc3339("2024-01-02T03:04:05."));
    }
}
