//! Small object helpers every controller shares: label selectors, owner references,
//! pod phases and readiness, and condition lookup.

use std::collections::BTreeMap;

use api::{LabelSelector, ObjectMeta, OwnerReference, Pod};

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions, ANDed).
/// An empty selector matches everything, as Kubernetes' `LabelSelectorAsSelector` does.
/// An unknown operator is an error so a typo never selects every pod.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<bool, String> {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &selector.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        let ok = match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("unknown label selector operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A selector as the `labelSelector` query string (`a=b,c in (d,e)`), for lists.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut parts = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default().join(",");
        parts.push(match req.operator.as_str() {
            "In" => format!("{} in ({values})", req.key),
            "NotIn" => format!("{} notin ({values})", req.key),
            "Exists" => req.key.clone(),
            _ => format!("!{}", req.key),
        });
    }
    parts.join(",")
}

/// The owner reference that marks `meta` as controlled (`controller: true`), if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The controller reference a controller puts on what it creates.
pub fn controller_ref(kind: &str, api_version: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn is_controlled_by(meta: &ObjectMeta, uid: Option<&str>) -> bool {
    match (controller_of(meta), uid) {
        (Some(r), Some(uid)) => r.uid == uid,
        _ => false,
    }
}

/// Pods in Succeeded or Failed never run again: they hold no resources and do not
/// count as replicas.
pub fn pod_is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// A pod that counts as a replica: not terminal and not being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    !pod_is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_s` seconds (by the Ready condition's transition time).
pub fn pod_is_available(pod: &Pod, min_ready_s: i32, now: api::Timestamp) -> bool {
    if !pod_is_ready(pod) {
        return false;
    }
    if min_ready_s <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    since.is_some_and(|t| now.as_second() - t.as_second() >= i64::from(min_ready_s))
}

/// `namespace/name` of a namespaced object's metadata.
pub fn key_of_meta(meta: &ObjectMeta) -> String {
    api::key_of(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["fe".into(), "be".into()]),
            }]),
        };
        let l = labels(&[("app", "web"), ("tier", "fe")]);
        assert_eq!(selector_matches(&sel, Some(&l)), Ok(true));
        let l = labels(&[("app", "web"), ("tier", "db")]);
        assert_eq!(selector_matches(&sel, Some(&l)), Ok(false));
        assert_eq!(selector_matches(&sel, None), Ok(false));
        assert_eq!(
            selector_matches(&LabelSelector::default(), None),
            Ok(true),
            "empty selector selects everything"
        );
        assert_eq!(selector_string(&sel), "app=web,tier in (fe,be)");
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Equals".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(selector_matches(&bad, None).is_err());
    }

    #[test]
    fn controller_references_are_found_by_uid() {
        let owner = ObjectMeta {
            name: Some("rs".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let child = ObjectMeta {
            owner_references: Some(vec![controller_ref("ReplicaSet", "apps/v1", &owner)]),
            ..Default::default()
        };
        assert!(is_controlled_by(&child, Some("u1")));
        assert!(!is_controlled_by(&child, Some("u2")));
        assert!(!is_controlled_by(&ObjectMeta::default(), Some("u1")));
        assert_eq!(controller_of(&child).unwrap().kind, "ReplicaSet");
    }
}
