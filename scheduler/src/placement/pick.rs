//! How one solution is picked from the Pareto front, per tier.
//!
//! Rule: among the feasible solutions of the first front, keep those at least as good as the
//! greedy baseline on both latency and load balance (when the baseline is feasible and any such
//! solution exists); normalise each objective to [0, 1] over them; pick the lowest weighted sum
//! with the tier's weights (ties: lowest index). Tier S favours latency and trust, tier A balances
//! everything, tier B favours cost.

use super::model::Tier;

/// Weights over (latency, imbalance, distrust, cost, energy, churn).
pub fn weights(tier: Tier) -> [f64; 6] {
    match tier {
        Tier::S => [0.35, 0.10, 0.30, 0.05, 0.10, 0.10],
        Tier::A => [0.25, 0.20, 0.20, 0.15, 0.10, 0.10],
        Tier::B => [0.10, 0.10, 0.10, 0.45, 0.10, 0.15],
    }
}

/// Scores of `candidates` (objective rows) under `weights`, each objective min-max normalised
/// over the candidates.
pub fn scores(candidates: &[&[f64]], weights: &[f64; 6]) -> Vec<f64> {
    let m = weights.len();
    let mut lo = vec![f64::INFINITY; m];
    let mut hi = vec![f64::NEG_INFINITY; m];
    for row in candidates {
        for k in 0..m {
            lo[k] = lo[k].min(row[k]);
            hi[k] = hi[k].max(row[k]);
        }
    }
    candidates
        .iter()
        .map(|row| {
            (0..m)
                .map(|k| {
                    let span = hi[k] - lo[k];
                    let x = if span > 0.0 {
                        (row[k] - lo[k]) / span
                    } else {
                        0.0
                    };
                    weights[k] * x
                })
                .sum()
        })
        .collect()
}

/// How much worse than the greedy baseline's a solution's imbalance (variance of utilisation) may
/// be and still count as no worse: 0.001, a standard deviation of about 3 % of a device. Below
/// it a difference is the noise of replicas that take a hundredth of a core each, and must not
/// outweigh a measured latency (a device 120 ms away is not chosen to spread 0.01 core).
pub const IMBALANCE_TOLERANCE: f64 = 1e-3;

/// Index (into `candidates`) of the pick for `weights`, honouring the greedy floor on latency and
/// imbalance (within [`IMBALANCE_TOLERANCE`]) when given.
pub fn pick(candidates: &[&[f64]], weights: &[f64; 6], floor: Option<(f64, f64)>) -> Option<usize> {
    let allowed: Vec<usize> = match floor {
        Some((latency, imbalance)) => {
            let within: Vec<usize> = (0..candidates.len())
                .filter(|&i| {
                    candidates[i][0] <= latency + 1e-12
                        && candidates[i][1] <= imbalance + IMBALANCE_TOLERANCE
                })
                .collect();
            if within.is_empty() {
                (0..candidates.len()).collect()
            } else {
                within
            }
        }
        None => (0..candidates.len()).collect(),
    };
    let rows: Vec<&[f64]> = allowed.iter().map(|&i| candidates[i]).collect();
    let scores = scores(&rows, weights);
    (0..rows.len())
        .min_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)))
        .map(|k| allowed[k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_prefer_their_objectives() {
        // A: fast and trusted but expensive; B: cheap but slow.
        let fast: &[f64] = &[10.0, 0.01, -0.9, 5.0, 0.0, 0.0];
        let cheap: &[f64] = &[50.0, 0.01, -0.4, 1.0, 0.0, 0.0];
        let rows = [fast, cheap];
        assert_eq!(pick(&rows, &weights(Tier::S), None), Some(0));
        assert_eq!(pick(&rows, &weights(Tier::B), None), Some(1));
        // A floor at the cheap solution's latency keeps only the fast one.
        assert_eq!(pick(&rows, &weights(Tier::B), Some((20.0, 1.0))), Some(0));
    }

    #[test]
    fn a_negligibly_less_balanced_solution_is_not_excluded_by_the_floor() {
        // Greedy spread the load a hair better by using a slow device; the fast solution's
        // imbalance is worse by 1e-5 only: it stays a candidate, and tier S takes it.
        let fast: &[f64] = &[2.0, 2.0e-5, -0.5, 1.0, 0.0, 3.0];
        let slow: &[f64] = &[42.0, 1.0e-5, -0.5, 1.0, 0.0, 3.0];
        let rows = [fast, slow];
        assert_eq!(
            pick(&rows, &weights(Tier::S), Some((42.0, 1.0e-5))),
            Some(0)
        );
    }
}
