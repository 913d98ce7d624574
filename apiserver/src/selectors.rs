//! Label and field selectors: parsing `?labelSelector=` / `?fieldSelector=` and
//! `metav1.LabelSelector` objects (matchLabels/matchExpressions), and matching objects
//! against them. Pure functions over `serde_json::Value`; the list, watch and
//! deletecollection handlers filter with them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::validation::names;

/// Longest selector string accepted; a bound on the parser's work per request.
pub const SELECTOR_MAX_LEN: usize = 16 * 1024;

/// Why a selector was refused (the message of a 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

/// One label requirement's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `key=v`, `key==v`, `key in (a,b)`: the label exists and has one of the values.
    In,
    /// `key!=v`, `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label exists.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is an integer greater than n.
    Gt,
    /// `key<n`: the label is an integer less than n.
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    fn new(key: &str, op: Op, values: Vec<String>) -> Result<Self, SelectorError> {
        if let Some(e) = names::qualified_name(key) {
            return err(format!("invalid label key {key:?}: {e}"));
        }
        match op {
            Op::In | Op::NotIn if values.is_empty() => {
                return err(format!("label key {key:?}: values must not be empty"));
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                return err(format!(
                    "label key {key:?}: values must be empty for exists and does not exist"
                ));
            }
            Op::Gt | Op::Lt if values.len() != 1 || values[0].parse::<i64>().is_err() => {
                return err(format!(
                    "label key {key:?}: a > or < requirement needs one integer value"
                ));
            }
            _ => {}
        }
        for v in &values {
            if !matches!(op, Op::Gt | Op::Lt)
                && let Some(e) = names::label_value(v)
            {
                return err(format!("invalid label value {v:?}: {e}"));
            }
        }
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.op {
            Op::In => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => value.is_none_or(|v| self.values.iter().all(|x| x != v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(have), Ok(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values[0].parse::<i64>(),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A label selector: all requirements must hold (AND). Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form: `a=b,c!=d,e in (x,y),f notin (z),g,!h,i>3`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > SELECTOR_MAX_LEN {
            return err(format!(
                "label selector is longer than {SELECTOR_MAX_LEN} bytes"
            ));
        }
        let mut requirements = Vec::new();
        for term in split_top_level(s)? {
            let term = term.trim();
            if term.is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return err(format!("empty requirement in label selector {s:?}"));
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` object. `null` and `{}` select
    /// everything (callers that need kube's "nil selects nothing" check for null first).
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        let obj = match v {
            Value::Null => return Ok(LabelSelector::default()),
            Value::Object(o) => o,
            _ => return err("a label selector must be an object"),
        };
        for field in obj.keys() {
            if field != "matchLabels" && field != "matchExpressions" {
                return err(format!("unknown label selector field {field:?}"));
            }
        }
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                // BTreeMap: a stable requirement order whatever the JSON order was.
                let sorted: BTreeMap<_, _> = m.iter().collect();
                for (k, v) in sorted {
                    let Some(v) = v.as_str() else {
                        return err(format!("matchLabels[{k:?}] must be a string"));
                    };
                    requirements.push(Requirement::new(k, Op::In, vec![v.to_string()])?);
                }
            }
            Some(_) => return err("matchLabels must be an object of strings"),
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    requirements.push(expression(i, e)?);
                }
            }
            Some(_) => return err("matchExpressions must be a list"),
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement (it selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn expression(i: usize, e: &Value) -> Result<Requirement, SelectorError> {
    let key = e.get("key").and_then(Value::as_str);
    let op = e.get("operator").and_then(Value::as_str);
    let (Some(key), Some(op)) = (key, op) else {
        return err(format!(
            "matchExpressions[{i}] needs a string key and operator"
        ));
    };
    let op = match op {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        other => {
            return err(format!(
                "matchExpressions[{i}].operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist"
            ));
        }
    };
    let values = match e.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => {
            let mut out = Vec::with_capacity(vs.len());
            for v in vs {
                let Some(v) = v.as_str() else {
                    return err(format!("matchExpressions[{i}].values must be strings"));
                };
                out.push(v.to_string());
            }
            out
        }
        Some(_) => return err(format!("matchExpressions[{i}].values must be a list")),
    };
    Requirement::new(key, op, values)
}

/// Splits on commas outside parentheses (`a in (x,y),b` is two terms).
fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return err(format!("nested parentheses in label selector {s:?}")),
            ')' if depth == 1 => depth = 0,
            ')' => return err(format!("unbalanced ')' in label selector {s:?}")),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return err(format!("unclosed '(' in label selector {s:?}"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        return Requirement::new(key.trim(), Op::DoesNotExist, Vec::new());
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    if let Some(open) = term.find('(') {
        let head = term[..open].trim_end();
        let (key, op) = if let Some(k) = head.strip_suffix(" notin") {
            (k, Op::NotIn)
        } else if let Some(k) = head.strip_suffix(" in") {
            (k, Op::In)
        } else {
            return err(format!("expected 'in' or 'notin' before '(' in {term:?}"));
        };
        let Some(inner) = term[open + 1..].strip_suffix(')') else {
            return err(format!("expected ')' at the end of {term:?}"));
        };
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return Requirement::new(key.trim(), op, values);
    }
    for (sym, op) in [
        ("==", Op::In),
        ("!=", Op::NotIn),
        ("=", Op::In),
        (">", Op::Gt),
        ("<", Op::Lt),
    ] {
        if let Some((k, v)) = term.split_once(sym) {
            return Requirement::new(k.trim(), op, vec![v.trim().to_string()]);
        }
    }
    if term.contains(char::is_whitespace) {
        return err(format!("cannot parse label requirement {term:?}"));
    }
    Requirement::new(term, Op::Exists, Vec::new())
}

/// One field requirement: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    /// JSON path segments, e.g. ["spec", "nodeName"].
    path: Vec<String>,
    value: String,
    negated: bool,
}

/// A field selector: all requirements must hold. Only the fields the resource supports
/// (as kube-apiserver) are accepted; an unknown field is an error, not "matches nothing".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// The fields a resource may be selected by, beyond metadata.name and metadata.namespace.
fn resource_fields(resource: &ResourceInfo) -> &'static [&'static str] {
    match (resource.group, resource.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("apps", "replicasets") => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.nodeName!=,status.phase==Running` for `resource`.
    /// Values may escape `,`, `=`, `!` and `\` with a backslash.
    pub fn parse(s: &str, resource: &ResourceInfo) -> Result<Self, SelectorError> {
        if s.len() > SELECTOR_MAX_LEN {
            return err(format!(
                "field selector is longer than {SELECTOR_MAX_LEN} bytes"
            ));
        }
        let mut requirements = Vec::new();
        for term in split_unescaped(s, ',') {
            if term.trim().is_empty() {
                if s.trim().is_empty() {
                    continue;
                }
                return err(format!("empty requirement in field selector {s:?}"));
            }
            let (field, negated, raw) = split_field_term(&term)
                .ok_or_else(|| SelectorError(format!("invalid field selector term {term:?}: expected field=value, field==value or field!=value")))?;
            let field = field.trim();
            let supported = field == "metadata.name"
                || field == "metadata.namespace"
                || resource_fields(resource).contains(&field);
            if !supported {
                return err(format!(
                    "field label not supported: {field} (for {})",
                    resource.plural
                ));
            }
            requirements.push(FieldRequirement {
                path: field.split('.').map(str::to_string).collect(),
                value: unescape(raw),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether the object satisfies every requirement. A missing field reads as ""
    /// (so `spec.nodeName=` selects unscheduled pods), booleans and numbers as text.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let mut v = Some(object);
            for seg in &r.path {
                v = v.and_then(|x| x.get(seg));
            }
            let text = match v {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (text == r.value) != r.negated
        })
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits at `sep` characters that are not escaped with a backslash (escapes are kept).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

/// Finds the first unescaped `!=`, `==` or `=` in a term: (field, negated, raw value).
fn split_field_term(term: &str) -> Option<(&str, bool, &str)> {
    let b = term.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'!' if b.get(i + 1) == Some(&b'=') => return Some((&term[..i], true, &term[i + 2..])),
            b'=' if b.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]));
            }
            b'=' => return Some((&term[..i], false, &term[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_inequality() {
        let s = LabelSelector::parse("app=web,tier!=db").unwrap();
        assert!(s.matches(&pod(json!({"app": "web"}))));
        assert!(s.matches(&pod(json!({"app": "web", "tier": "fe"}))));
        assert!(!s.matches(&pod(json!({"app": "web", "tier": "db"}))));
        assert!(!s.matches(&pod(json!({"tier": "fe"}))));
        let s = LabelSelector::parse("app==web").unwrap();
        assert!(s.matches(&pod(json!({"app": "web"}))));
        assert!(!s.matches(&json!({"metadata": {}})));
    }

    #[test]
    fn set_based_and_existence() {
        let s = LabelSelector::parse("env in (prod, staging),tier notin (db),app,!legacy").unwrap();
        assert!(s.matches(&pod(json!({"env": "prod", "app": "x"}))));
        assert!(s.matches(&pod(json!({"env": "staging", "app": "x", "tier": "fe"}))));
        assert!(!s.matches(&pod(json!({"env": "dev", "app": "x"}))));
        assert!(!s.matches(&pod(json!({"env": "prod", "app": "x", "tier": "db"}))));
        assert!(!s.matches(&pod(json!({"env": "prod"}))));
        assert!(!s.matches(&pod(json!({"env": "prod", "app": "x", "legacy": ""}))));
    }

    #[test]
    fn numeric_comparisons() {
        let s = LabelSelector::parse("gen>2,gen<5").unwrap();
        assert!(s.matches(&pod(json!({"gen": "3"}))));
        assert!(!s.matches(&pod(json!({"gen": "5"}))));
        assert!(!s.matches(&pod(json!({"gen": "x"}))));
        assert!(LabelSelector::parse("gen>x").is_err());
    }

    #[test]
    fn empty_selects_everything() {
        let s = LabelSelector::parse("").unwrap();
        assert!(s.is_empty());
        assert!(s.matches(&json!({})));
        assert!(LabelSelector::from_json(&json!({})).unwrap().is_empty());
        assert!(LabelSelector::from_json(&Value::Null).unwrap().is_empty());
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for bad in [
            "a in (x",
            "a in x)",
            "a foo (x)",
            "a b",
            "Bad Key=x",
            "a=b c",
            "a,,b",
            "a in ()",
            "!",
            "a=(",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
        assert!(LabelSelector::parse(&"a".repeat(SELECTOR_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn from_json_match_labels_and_expressions() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]},
                {"key": "old", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert!(s.matches(&pod(json!({"app": "web", "env": "prod"}))));
        assert!(!s.matches(&pod(json!({"app": "web", "env": "dev"}))));
        assert!(!s.matches(&pod(json!({"app": "web", "env": "prod", "old": "1"}))));
        for bad in [
            json!({"matchLabels": {"app": 1}}),
            json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabel": {}}),
            json!("app=web"),
        ] {
            assert!(LabelSelector::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_on_pods() {
        let pods = lookup("", "pods").unwrap();
        let p = pod(json!({}));
        let yes = |s: &str| FieldSelector::parse(s, pods).unwrap().matches(&p);
        assert!(yes("metadata.name=p"));
        assert!(yes("metadata.namespace==default,spec.nodeName=n1"));
        assert!(yes("status.phase!=Pending"));
        assert!(!yes("spec.nodeName="));
        assert!(!yes("metadata.name!=p"));
        let unbound = json!({"metadata": {"name": "q"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.nodeName=", pods)
                .unwrap()
                .matches(&unbound)
        );
        assert!(FieldSelector::parse("", pods).unwrap().is_empty());
    }

    #[test]
    fn field_selector_values_escape_and_types() {
        let nodes = lookup("", "nodes").unwrap();
        let node = json!({"metadata": {"name": "a,b"}, "spec": {"unschedulable": true}});
        assert!(
            FieldSelector::parse("spec.unschedulable=true", nodes)
                .unwrap()
                .matches(&node)
        );
        assert!(
            FieldSelector::parse(r"metadata.name=a\,b", nodes)
                .unwrap()
                .matches(&node)
        );
    }

    #[test]
    fn unknown_or_malformed_fields_are_refused() {
        let pods = lookup("", "pods").unwrap();
        let nodes = lookup("", "nodes").unwrap();
        assert!(FieldSelector::parse("spec.foo=x", pods).is_err());
        assert!(FieldSelector::parse("spec.nodeName=x", nodes).is_err());
        assert!(FieldSelector::parse("metadata.name", pods).is_err());
        assert!(FieldSelector::parse("a=b,,c=d", pods).is_err());
        let e = FieldSelector::parse("spec.unschedulable=true", pods).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        let events = lookup("", "events").unwrap();
        assert!(FieldSelector::parse("involvedObject.name=p", events).is_ok());
    }
}
