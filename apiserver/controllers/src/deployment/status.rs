//! A Deployment's status from its ReplicaSets, in the fields `kubectl rollout status`
//! reads (observedGeneration, replicas, updatedReplicas, readyReplicas,
//! availableReplicas) and the Available and Progressing conditions, including
//! ProgressDeadlineExceeded when no progress was seen for `progressDeadlineSeconds`.

use api::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, Time, Timestamp};

/// Progressing reasons (the ones kubectl and users match on).
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_DEADLINE: &str = "ProgressDeadlineExceeded";

fn counts(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    prior: Option<&DeploymentCondition>,
    now: Timestamp,
    touched: bool,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" };
    let same = prior.is_some_and(|p| p.status == status);
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if same {
            prior.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(Time(now))
        },
        last_update_time: if same && !touched {
            prior.and_then(|p| p.last_update_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

/// The status to write. `progressed` says whether this sync saw or made progress (a
/// new ReplicaSet, a scaling, more pods ready); without progress for the deadline the
/// Progressing condition turns False.
pub fn compute(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    all: &[&ReplicaSet],
    max_unavailable: i32,
    progressed: bool,
    now: Timestamp,
) -> DeploymentStatus {
    let spec = d.spec.as_ref();
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let prior = d.status.clone().unwrap_or_default();
    let (mut replicas, mut ready, mut available) = (0, 0, 0);
    for rs in all {
        let (r, re, a) = counts(rs);
        replicas += r;
        ready += re;
        available += a;
    }
    let updated = new_rs.map_or(0, |rs| counts(rs).0);
    let spec_total: i32 = all
        .iter()
        .map(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        .sum();
    let find = |t: &str| {
        prior
            .conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
    };
    let min_ok = available >= want - max_unavailable;
    let available_cond = condition(
        "Available",
        min_ok,
        if min_ok {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if min_ok {
            "Deployment has minimum availability.".into()
        } else {
            "Deployment does not have minimum availability.".into()
        },
        find("Available"),
        now,
        false,
    );
    let rs_name = new_rs
        .and_then(|rs| rs.metadata.name.clone())
        .unwrap_or_default();
    let complete = new_rs.is_some()
        && updated == want
        && replicas == want
        && available >= want
        && counts_spec(new_rs) == want;
    let prior_progress = find("Progressing");
    let deadline_s = i64::from(
        spec.and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600),
    );
    let progressing = if complete {
        condition(
            "Progressing",
            true,
            REASON_NEW_RS_AVAILABLE,
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            prior_progress,
            now,
            prior_progress.and_then(|p| p.reason.as_deref()) != Some(REASON_NEW_RS_AVAILABLE),
        )
    } else if progressed
        || prior_progress.is_none()
        // A finished rollout that lost a pod starts a new progress period.
        || prior_progress.and_then(|p| p.reason.as_deref()) == Some(REASON_NEW_RS_AVAILABLE)
    {
        condition(
            "Progressing",
            true,
            REASON_RS_UPDATED,
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            prior_progress,
            now,
            true,
        )
    } else {
        let since = prior_progress
            .and_then(|p| p.last_update_time.as_ref())
            .map_or(now.as_second(), |t| t.0.as_second());
        let stuck = prior_progress.and_then(|p| p.reason.as_deref()) == Some(REASON_DEADLINE)
            || now.as_second() - since > deadline_s;
        if stuck {
            condition(
                "Progressing",
                false,
                REASON_DEADLINE,
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                prior_progress,
                now,
                false,
            )
        } else {
            prior_progress.cloned().unwrap_or_default()
        }
    };
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total.max(want) - available).max(0)),
        conditions: Some(vec![available_cond, progressing]),
        collision_count: prior.collision_count,
        terminating_replicas: prior.terminating_replicas,
    }
}

fn counts_spec(rs: Option<&ReplicaSet>) -> i32 {
    rs.and_then(|r| r.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(0)
}

/// Whether the new status differs from the old in anything but timestamps.
pub fn differs(old: Option<&DeploymentStatus>, new: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    old.is_none_or(|o| strip(o) != strip(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{DeploymentSpec, ObjectMeta, ReplicaSetSpec, ReplicaSetStatus};

    fn rs(name: &str, spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn deployment(replicas: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                progress_deadline_seconds: Some(60),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn reason(s: &DeploymentStatus, t: &str) -> String {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
            .unwrap()
    }

    #[test]
    fn a_finished_rollout_reports_new_replica_set_available() {
        let new = rs("web-2", 3, 3, 3);
        let old = rs("web-1", 0, 0, 0);
        let s = compute(
            &deployment(3),
            Some(&new),
            &[&new, &old],
            0,
            false,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(
            (s.replicas, s.updated_replicas, s.available_replicas),
            (Some(3), Some(3), Some(3))
        );
        assert_eq!(reason(&s, "Progressing"), REASON_NEW_RS_AVAILABLE);
        assert_eq!(reason(&s, "Available"), "MinimumReplicasAvailable");
    }

    #[test]
    fn no_progress_past_the_deadline_is_reported() {
        let new = rs("web-2", 1, 1, 0);
        let old = rs("web-1", 3, 3, 3);
        let mut d = deployment(3);
        let t0 = Timestamp::from_second(1000).unwrap();
        d.status = Some(compute(&d, Some(&new), &[&new, &old], 1, true, t0));
        assert_eq!(
            reason(d.status.as_ref().unwrap(), "Progressing"),
            REASON_RS_UPDATED
        );
        let later = Timestamp::from_second(1030).unwrap();
        let s = compute(&d, Some(&new), &[&new, &old], 1, false, later);
        assert_eq!(
            reason(&s, "Progressing"),
            REASON_RS_UPDATED,
            "within the deadline"
        );
        let late = Timestamp::from_second(1061).unwrap();
        let s = compute(&d, Some(&new), &[&new, &old], 1, false, late);
        assert_eq!(reason(&s, "Progressing"), REASON_DEADLINE);
        assert_eq!(s.unavailable_replicas, Some(1));
    }
}
