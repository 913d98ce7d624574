//! The seam between request handling and the library modules (validation, patch,
//! selectors, table): every call into them goes through here, with the mapping of their
//! errors to Status answers.

use serde_json::Value;

use crate::error::{ApiError, ApiResult, Cause, Details};
use crate::patch::{self, PatchError, PatchType};
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::validation;

pub use crate::watch_cache::Predicate;

/// Validates a whole object before it is written; Ok(warnings) or a 422 with every
/// field error.
pub fn validate(
    resource: &ResourceInfo,
    object: &Value,
    field_validation: Option<&str>,
) -> ApiResult<Vec<String>> {
    let mode =
        validation::FieldValidation::parse(field_validation).map_err(ApiError::bad_request)?;
    validation::validate(resource, object, mode).map_err(|errors| {
        let causes = errors
            .iter()
            .map(|e| Cause {
                reason: e.reason.as_cause_reason().to_string(),
                message: e.to_string(),
                field: e.path.clone(),
            })
            .collect();
        invalid(resource, crate::object::name(object), causes)
    })
}

/// Applies a PATCH body of `content_type` to `original`.
pub fn apply_patch(
    content_type: &str,
    resource: &ResourceInfo,
    original: &Value,
    body: &[u8],
) -> ApiResult<Value> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    if ct == "application/apply-patch+yaml" {
        return Err(ApiError::UnsupportedMediaType {
            message: "server-side apply is not supported; use client-side kubectl apply".into(),
        });
    }
    let kind = PatchType::from_content_type(ct).ok_or_else(|| ApiError::UnsupportedMediaType {
        message: format!(
            "the patch content type {ct:?} is not supported (json-patch+json, merge-patch+json, strategic-merge-patch+json)"
        ),
    })?;
    patch::apply_patch(kind, resource, original, body).map_err(|e| match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::Unprocessable(m) => ApiError::Invalid {
            message: m,
            details: Details {
                name: crate::object::name(original).into(),
                group: resource.group.into(),
                kind: resource.kind.into(),
            },
            causes: Vec::new(),
        },
    })
}

/// The predicate of `labelSelector` and `fieldSelector`, None when both are empty.
pub fn selector_predicate(
    resource: &ResourceInfo,
    label: Option<&str>,
    field: Option<&str>,
) -> ApiResult<Option<Predicate>> {
    let label = label.filter(|s| !s.trim().is_empty());
    let field = field.filter(|s| !s.trim().is_empty());
    if label.is_none() && field.is_none() {
        return Ok(None);
    }
    let label = label
        .map(LabelSelector::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let field = field
        .map(|f| FieldSelector::parse(f, resource))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("unable to parse field selector: {e}")))?;
    Ok(Some(Box::new(move |o: &Value| {
        label.as_ref().is_none_or(|l| l.matches(o)) && field.as_ref().is_none_or(|f| f.matches(o))
    })))
}

/// A single-field predicate on metadata.name (watches of one named object).
pub fn name_predicate(name: String) -> Predicate {
    Box::new(move |o: &Value| crate::object::name(o) == name)
}

/// A meta.k8s.io/v1 Table of `objects`, when the library can build one.
pub fn table(
    resource: &ResourceInfo,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Option<Value> {
    Some(crate::table::to_table(
        resource,
        objects,
        list_meta,
        include_object,
    ))
}

/// A 422 from field errors.
pub fn invalid(resource: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
    let summary: Vec<String> = causes.iter().map(|c| c.message.clone()).collect();
    ApiError::Invalid {
        message: format!(
            "{} \"{name}\" is invalid: [{}]",
            resource.kind,
            summary.join(", ")
        ),
        details: Details {
            name: name.into(),
            group: resource.group.into(),
            kind: resource.kind.into(),
        },
        causes,
    }
}
