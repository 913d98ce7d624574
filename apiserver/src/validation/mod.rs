//! Schema validation of every write: an object is checked against its kind's schema
//! (types, required fields, enums, unknown fields per `fieldValidation`) and then by the
//! rules schemas cannot say (DNS-1123 names, label syntax, quantities, unique container
//! names, port ranges, selectors matching templates). All errors are collected, each
//! with the field path kube would name (`spec.containers[0].image`).
//!
//! `schema` is the registry both this module and the OpenAPI documents (`openapi`) are
//! generated from; `names` holds the name and label syntax checks.

pub mod kinds;
pub mod names;
pub mod openapi;
pub mod schema;
mod walk;

use std::fmt;

use serde_json::Value;

use crate::resources::ResourceInfo;

/// `?fieldValidation=`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Accept the object and return a warning per unknown field (the default).
    #[default]
    Warn,
    /// Refuse the object.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter; absent means `Warn`, as kube-apiserver.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            )),
        }
    }
}

/// Why a field is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorReason {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    /// A field the schema does not declare (only under `fieldValidation=Strict`; kube
    /// answers these with 400 "strict decoding error", the others with 422).
    UnknownField,
    TooLong,
    Duplicate,
}

impl FieldErrorReason {
    /// The `type` of a `StatusCause`, as kube names it.
    pub fn as_cause_reason(&self) -> &'static str {
        match self {
            FieldErrorReason::Required => "FieldValueRequired",
            FieldErrorReason::Invalid => "FieldValueInvalid",
            FieldErrorReason::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorReason::NotSupported => "FieldValueNotSupported",
            FieldErrorReason::UnknownField => "FieldValueInvalid",
            FieldErrorReason::TooLong => "FieldValueTooLong",
            FieldErrorReason::Duplicate => "FieldValueDuplicate",
        }
    }

    /// The words kube puts between the path and the detail.
    fn label(&self) -> &'static str {
        match self {
            FieldErrorReason::Required => "Required value",
            FieldErrorReason::Invalid => "Invalid value",
            FieldErrorReason::TypeInvalid => "Invalid type",
            FieldErrorReason::NotSupported => "Unsupported value",
            FieldErrorReason::UnknownField => "Unknown field",
            FieldErrorReason::TooLong => "Too long",
            FieldErrorReason::Duplicate => "Duplicate value",
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Kube's field path: `spec.containers[0].image`, `metadata.labels`.
    pub path: String,
    pub reason: FieldErrorReason,
    /// Plain English, including the offending value where that helps.
    pub detail: String,
}

impl FieldError {
    pub(crate) fn new(path: &str, reason: FieldErrorReason, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.to_string(),
            reason,
            detail: detail.into(),
        }
    }
}

/// `spec.containers[0].image: Required value: ...`, like kube's field errors.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.reason.label(), self.detail)
    }
}

