//! The arithmetic of a Deployment rollout, free of IO so it is tested directly:
//! maxSurge/maxUnavailable from ints or percentages, how far the new ReplicaSet may grow
//! and the old ones must shrink in one RollingUpdate step, the `pod-template-hash` of a
//! template, and revisions.
//!
//! Two bounds hold at every step, with counts that can only err on the safe side:
//! pods ≤ replicas + maxSurge (a ReplicaSet counts as `max(spec, status.replicas)`, so
//! pods still being deleted count) and available ≥ replicas − maxUnavailable (a
//! ReplicaSet counts as `min(status.availableReplicas, spec)`, so pods already asked to
//! go do not count).

use api::{IntOrString, PodTemplateSpec};

/// The label that names a ReplicaSet's template (and selects its pods).
pub const HASH_LABEL: &str = "pod-template-hash";
/// The annotation holding a ReplicaSet's (and its Deployment's) revision.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// `intOrString` as a count of `total` (percentages rounded up or down).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| {
                    format!("invalid value {s:?}: must be an integer or a percentage")
                })?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| format!("{s:?} of {total} is out of range"))
        }
    }
}

/// (maxSurge, maxUnavailable) for `replicas`: defaults 25% each, surge rounded up,
/// unavailable rounded down, and never both zero (then one pod may be unavailable, or
/// the rollout could never move).
pub fn surge_and_unavailable(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), replicas, true)?.max(0);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), replicas, false)?
        .clamp(0, replicas.max(0));
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// What the rollout needs to know of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetCounts {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.replicas`: the pods it last saw.
    pub pods: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl SetCounts {
    /// At most this many pods can exist for it now.
    pub fn pods_upper(&self) -> i32 {
        self.spec.max(self.pods)
    }

    /// At least this many of its pods are available and will stay.
    pub fn available_lower(&self) -> i32 {
        self.available.min(self.spec).max(0)
    }
}

/// The new ReplicaSet's size after one RollingUpdate scale-up step.
pub fn scale_up_target(replicas: i32, max_surge: i32, new: &SetCounts, old: &[SetCounts]) -> i32 {
    if new.spec >= replicas {
        return replicas;
    }
    let current: i32 = new.pods_upper() + old.iter().map(SetCounts::pods_upper).sum::<i32>();
    let room = replicas + max_surge - current;
    if room <= 0 {
        return new.spec;
    }
    (new.spec + room).min(replicas)
}

/// The old ReplicaSets' sizes (same order, oldest first) after one RollingUpdate
/// scale-down step: first pods that are not available anyway, then available ones down
/// to `replicas - max_unavailable` available in all.
pub fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new: &SetCounts,
    old: &[SetCounts],
) -> Vec<i32> {
    let mut targets: Vec<i32> = old.iter().map(|o| o.spec).collect();
    let min_available = replicas - max_unavailable;
    let all_spec: i32 = new.spec + old.iter().map(|o| o.spec).sum::<i32>();
    let new_unavailable = new.spec - new.available_lower();
    let mut budget = all_spec - min_available - new_unavailable;
    if budget <= 0 {
        return targets;
    }
    for (t, o) in targets.iter_mut().zip(old) {
        let unhealthy = (o.spec - o.available_lower()).min(budget).max(0);
        *t -= unhealthy;
        budget -= unhealthy;
    }
    let available: i32 =
        new.available_lower() + old.iter().map(SetCounts::available_lower).sum::<i32>();
    let mut can = (available - min_available).min(budget);
    for t in &mut targets {
        if can <= 0 {
            break;
        }
        let d = (*t).min(can);
        *t -= d;
        can -= d;
    }
    targets
}

/// Whether two templates are the same apart from the `pod-template-hash` label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    strip_hash(a) == strip_hash(b)
}

/// The template without the `pod-template-hash` label (an emptied label map or metadata
/// counts as none, as the apiserver drops empty maps).
pub fn strip_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut()
        && let Some(labels) = m.labels.as_mut()
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            m.labels = None;
        }
    }
    if t.metadata
        .as_ref()
        .is_some_and(|m| *m == api::ObjectMeta::default())
    {
        t.metadata = None;
    }
    t
}

/// The `pod-template-hash` of a template: FNV-1a (32 bit) over its JSON and the
/// collision count, written with the consonant-and-digit alphabet Kubernetes uses so a
/// hash never spells a word.
pub fn template_hash(template: &PodTemplateSpec, collision_count: i32) -> String {
    let json = serde_json::to_vec(&strip_hash(template)).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in json.iter().copied().chain(collision_count.to_be_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|c| ALPHABET[usize::from(c) % ALPHABET.len()] as char)
        .collect()
}

