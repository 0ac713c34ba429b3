//! Exact hypervolume of a set of points (objectives minimised) against a reference point.
//!
//! Two objectives use a sort-and-sweep in O(n log n); more objectives slice along the last
//! objective and recurse (for three objectives, O(n² log n)), which is exact and fast enough for
//! the fronts NSGA-II keeps.

/// Hypervolume dominated by `points` (row-major, `m` values each) and bounded by `reference`.
/// Points not strictly better than the reference in every objective contribute nothing.
pub fn hypervolume(points: &[f64], m: usize, reference: &[f64]) -> f64 {
    assert!(
        m >= 1 && reference.len() == m,
        "reference point must have {m} values"
    );
    let inside: Vec<&[f64]> = points
        .chunks(m)
        .filter(|p| p.iter().zip(reference).all(|(x, r)| x < r))
        .collect();
    volume(inside, m, reference)
}

fn volume(mut points: Vec<&[f64]>, m: usize, reference: &[f64]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    match m {
        1 => reference[0] - points.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => {
            points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
            let mut area = 0.0;
            let mut floor = reference[1];
            for p in points {
                if p[1] < floor {
                    area += (reference[0] - p[0]) * (floor - p[1]);
                    floor = p[1];
                }
            }
            area
        }
        _ => {
            let last = m - 1;
            points.sort_by(|a, b| a[last].total_cmp(&b[last]));
            let mut total = 0.0;
            for k in 0..points.len() {
                let top = if k + 1 < points.len() {
                    points[k + 1][last]
                } else {
                    reference[last]
                };
                let thickness = top - points[k][last];
                if thickness <= 0.0 {
                    continue;
                }
                let slice: Vec<&[f64]> = points[..=k].iter().map(|p| &p[..last]).collect();
                total += thickness * volume(slice, last, &reference[..last]);
            }
            total
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_staircases() {
        assert_eq!(hypervolume(&[0.0, 0.0], 2, &[1.0, 1.0]), 1.0);
        assert_eq!(hypervolume(&[0.5, 0.5, 0.5], 3, &[1.0, 1.0, 1.0]), 0.125);
        // Two steps: [0,1]x[0.5,1] ∪ [0.5,1]x[0,1] = 0.75.
        let hv = hypervolume(&[0.0, 0.5, 0.5, 0.0], 2, &[1.0, 1.0]);
        assert!((hv - 0.75).abs() < 1e-12);
        // Dominated and outside points add nothing.
        let hv2 = hypervolume(&[0.0, 0.5, 0.5, 0.0, 0.6, 0.6, 2.0, 0.0], 2, &[1.0, 1.0]);
        assert!((hv2 - 0.75).abs() < 1e-12);
        // Three objectives: inclusion-exclusion of two boxes.
        let hv3 = hypervolume(&[0.0, 0.0, 0.5, 0.5, 0.5, 0.0], 3, &[1.0, 1.0, 1.0]);
        let expected = 0.5 + 0.25 - 0.125;
        assert!((hv3 - expected).abs() < 1e-12, "{hv3}");
    }

    #[test]
    fn the_analytic_zdt1_front_reaches_its_known_volume() {
        // 10,000 points on f2 = 1 - sqrt(f1): the exact value with reference (1.1, 1.1) is
        // 1.21 - 1/3 = 0.876667.
        let n = 10_000;
        let points: Vec<f64> = (0..n)
            .flat_map(|i| {
                let f1 = i as f64 / (n - 1) as f64;
                [f1, 1.0 - f1.sqrt()]
            })
            .collect();
        let hv = hypervolume(&points, 2, &[1.1, 1.1]);
        assert!((hv - 0.876667).abs() < 1e-3, "{hv}");
    }
}
