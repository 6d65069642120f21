//! Where the demo's simulated server wedges: the original design's story (a 1,000-sample run whose server
//! wedges at sample 897, and once before that, at sample 400), scaled to the number of requests.

/// The original design's story as fractions of the run: a wedge after 40 % and after 89.7 % of the samples
/// (completions 400 and 897 of 1,000).
const STORY: [(u64, u64); 2] = [(400, 1000), (897, 1000)];

/// The completions after which the simulated server wedges (every request and `/health` then hang
/// until the process is replaced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WedgePlan {
    /// Samples in the run.
    pub requests: u64,
    /// Completion counts after which the server wedges, ascending, each below `requests` so that
    /// a request is always there to meet it.
    pub points: Vec<u64>,
}

impl WedgePlan {
    /// The story scaled to `requests` samples: 1,000 gives wedges after 400 and 897 completions;
    /// runs too short to hold a point lose it (a 1-sample run has none).
    pub fn scaled(requests: u64) -> Self {
        let mut points: Vec<u64> = STORY
            .iter()
            .map(|(num, den)| (requests * num + den / 2) / den)
            .filter(|point| (1..requests).contains(point))
            .collect();
        points.dedup();
        Self { requests, points }
    }

    /// The first wedge, from which on a server that is never restarted answers nothing.
    pub fn first(&self) -> Option<u64> {
        self.points.first().copied()
    }

    /// The mock's `--wedge-after` value (`400,897`), or `None` without wedges.
    pub fn flag_value(&self) -> Option<String> {
        if self.points.is_empty() {
            return None;
        }
        let text: Vec<String> = self.points.iter().map(u64::to_string).collect();
        Some(text.join(","))
    }

    /// The points for people: `400 and 897`.
    pub fn describe(&self) -> String {
        match self.points.as_slice() {
            [] => "never".to_owned(),
            [one] => one.to_string(),
            [init @ .., last] => {
                let init: Vec<String> = init.iter().map(u64::to_string).collect();
                format!("{} and {last}", init.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_run_tells_the_original_designs_story() {
        let plan = WedgePlan::scaled(1000);
        assert_eq!(plan.points, vec![400, 897]);
        assert_eq!(plan.flag_value().as_deref(), Some("400,897"));
        assert_eq!(plan.describe(), "400 and 897");
        assert_eq!(plan.first(), Some(400));
    }

    #[test]
    fn the_story_scales_and_short_runs_lose_points() {
        assert_eq!(WedgePlan::scaled(200).points, vec![80, 179]);
        assert_eq!(WedgePlan::scaled(2).points, vec![1]);
        assert_eq!(WedgePlan::scaled(1).points, Vec::<u64>::new());
        assert_eq!(WedgePlan::scaled(1).flag_value(), None);
        assert_eq!(WedgePlan::scaled(1).describe(), "never");
    }

    #[test]
    fn every_point_is_met_by_a_later_request() {
        for requests in 1..500 {
            let plan = WedgePlan::scaled(requests);
            assert!(plan.points.windows(2).all(|w| w[0] < w[1]), "{requests}");
            assert!(
                plan.points.iter().all(|p| *p >= 1 && *p < requests),
                "{requests}"
            );
        }
    }
}
