//! Scoring: among the nodes that fit, which is best. `LeastAllocated` (the default)
//! prefers the node with the most room left, spreading pods; `MostAllocated` prefers the
//! fullest node that still fits, packing pods onto few nodes. Scores are 0–100 per
//! resource (CPU and memory, equal weights), in integer arithmetic so equal inputs give
//! equal scores; ties go to the node name that sorts first, so placement is repeatable.

use super::resources::Resources;

/// How to score nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Spread: most free CPU and memory after placing the pod.
    #[default]
    LeastAllocated,
    /// Bin packing: least free CPU and memory after placing the pod.
    MostAllocated,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "LeastAllocated" => Ok(Strategy::LeastAllocated),
            "MostAllocated" => Ok(Strategy::MostAllocated),
            other => Err(format!(
                "unknown scoring strategy {other:?} (LeastAllocated or MostAllocated)"
            )),
        }
    }
}

const MAX_SCORE: i128 = 100;

fn resource_score(strategy: Strategy, requested: i128, capacity: i128) -> i128 {
    if capacity <= 0 {
        return 0;
    }
    let requested = requested.clamp(0, capacity);
    match strategy {
        Strategy::LeastAllocated => (capacity - requested) * MAX_SCORE / capacity,
        Strategy::MostAllocated => requested * MAX_SCORE / capacity,
    }
}

/// The node's score for the pod: `used + requests` against `allocatable`, averaged over
/// CPU and memory. Pods that request nothing still count as one pod, so with no
/// requests at all the pod count decides (spread or pack by count).
pub fn score(
    strategy: Strategy,
    requests: &Resources,
    allocatable: &Resources,
    used: &Resources,
) -> i128 {
    let cpu = resource_score(
        strategy,
        used.cpu_millis + requests.cpu_millis,
        allocatable.cpu_millis,
    );
    let mem = resource_score(
        strategy,
        used.memory_bytes + requests.memory_bytes,
        allocatable.memory_bytes,
    );
    let pods = resource_score(strategy, used.pods + requests.pods, allocatable.pods);
    // CPU and memory weigh 1000 each and the pod count 1, so the count only breaks ties
    // between nodes whose CPU and memory scores agree.
    (cpu + mem) * 1000 + pods
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: i128, mem: i128, pods: i128) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            pods,
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let alloc = res(4000, 4 << 30, 110);
        let req = res(1000, 1 << 30, 1);
        let empty = score(Strategy::LeastAllocated, &req, &alloc, &res(0, 0, 0));
        let half = score(
            Strategy::LeastAllocated,
            &req,
            &alloc,
            &res(2000, 2 << 30, 2),
        );
        assert!(empty > half);
        // (4000-1000)/4000 = 75 for CPU and memory alike.
        assert_eq!(empty / 1000, 150);
    }

    #[test]
    fn most_allocated_prefers_the_fuller_node() {
        let alloc = res(4000, 4 << 30, 110);
        let req = res(1000, 1 << 30, 1);
        let empty = score(Strategy::MostAllocated, &req, &alloc, &res(0, 0, 0));
        let half = score(
            Strategy::MostAllocated,
            &req,
            &alloc,
            &res(2000, 2 << 30, 2),
        );
        assert!(half > empty);
        assert_eq!(half / 1000, 150);
    }

    #[test]
    fn pod_count_breaks_ties_when_nothing_is_requested() {
        let alloc = res(4000, 4 << 30, 110);
        let req = res(0, 0, 1);
        let fewer = score(Strategy::LeastAllocated, &req, &alloc, &res(0, 0, 1));
        let more = score(Strategy::LeastAllocated, &req, &alloc, &res(0, 0, 50));
        assert!(fewer > more);
        assert!(
            score(Strategy::MostAllocated, &req, &alloc, &res(0, 0, 50))
                > score(Strategy::MostAllocated, &req, &alloc, &res(0, 0, 1))
        );
    }

    #[test]
    fn strategies_parse_by_name() {
        assert_eq!("MostAllocated".parse(), Ok(Strategy::MostAllocated));
        assert!("Random".parse::<Strategy>().is_err());
    }
}
