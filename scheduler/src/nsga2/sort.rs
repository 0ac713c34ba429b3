//! Constrained non-dominated sorting and crowding distance.
//!
//! Feasible solutions (violation 0) are ranked by Pareto dominance; infeasible ones come after
//! every feasible one, ranked by their total violation (Deb's constrained domination). Two
//! objectives use an O(N log N) sort (sweep with a binary search over fronts); more objectives use
//! the efficient non-dominated sort with sequential search (Zhang et al., 2015), which compares a
//! solution only with the fronts it could belong to.

use std::cmp::Ordering;

/// Whether `a` Pareto-dominates `b` (all objectives minimised).
#[inline]
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        strictly |= x < y;
    }
    strictly
}

/// Rank every solution: `rank[i]` is 0 for the first front. `objectives` is row-major, `m`
/// values per solution. Returns the number of fronts.
pub fn constrained_ranks(objectives: &[f64], m: usize, violation: &[f64], rank: &mut [u32]) -> u32 {
    let n = violation.len();
    let (feasible, mut infeasible): (Vec<usize>, Vec<usize>) =
        (0..n).partition(|&i| violation[i] <= 0.0);
    let fronts = if feasible.is_empty() {
        0
    } else if m == 2 {
        rank_two(objectives, &feasible, rank)
    } else {
        rank_many(objectives, m, &feasible, rank)
    };
    infeasible.sort_by(|&a, &b| violation[a].total_cmp(&violation[b]).then(a.cmp(&b)));
    let mut next = fronts;
    let mut last: Option<f64> = None;
    for &i in &infeasible {
        if let Some(v) = last
            && violation[i] > v
        {
            next += 1;
        }
        last = Some(violation[i]);
        rank[i] = next;
    }
    if infeasible.is_empty() {
        fronts
    } else {
        next + 1
    }
}

fn lexicographic(objectives: &[f64], m: usize, a: usize, b: usize) -> Ordering {
    let (x, y) = (&objectives[a * m..a * m + m], &objectives[b * m..b * m + m]);
    for (p, q) in x.iter().zip(y) {
        match p.total_cmp(q) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    a.cmp(&b)
}

/// Two objectives: after a lexicographic sort, a solution is dominated by a front iff the
/// front's last member has a smaller second objective (or an equal one with a smaller first);
/// fronts' last members are ordered, so a binary search finds the first front that does not
/// dominate it.
fn rank_two(objectives: &[f64], members: &[usize], rank: &mut [u32]) -> u32 {
    let mut order = members.to_vec();
    order.sort_by(|&a, &b| lexicographic(objectives, 2, a, b));
    // For each front, the (f1, f2) of its last member.
    let mut lasts: Vec<(f64, f64)> = Vec::new();
    for &i in &order {
        let (f1, f2) = (objectives[2 * i], objectives[2 * i + 1]);
        let dominated_by = |&(l1, l2): &(f64, f64)| l2 < f2 || (l2 == f2 && l1 < f1);
        let k = lasts.partition_point(dominated_by);
        if k == lasts.len() {
            lasts.push((f1, f2));
        } else {
            lasts[k] = (f1, f2);
        }
        rank[i] = k as u32;
    }
    lasts.len() as u32
}

/// Any number of objectives: efficient non-dominated sort, sequential search.
fn rank_many(objectives: &[f64], m: usize, members: &[usize], rank: &mut [u32]) -> u32 {
    let mut order = members.to_vec();
    order.sort_by(|&a, &b| lexicographic(objectives, m, a, b));
    let mut fronts: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        let me = &objectives[i * m..i * m + m];
        // Earlier solutions in lexicographic order are the only ones that can dominate this one.
        let k = fronts
            .iter()
            .position(|front| {
                !front
                    .iter()
                    .rev()
                    .any(|&j| dominates(&objectives[j * m..j * m + m], me))
            })
            .unwrap_or(fronts.len());
        if k == fronts.len() {
            fronts.push(Vec::new());
        }
        fronts[k].push(i);
        rank[i] = k as u32;
    }
    fronts.len() as u32
}

/// Crowding distance of each member of one front (`front` holds indices into `objectives`);
/// boundary solutions get infinity. Writes `distance[i]` for every `i` in `front`.
pub fn crowding(objectives: &[f64], m: usize, front: &[usize], distance: &mut [f64]) {
    for &i in front {
        distance[i] = 0.0;
    }
    if front.len() <= 2 {
        for &i in front {
            distance[i] = f64::INFINITY;
        }
        return;
    }
    let mut order = front.to_vec();
    for k in 0..m {
        order.sort_by(|&a, &b| {
            objectives[a * m + k]
                .total_cmp(&objectives[b * m + k])
                .then(a.cmp(&b))
        });
        let lo = objectives[order[0] * m + k];
        let hi = objectives[order[order.len() - 1] * m + k];
        distance[order[0]] = f64::INFINITY;
        distance[order[order.len() - 1]] = f64::INFINITY;
        let span = hi - lo;
        if span <= 0.0 || !span.is_finite() {
            continue;
        }
        for w in order.windows(3) {
            let gap = objectives[w[2] * m + k] - objectives[w[0] * m + k];
            distance[w[1]] += gap / span;
        }
    }
}