/// The revision an object's annotations carry (0 when none or unreadable).
pub fn revision(meta: &api::ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn percentages_round_as_kubernetes_does() {
        assert_eq!(surge_and_unavailable(None, None, 10), Ok((3, 2)));
        assert_eq!(surge_and_unavailable(None, None, 1), Ok((1, 0)));
        assert_eq!(
            surge_and_unavailable(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5),
            Ok((0, 1))
        );
        assert_eq!(
            surge_and_unavailable(Some(&pct("50%")), Some(&pct("0%")), 3),
            Ok((2, 0))
        );
        assert!(surge_and_unavailable(Some(&pct("lots")), None, 3).is_err());
    }

    fn c(spec: i32, pods: i32, available: i32) -> SetCounts {
        SetCounts {
            spec,
            pods,
            available,
        }
    }

    #[test]
    fn scale_up_stays_within_surge() {
        // 10 replicas, surge 3: 10 old pods leave room for 3 new.
        assert_eq!(scale_up_target(10, 3, &c(0, 0, 0), &[c(10, 10, 10)]), 3);
        // Old pods still being deleted (status 10, spec 8) count.
        assert_eq!(scale_up_target(10, 3, &c(3, 3, 0), &[c(8, 10, 10)]), 3);
        assert_eq!(scale_up_target(10, 3, &c(3, 3, 0), &[c(8, 8, 8)]), 5);
        // Never past replicas, and a too large new set shrinks to replicas.
        assert_eq!(scale_up_target(10, 3, &c(9, 9, 9), &[c(0, 0, 0)]), 10);
        assert_eq!(scale_up_target(10, 3, &c(12, 12, 12), &[]), 10);
    }

    #[test]
    fn scale_down_keeps_minimum_availability() {
        // 10 replicas, maxUnavailable 2, 3 new pods not yet available: 2 old may go.
        assert_eq!(
            scale_down_old(10, 2, &c(3, 3, 0), &[c(10, 10, 10)]),
            vec![8]
        );
        // Once the 3 new are available, 5 old may go.
        assert_eq!(scale_down_old(10, 2, &c(3, 3, 3), &[c(8, 8, 8)]), vec![5]);
        // Unavailable old pods go first and cost no availability.
        assert_eq!(scale_down_old(10, 2, &c(3, 3, 3), &[c(8, 8, 4)]), vec![5]);
        // An old set told to shrink whose status still shows more available counts as
        // its spec only.
        assert_eq!(scale_down_old(10, 2, &c(3, 3, 0), &[c(8, 10, 10)]), vec![8]);
        // Oldest first across several old sets.
        assert_eq!(
            scale_down_old(4, 1, &c(0, 0, 0), &[c(2, 2, 2), c(2, 2, 2)]),
            vec![1, 2]
        );
    }

    #[test]
    fn a_whole_rollout_respects_both_bounds() {
        // Simulate steps where every pod asked for becomes available at once.
        let (replicas, surge, unavail) = (10, 3, 2);
        let mut new = c(0, 0, 0);
        let mut old = vec![c(10, 10, 10)];
        for _ in 0..20 {
            new.spec = scale_up_target(replicas, surge, &new, &old);
            let total: i32 = new.spec + old.iter().map(|o| o.spec).sum::<i32>();
            assert!(total <= replicas + surge, "{total} pods");
            new = c(new.spec, new.spec, new.spec);
            let targets = scale_down_old(replicas, unavail, &new, &old);
            for (o, t) in old.iter_mut().zip(targets) {
                *o = c(t, t, t);
            }
            let available: i32 = new.available + old.iter().map(|o| o.available).sum::<i32>();
            assert!(available >= replicas - unavail, "{available} available");
        }
        assert_eq!((new.spec, old[0].spec), (10, 0));
    }

    #[test]
    fn hashes_ignore_the_hash_label_and_change_with_the_template() {
        let mut t = PodTemplateSpec::default();
        let h1 = template_hash(&t, 0);
        assert!(!h1.is_empty() && h1.chars().all(|ch| ch.is_ascii_alphanumeric()));
        t.metadata = Some(api::ObjectMeta {
            labels: Some([(HASH_LABEL.to_string(), h1.clone())].into()),
            ..Default::default()
        });
        assert_eq!(template_hash(&t, 0), h1);
        assert!(equal_ignoring_hash(&t, &PodTemplateSpec::default()));
        assert_ne!(
            template_hash(&t, 1),
            h1,
            "the collision count changes the hash"
        );
        t.spec = Some(api::PodSpec {
            hostname: Some("x".into()),
            ..Default::default()
        });
        assert_ne!(template_hash(&t, 0), h1);
    }
}
