//! Standard test problems (ZDT1–3 with 30 variables, DTLZ2) for checking NSGA-II against published
//! figures.

use crate::nsga2::{Problem, Rand, RealOperators};

/// Which benchmark function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// Convex front, 2 objectives.
    Zdt1,
    /// Concave front, 2 objectives.
    Zdt2,
    /// Disconnected front, 2 objectives.
    Zdt3,
    /// Spherical front, 3 objectives.
    Dtlz2,
}

/// A benchmark problem with real genes in [0, 1].
#[derive(Debug, Clone)]
pub struct RealBenchmark {
    /// The function.
    pub kind: Benchmark,
    /// Number of variables.
    pub variables: usize,
    /// Operator settings.
    pub operators: RealOperators,
    bounds: Vec<(f64, f64)>,
}

impl RealBenchmark {
    /// ZDT problems with 30 variables; DTLZ2 with 12 (3 objectives).
    pub fn new(kind: Benchmark) -> Self {
        let variables = match kind {
            Benchmark::Dtlz2 => 12,
            _ => 30,
        };
        RealBenchmark {
            kind,
            variables,
            operators: RealOperators::default(),
            bounds: vec![(0.0, 1.0); variables],
        }
    }
}

impl Problem for RealBenchmark {
    type Gene = f64;

    fn objectives(&self) -> usize {
        match self.kind {
            Benchmark::Dtlz2 => 3,
            _ => 2,
        }
    }

    fn genes(&self) -> usize {
        self.variables
    }

    fn evaluate(&self, x: &[f64], f: &mut [f64]) -> f64 {
        match self.kind {
            Benchmark::Zdt1 | Benchmark::Zdt2 | Benchmark::Zdt3 => {
                let g = 1.0 + 9.0 * x[1..].iter().sum::<f64>() / (x.len() - 1) as f64;
                let r = x[0] / g;
                let h = match self.kind {
                    Benchmark::Zdt1 => 1.0 - r.sqrt(),
                    Benchmark::Zdt2 => 1.0 - r * r,
                    _ => 1.0 - r.sqrt() - r * (10.0 * std::f64::consts::PI * x[0]).sin(),
                };
                f[0] = x[0];
                f[1] = g * h;
            }
            Benchmark::Dtlz2 => {
                let m = 3;
                let g: f64 = x[m - 1..].iter().map(|v| (v - 0.5) * (v - 0.5)).sum();
                let half_pi = std::f64::consts::FRAC_PI_2;
                f[0] = (1.0 + g) * (x[0] * half_pi).cos() * (x[1] * half_pi).cos();
                f[1] = (1.0 + g) * (x[0] * half_pi).cos() * (x[1] * half_pi).sin();
                f[2] = (1.0 + g) * (x[0] * half_pi).sin();
            }
        }
        0.0
    }

    fn random(&self, genes: &mut [f64], rng: &mut Rand) {
        for x in genes {
            *x = rng.uniform();
        }
    }

    fn crossover(&self, p1: &[f64], p2: &[f64], c1: &mut [f64], c2: &mut [f64], rng: &mut Rand) {
        self.operators.crossover(p1, p2, c1, c2, &self.bounds, rng);
    }

    fn mutate(&self, genes: &mut [f64], rng: &mut Rand) {
        self.operators.mutate(genes, &self.bounds, rng);
    }
}