/// Choose `keep` members of `front` by removing, one at a time, the member with the smallest
/// crowding distance and updating its neighbours' distances. Removing in one go by the initial
/// distances (textbook NSGA-II) can delete both members of a close pair; one at a time keeps one
/// of them, which spreads the front better, most of all with three or more objectives.
pub fn prune_by_crowding(objectives: &[f64], m: usize, front: &[usize], keep: usize) -> Vec<usize> {
    let k = front.len();
    if keep >= k {
        return front.to_vec();
    }
    let value = |local: usize, o: usize| objectives[front[local] * m + o];
    const NONE: usize = usize::MAX;
    // Per objective: neighbours in sorted order, the span, and each member's contribution.
    let mut prev = vec![NONE; m * k];
    let mut next = vec![NONE; m * k];
    let mut contribution = vec![0.0; m * k];
    let mut spans = vec![0.0; m];
    let mut order: Vec<usize> = (0..k).collect();
    for o in 0..m {
        order.sort_by(|&a, &b| value(a, o).total_cmp(&value(b, o)).then(a.cmp(&b)));
        for w in order.windows(2) {
            next[o * k + w[0]] = w[1];
            prev[o * k + w[1]] = w[0];
        }
        spans[o] = value(order[k - 1], o) - value(order[0], o);
    }
    let contribution_of = |o: usize, j: usize, prev: &[usize], next: &[usize]| {
        let (p, q) = (prev[o * k + j], next[o * k + j]);
        if p == NONE || q == NONE {
            f64::INFINITY
        } else if spans[o] > 0.0 && spans[o].is_finite() {
            (value(q, o) - value(p, o)) / spans[o]
        } else {
            0.0
        }
    };
    for o in 0..m {
        for j in 0..k {
            contribution[o * k + j] = contribution_of(o, j, &prev, &next);
        }
    }
    let mut distance: Vec<f64> = (0..k)
        .map(|j| (0..m).map(|o| contribution[o * k + j]).sum())
        .collect();
    let mut alive = vec![true; k];
    for _ in 0..(k - keep) {
        let worst = (0..k)
            .filter(|&j| alive[j])
            .min_by(|&a, &b| distance[a].total_cmp(&distance[b]).then(b.cmp(&a)))
            .expect("more members than kept");
        alive[worst] = false;
        for o in 0..m {
            let (p, q) = (prev[o * k + worst], next[o * k + worst]);
            if p != NONE {
                next[o * k + p] = q;
            }
            if q != NONE {
                prev[o * k + q] = p;
            }
            for j in [p, q] {
                if j != NONE {
                    contribution[o * k + j] = contribution_of(o, j, &prev, &next);
                    distance[j] = (0..m).map(|o| contribution[o * k + j]).sum();
                }
            }
        }
    }
    (0..k).filter(|&j| alive[j]).map(|j| front[j]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook O(MN²) sort, as the oracle.
    fn naive(objectives: &[f64], m: usize, n: usize) -> Vec<u32> {
        let mut rank = vec![u32::MAX; n];
        let mut remaining: Vec<usize> = (0..n).collect();
        let mut r = 0;
        while !remaining.is_empty() {
            let front: Vec<usize> = remaining
                .iter()
                .copied()
                .filter(|&i| {
                    !remaining.iter().any(|&j| {
                        dominates(&objectives[j * m..j * m + m], &objectives[i * m..i * m + m])
                    })
                })
                .collect();
            for &i in &front {
                rank[i] = r;
            }
            remaining.retain(|i| !front.contains(i));
            r += 1;
        }
        rank
    }

    #[test]
    fn fast_sorts_agree_with_the_textbook_sort() {
        let mut rng = crate::nsga2::Rand::new(7);
        for m in [2, 3, 5] {
            for trial in 0..40 {
                let n = 1 + trial * 5;
                // Coarse values make ties and duplicates common.
                let objectives: Vec<f64> =
                    (0..n * m).map(|_| (rng.uniform() * 6.0).floor()).collect();
                let violation = vec![0.0; n];
                let mut rank = vec![0; n];
                constrained_ranks(&objectives, m, &violation, &mut rank);
                assert_eq!(rank, naive(&objectives, m, n), "m={m} n={n}");
            }
        }
    }

    #[test]
    fn infeasible_solutions_rank_after_feasible_ones_by_violation() {
        let objectives = [0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 0.5, 2.0];
        let violation = [3.0, 0.0, 1.0, 0.0];
        let mut rank = [0; 4];
        let fronts = constrained_ranks(&objectives, 2, &violation, &mut rank);
        assert_eq!(rank, [2, 0, 1, 0]);
        assert_eq!(fronts, 3);
    }

    #[test]
    fn pruning_keeps_one_of_a_close_pair_and_the_extremes() {
        // Points on a line; 1 and 2 are nearly equal.
        let objectives = [0.0, 4.0, 1.0, 3.0, 1.01, 2.99, 2.0, 2.0, 4.0, 0.0];
        let kept = prune_by_crowding(&objectives, 2, &[0, 1, 2, 3, 4], 4);
        assert_eq!(kept.len(), 4);
        assert!(kept.contains(&0) && kept.contains(&4) && kept.contains(&3));
        assert!(kept.contains(&1) != kept.contains(&2));
    }

    #[test]
    fn crowding_marks_the_ends_infinite() {
        let objectives = [0.0, 4.0, 1.0, 3.0, 2.0, 1.0, 4.0, 0.0];
        let mut distance = [0.0; 4];
        crowding(&objectives, 2, &[0, 1, 2, 3], &mut distance);
        assert!(distance[0].is_infinite() && distance[3].is_infinite());
        assert!((distance[1] - (2.0 / 4.0 + 3.0 / 4.0)).abs() < 1e-12);
        assert!((distance[2] - (3.0 / 4.0 + 3.0 / 4.0)).abs() < 1e-12);
    }
}
