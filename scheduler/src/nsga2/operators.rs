//! Variation operators: simulated binary crossover and polynomial mutation for real genes (Deb's
//! bounded forms), uniform crossover and random-reset mutation for integer genes.

use super::Rand;

/// Settings of the real-gene operators.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RealOperators {
    /// SBX distribution index η_c (larger keeps children closer to their parents).
    pub eta_c: f64,
    /// Probability that a pair is crossed at all.
    pub crossover_probability: f64,
    /// Probability that one variable of a crossed pair is recombined.
    pub variable_probability: f64,
    /// Polynomial-mutation distribution index η_m.
    pub eta_m: f64,
    /// Probability that one variable mutates; `None` means 1 / number of variables.
    pub mutation_probability: Option<f64>,
}

impl Default for RealOperators {
    fn default() -> Self {
        RealOperators {
            eta_c: 20.0,
            crossover_probability: 0.9,
            variable_probability: 0.5,
            eta_m: 20.0,
            mutation_probability: None,
        }
    }
}

impl RealOperators {
    /// Cross `p1` and `p2` into `c1` and `c2` within `[lower, upper]` per variable.
    pub fn crossover(
        &self,
        p1: &[f64],
        p2: &[f64],
        c1: &mut [f64],
        c2: &mut [f64],
        bounds: &[(f64, f64)],
        rng: &mut Rand,
    ) {
        c1.copy_from_slice(p1);
        c2.copy_from_slice(p2);
        if !rng.chance(self.crossover_probability) {
            return;
        }
        for (j, &(lower, upper)) in bounds.iter().enumerate() {
            if !rng.chance(self.variable_probability) || (p1[j] - p2[j]).abs() <= 1e-14 {
                continue;
            }
            let (y1, y2) = if p1[j] < p2[j] {
                (p1[j], p2[j])
            } else {
                (p2[j], p1[j])
            };
            let span = y2 - y1;
            let u = rng.uniform();
            let spread = |beta: f64| {
                let alpha = 2.0 - beta.powf(-(self.eta_c + 1.0));
                if u <= 1.0 / alpha {
                    (u * alpha).powf(1.0 / (self.eta_c + 1.0))
                } else {
                    (1.0 / (2.0 - u * alpha)).powf(1.0 / (self.eta_c + 1.0))
                }
            };
            let beta_low = 1.0 + 2.0 * (y1 - lower) / span;
            let beta_high = 1.0 + 2.0 * (upper - y2) / span;
            let mut a = 0.5 * ((y1 + y2) - spread(beta_low) * span);
            let mut b = 0.5 * ((y1 + y2) + spread(beta_high) * span);
            a = a.clamp(lower, upper);
            b = b.clamp(lower, upper);
            if rng.chance(0.5) {
                std::mem::swap(&mut a, &mut b);
            }
            c1[j] = a;
            c2[j] = b;
        }
    }

    /// Mutate `genes` in place within their bounds.
    pub fn mutate(&self, genes: &mut [f64], bounds: &[(f64, f64)], rng: &mut Rand) {
        let p = self
            .mutation_probability
            .unwrap_or(1.0 / genes.len().max(1) as f64);
        let power = 1.0 / (self.eta_m + 1.0);
        for (x, &(lower, upper)) in genes.iter_mut().zip(bounds) {
            if !rng.chance(p) {
                continue;
            }
            let span = upper - lower;
            if span <= 0.0 {
                continue;
            }
            let delta1 = (*x - lower) / span;
            let delta2 = (upper - *x) / span;
            let u = rng.uniform();
            let deltaq = if u < 0.5 {
                let v = 2.0 * u + (1.0 - 2.0 * u) * (1.0 - delta1).powf(self.eta_m + 1.0);
                v.powf(power) - 1.0
            } else {
                let v = 2.0 * (1.0 - u) + 2.0 * (u - 0.5) * (1.0 - delta2).powf(self.eta_m + 1.0);
                1.0 - v.powf(power)
            };
            *x = (*x + deltaq * span).clamp(lower, upper);
        }
    }
}

/// Uniform crossover for integer genes: each position comes from either parent with equal odds.
pub fn uniform_crossover(
    p1: &[u32],
    p2: &[u32],
    c1: &mut [u32],
    c2: &mut [u32],
    probability: f64,
    rng: &mut Rand,
) {
    c1.copy_from_slice(p1);
    c2.copy_from_slice(p2);
    if !rng.chance(probability) {
        return;
    }
    for j in 0..p1.len() {
        if rng.chance(0.5) {
            c1[j] = p2[j];
            c2[j] = p1[j];
        }
    }
}

/// Random-reset mutation: each gene, with probability `probability`, takes a uniform value in
/// `0..upper[j]`.
pub fn reset_mutation(
    genes: &mut [u32],
    upper: impl Fn(usize) -> u32,
    probability: f64,
    rng: &mut Rand,
) {
    for (j, gene) in genes.iter_mut().enumerate() {
        if rng.chance(probability) {
            let n = upper(j).max(1) as usize;
            *gene = rng.below(n) as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_operators_stay_within_bounds() {
        let ops = RealOperators {
            mutation_probability: Some(1.0),
            ..RealOperators::default()
        };
        let bounds = vec![(0.0, 1.0), (-5.0, 5.0), (2.0, 2.5)];
        let mut rng = Rand::new(1);
        for _ in 0..2000 {
            let p1: Vec<f64> = bounds
                .iter()
                .map(|&(l, u)| l + rng.uniform() * (u - l))
                .collect();
            let p2: Vec<f64> = bounds
                .iter()
                .map(|&(l, u)| l + rng.uniform() * (u - l))
                .collect();
            let (mut c1, mut c2) = (vec![0.0; 3], vec![0.0; 3]);
            ops.crossover(&p1, &p2, &mut c1, &mut c2, &bounds, &mut rng);
            ops.mutate(&mut c1, &bounds, &mut rng);
            for (x, &(l, u)) in c1.iter().chain(&c2).zip(bounds.iter().cycle()) {
                assert!(*x >= l && *x <= u, "{x} outside [{l}, {u}]");
            }
        }
    }

    #[test]
    fn integer_operators_stay_within_bounds() {
        let mut rng = Rand::new(2);
        let (p1, p2) = (vec![0, 1, 2, 3], vec![3, 2, 1, 0]);
        let (mut c1, mut c2) = (vec![0; 4], vec![0; 4]);
        uniform_crossover(&p1, &p2, &mut c1, &mut c2, 1.0, &mut rng);
        for j in 0..4 {
            assert!(c1[j] == p1[j] || c1[j] == p2[j]);
            assert_eq!(c1[j] + c2[j], p1[j] + p2[j]);
        }
        reset_mutation(&mut c1, |j| j as u32 + 1, 1.0, &mut rng);
        for (j, g) in c1.iter().enumerate() {
            assert!(*g <= j as u32);
        }
    }
}