/// Validates one whole object of the resource (`apiVersion`/`kind` already checked by
/// the caller): types, required fields, unknown fields (errors under Strict, returned as
/// warnings under Warn, ignored under Ignore), DNS-1123 names, label/annotation syntax,
/// resource quantities. Ok(warnings) or Err(every error found).
pub fn validate(
    resource: &ResourceInfo,
    object: &Value,
    mode: FieldValidation,
) -> Result<Vec<String>, Vec<FieldError>> {
    let mut out = walk::Findings::default();
    let s = schema::schemas();
    match s.root_of(resource).and_then(|d| s.def(d)) {
        Some(root) => walk::check(s, root, object, mode, &mut out),
        None => out.errors.push(FieldError::new(
            "",
            FieldErrorReason::Invalid,
            format!("no schema for kind {}", resource.kind),
        )),
    }
    // The semantic rules read values defensively (a wrong type reads as absent), so they run
    // even after type errors: the caller gets every error in one answer.
    kinds::check(resource, object, &mut out.errors);
    let mut seen = std::collections::HashSet::new();
    out.errors
        .retain(|e| seen.insert((e.path.clone(), e.reason, e.detail.clone())));
    if out.errors.is_empty() {
        Ok(out.warnings)
    } else {
        Err(out.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        lookup("", "pods").unwrap()
    }

    fn good_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "app", "image": "nginx",
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1}}
            }]}
        })
    }

    fn errors(v: Value) -> Vec<FieldError> {
        validate(pods(), &v, FieldValidation::Strict).unwrap_err()
    }

    fn has(errs: &[FieldError], path: &str, reason: FieldErrorReason) -> bool {
        errs.iter().any(|e| e.path == path && e.reason == reason)
    }

    #[test]
    fn field_validation_parse() {
        assert_eq!(FieldValidation::parse(None), Ok(FieldValidation::Warn));
        assert_eq!(
            FieldValidation::parse(Some("Strict")),
            Ok(FieldValidation::Strict)
        );
        assert!(FieldValidation::parse(Some("strict")).is_err());
    }

    #[test]
    fn a_good_pod_passes() {
        assert_eq!(
            validate(pods(), &good_pod(), FieldValidation::Strict),
            Ok(vec![])
        );
    }

    #[test]
    fn wrong_types_are_named_by_path() {
        let mut p = good_pod();
        p["spec"]["containers"][0]["image"] = json!(5);
        p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("80");
        p["metadata"]["labels"] = json!(["x"]);
        let e = errors(p);
        assert!(
            has(
                &e,
                "spec.containers[0].image",
                FieldErrorReason::TypeInvalid
            ),
            "{e:?}"
        );
        assert!(has(
            &e,
            "spec.containers[0].ports[0].containerPort",
            FieldErrorReason::TypeInvalid
        ));
        assert!(has(&e, "metadata.labels", FieldErrorReason::TypeInvalid));
    }

    #[test]
    fn required_fields() {
        let mut p = good_pod();
        p["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("name");
        p["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        let e = errors(p);
        assert!(
            has(&e, "spec.containers[0].name", FieldErrorReason::Required),
            "{e:?}"
        );
        let mut p = good_pod();
        p["spec"].as_object_mut().unwrap().remove("containers");
        assert!(has(
            &errors(p),
            "spec.containers",
            FieldErrorReason::Required
        ));
        let mut p = good_pod();
        p["metadata"].as_object_mut().unwrap().remove("name");
        assert!(has(&errors(p), "metadata.name", FieldErrorReason::Required));
    }

    #[test]
    fn image_is_required_by_the_semantic_rules() {
        let mut p = good_pod();
        p["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("image");
        assert!(has(
            &errors(p),
            "spec.containers[0].image",
            FieldErrorReason::Required
        ));
    }

    #[test]
    fn unknown_fields_per_mode() {
        let mut p = good_pod();
        p["spec"]["bogus"] = json!(1);
        p["spec"]["containers"][0]["imagee"] = json!("x");
        let e = validate(pods(), &p, FieldValidation::Strict).unwrap_err();
        assert!(has(&e, "spec.bogus", FieldErrorReason::UnknownField));
        assert!(has(
            &e,
            "spec.containers[0].imagee",
            FieldErrorReason::UnknownField
        ));
        let w = validate(pods(), &p, FieldValidation::Warn).unwrap();
        assert_eq!(
            w,
            vec![
                "unknown field \"spec.bogus\"".to_string(),
                "unknown field \"spec.containers[0].imagee\"".to_string()
            ]
        );
        assert_eq!(validate(pods(), &p, FieldValidation::Ignore), Ok(vec![]));
    }

    #[test]
    fn names_labels_and_enums() {
        let mut p = good_pod();
        p["metadata"]["name"] = json!("Web_1");
        p["metadata"]["labels"] = json!({"bad key": "x", "ok": "bad value!"});
        p["spec"]["restartPolicy"] = json!("Sometimes");
        let e = errors(p);
        assert!(has(&e, "metadata.name", FieldErrorReason::Invalid), "{e:?}");
        assert!(has(&e, "metadata.labels", FieldErrorReason::Invalid));
        assert!(has(
            &e,
            "spec.restartPolicy",
            FieldErrorReason::NotSupported
        ));
        let mut p = good_pod();
        p["metadata"]["name"] = json!("a".repeat(254));
        assert!(has(&errors(p), "metadata.name", FieldErrorReason::Invalid));
    }

    #[test]
    fn quantities_ports_and_duplicates() {
        let mut p = good_pod();
        p["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("12 8Mi");
        p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
        p["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "app", "image": "x"}));
        let e = errors(p);
        assert!(
            has(
                &e,
                "spec.containers[0].resources.requests[memory]",
                FieldErrorReason::Invalid
            ),
            "{e:?}"
        );
        assert!(has(
            &e,
            "spec.containers[0].ports[0].containerPort",
            FieldErrorReason::Invalid
        ));
        assert!(has(
            &e,
            "spec.containers[1].name",
            FieldErrorReason::Duplicate
        ));
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let mut p = good_pod();
        p["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}});
        let e = errors(p);
        assert!(
            has(
                &e,
                "spec.containers[0].resources.requests[cpu]",
                FieldErrorReason::Invalid
            ),
            "{e:?}"
        );
    }

    #[test]
    fn error_display_reads_like_kube() {
        let e = FieldError::new(
            "spec.containers[0].image",
            FieldErrorReason::Required,
            "an image is required",
        );
        assert_eq!(
            e.to_string(),
            "spec.containers[0].image: Required value: an image is required"
        );
        assert_eq!(e.reason.as_cause_reason(), "FieldValueRequired");
    }
}
