//! Placement of app replicas on devices: the model, the NSGA-II problem, the per-tier pick and the
//! greedy baseline.
//!
//! [`plan`] filters each app's eligible devices (healthy, harvestable, fresh heartbeat, trusted
//! enough, within its price, not excluded, with room for one replica), reports apps that cannot
//! be placed with the filter that stops them, runs NSGA-II seeded with the current placement and
//! the greedy one, and picks the result per tier (see [`pick`]). The current placement is kept
//! unless the pick beats it by `min_gain`, so nothing moves when nothing changed. With
//! [`PlacementStrategy::Greedy`] the greedy baseline's placement is taken as it is instead, to
//! measure what NSGA-II buys on the same inputs.

mod greedy;
mod model;
pub mod pick;
mod problem;
pub mod scenarios;

use std::collections::HashMap;

pub use model::{AppDemand, Assignment, Device, PlacementConfig, PlacementStrategy, Tier};
pub use problem::{
    CHURN, COST, DISTRUST, ENERGY, IMBALANCE, LATENCY, OBJECTIVES, energy_risk, load_penalty_ms,
};

use crate::market;
use crate::nsga2::{self, Config};
use problem::{PlacementProblem, Slot};

/// An app that could not be placed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaceable {
    /// The app.
    pub app: String,
    /// The constraint that blocks it, for people.
    pub reason: String,
}

/// The result of a placement run.
#[derive(Debug, Clone)]
pub struct PlacementOutcome {
    /// Devices of every placed app.
    pub assignment: Assignment,
    /// Apps not placed, with the reason.
    pub unplaceable: Vec<Unplaceable>,
    /// Objectives of the chosen placement (see [`OBJECTIVES`]).
    pub objectives: [f64; 6],
    /// Objectives of the greedy baseline on the same input, when it placed everything.
    pub greedy: Option<[f64; 6]>,
    /// Replicas moved from the current placement.
    pub moved: usize,
    /// Feasible solutions on the final Pareto front.
    pub front_size: usize,
    /// Objectives of every feasible solution on the final Pareto front.
    pub front: Vec<[f64; 6]>,
    /// Whether the current placement was kept as it was.
    pub kept_current: bool,
}

/// Why a device is not eligible for an app, in the order the filters are applied.
const FILTERS: [&str; 8] = [
    "excluded",
    "unhealthy",
    "stale heartbeat",
    "not harvestable",
    "below the app's minimum trust",
    "above the app's maximum price",
    "without free CPU, memory or disk for one replica",
    "eligible",
];

/// Which filter stops `device` for `app` (an index into [`FILTERS`]). A device is above the app's
/// maximum price when its owner asks more, or when the market price the app would pay on it
/// (`price`) is higher.
fn filter_index(device: &Device, app: &AppDemand, config: &PlacementConfig, price: f64) -> usize {
    if app.excluded_devices.contains(&device.id) {
        0
    } else if !device.healthy {
        1
    } else if device.heartbeat_age_s > config.max_heartbeat_age_s {
        2
    } else if !device.harvestable {
        3
    } else if device.trust < app.min_trust {
        4
    } else if app
        .max_price
        .is_some_and(|max| price > max || device.price_cpu_hour > max)
    {
        5
    } else if device.cpu_free + 1e-9 < app.cpu
        || device.mem_free_mb + 1e-9 < app.mem_mb
        || device.disk_free_mb + 1e-9 < app.component_mb
    {
        6
    } else {
        7
    }
}

/// The CPU price an app pays on a device per hour, per core.
fn unit_price(app: &AppDemand, device: &Device, demand: f64, supply: f64) -> f64 {
    let owner = if device.price_cpu_hour > 0.0 {
        device.price_cpu_hour / 0.15
    } else {
        1.0
    };
    owner * market::price_per_cpu_hour(app.pricing, app.tier, demand, supply, device.trust)
}

/// Place `apps` on `devices`, starting from `current`, with `config.strategy`: NSGA-II (Fog's), or
/// the greedy baseline alone for comparisons.
pub fn plan(
    devices: &[Device],
    apps: &[AppDemand],
    current: &Assignment,
    config: &PlacementConfig,
) -> PlacementOutcome {
    let index: HashMap<&str, u32> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let demand: f64 = apps.iter().map(|a| a.cpu * a.replica_count() as f64).sum();
    let supply: f64 = devices
        .iter()
        .filter(|d| d.healthy && d.harvestable && d.heartbeat_age_s <= config.max_heartbeat_age_s)
        .map(|d| d.cpu_free)
        .sum();

    let mut unplaceable = Vec::new();
    let mut slots = Vec::new();
    let mut first_gene = 0;
    for (a, app) in apps.iter().enumerate() {
        let replicas = app.replica_count() as usize;
        if replicas == 0 {
            continue;
        }
        let mut counts = [0usize; FILTERS.len()];
        let mut candidates = Vec::new();
        // The lowest price among devices too dear for the app, to say what it would take.
        let mut cheapest_refused = f64::INFINITY;
        for (d, device) in devices.iter().enumerate() {
            let price = unit_price(app, device, demand, supply);
            let f = filter_index(device, app, config, price);
            counts[f] += 1;
            if f == 5 {
                cheapest_refused = cheapest_refused.min(price.max(device.price_cpu_hour));
            }
            if f == FILTERS.len() - 1 {
                candidates.push(d as u32);
            }
        }
        if candidates.len() < replicas {
            let stops: Vec<String> = (0..FILTERS.len() - 1)
                .filter(|&f| counts[f] > 0)
                .map(|f| match (f, app.max_price) {
                    (5, Some(max)) => format!(
                        "{} {} of {max} per CPU-hour (the cheapest costs {cheapest_refused:.4})",
                        counts[f], FILTERS[f]
                    ),
                    _ => format!("{} {}", counts[f], FILTERS[f]),
                })
                .collect();
            unplaceable.push(Unplaceable {
                app: app.id.clone(),
                reason: format!(
                    "needs {replicas} distinct devices but only {} of {} are eligible ({})",
                    candidates.len(),
                    devices.len(),
                    if stops.is_empty() {
                        "no devices".to_string()
                    } else {
                        stops.join(", ")
                    }
                ),
            });
            continue;
        }
        let current_devices: Vec<u32> = current
            .get(&app.id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| index.get(id.as_str()).copied())
                    .collect()
            })
            .unwrap_or_default();
        let price_factor = market::price_per_cpu_hour(app.pricing, app.tier, demand, supply, 0.0);
        slots.push(Slot {
            app: a,
            first_gene,
            replicas,
            candidates,
            current: current_devices,
            price_factor,
        });
        first_gene += replicas;
    }

    let problem = PlacementProblem::new(devices, apps, slots, config);
    let genes_count = problem.gene_slot.len();
    if genes_count == 0 {
        return PlacementOutcome {
            assignment: Assignment::new(),
            unplaceable,
            objectives: [0.0; 6],
            greedy: None,
            moved: 0,
            front_size: 0,
            front: Vec::new(),
            kept_current: false,
        };
    }

    let (greedy_genes, greedy_placed) = greedy::first_fit_decreasing(&problem);
    let mut greedy_objectives = [0.0; 6];
    let greedy_violation = problem.assess(&greedy_genes, &mut greedy_objectives, None, None);
    let greedy_feasible =
        greedy_placed.iter().all(|&p| p) && greedy_violation.iter().all(|&v| v <= 0.0);

    let (chosen, front, kept_current, mut dropped) = match config.strategy {
        PlacementStrategy::Greedy => {
            // The baseline as it is: what it could not place is reported, nothing is searched.
            let dropped: Vec<bool> = greedy_placed.iter().map(|&p| !p).collect();
            for (slot, _) in problem.slots.iter().zip(&dropped).filter(|(_, d)| **d) {
                unplaceable.push(Unplaceable {
                    app: apps[slot.app].id.clone(),
                    reason: format!(
                        "the greedy baseline found no room for its {} replicas",
                        slot.replicas
                    ),
                });
            }
            (greedy_genes, Vec::new(), false, dropped)
        }
        PlacementStrategy::Nsga2 => {
            let (chosen, front, kept_current) = search(
                &problem,
                config,
                &greedy_genes,
                greedy_feasible
                    .then_some((greedy_objectives[LATENCY], greedy_objectives[IMBALANCE])),
            );
            (
                chosen,
                front,
                kept_current,
                vec![false; problem.slots.len()],
            )
        }
    };

    // Drop apps whose replicas still break a constraint, lowest tier first, until none does.
    loop {
        let mut per_slot = vec![0.0; problem.slots.len()];
        let mut objectives = [0.0; 6];
        problem.assess(
            &chosen,
            &mut objectives,
            Some(&mut per_slot),
            Some(&dropped),
        );
        // Tier B before A before S, then the larger violation, then the later app.
        let worst = (0..problem.slots.len())
            .filter(|&s| !dropped[s] && per_slot[s] > 0.0)
            .max_by(|&a, &b| {
                let (ta, tb) = (
                    apps[problem.slots[a].app].tier,
                    apps[problem.slots[b].app].tier,
                );
                ta.cmp(&tb)
                    .then(per_slot[a].total_cmp(&per_slot[b]))
                    .then(a.cmp(&b))
            });
        let Some(s) = worst else { break };
        dropped[s] = true;
        let slot = &problem.slots[s];
        unplaceable.push(Unplaceable {
            app: apps[slot.app].id.clone(),
            reason: format!(
                "no arrangement found that fits its {} replicas beside the other apps \
                 (capacity, distinct devices or tier S regional share)",
                slot.replicas
            ),
        });
    }

    let mut assignment = Assignment::new();
    let mut moved = 0;
    for (s, slot) in problem.slots.iter().enumerate() {
        if dropped[s] {
            continue;
        }
        let mut ids: Vec<String> = (0..slot.replicas)
            .map(|k| {
                let g = slot.first_gene + k;
                devices[problem.device_of(g, chosen[g]) as usize].id.clone()
            })
            .collect();
        // The replica visitors will reach first (see `primary_of`), as the latency was scored.
        if let Some(primary) = problem.primary_of(slot, &chosen) {
            let first = ids.remove(primary);
            ids.insert(0, first);
        }
        let wanted = slot.current.len().min(slot.replicas);
        let kept = slot
            .current
            .iter()
            .filter(|&&d| ids.contains(&devices[d as usize].id))
            .count();
        moved += wanted.saturating_sub(kept);
        assignment.insert(apps[slot.app].id.clone(), ids);
    }
    let mut objectives = [0.0; 6];
    problem.assess(&chosen, &mut objectives, None, Some(&dropped));
    PlacementOutcome {
        assignment,
        unplaceable,
        objectives,
        greedy: greedy_feasible.then_some(greedy_objectives),
        moved,
        front_size: front.len(),
        front,
        kept_current,
    }
}

/// NSGA-II seeded with the current placement and the greedy one, the per-tier pick (with the
/// greedy `floor` on latency and balance) and the hysteresis that keeps the current placement:
/// the chosen genes, the objectives of the feasible first front, and whether the current
/// placement was kept.
fn search(
    problem: &PlacementProblem<'_>,
    config: &PlacementConfig,
    greedy_genes: &[u32],
    floor: Option<(f64, f64)>,
) -> (Vec<u32>, Vec<[f64; 6]>, bool) {
    // The current placement as genes, where every replica of every app is still on an eligible
    // device; otherwise the greedy genes fill the gaps.
    let mut current_genes = greedy_genes.to_vec();
    let mut missing = vec![false; current_genes.len()];
    for slot in &problem.slots {
        for k in 0..slot.replicas {
            let g = slot.first_gene + k;
            match slot
                .current
                .get(k)
                .and_then(|d| slot.candidates.binary_search(d).ok())
            {
                Some(v) => current_genes[g] = v as u32,
                None => missing[g] = true,
            }
        }
    }
    let current_complete = !missing.contains(&true);

    let nsga = Config {
        population: config.population,
        generations: config.generations,
        seed: config.seed,
        parallel: true,
    };
    let seeds = vec![current_genes.clone(), greedy_genes.to_vec()];
    let population = nsga2::run(problem, &nsga, &seeds);

    let front = population.pareto_front();
    let chosen: Vec<u32> = if front.is_empty() {
        // No feasible solution: take the least infeasible and report the apps it cannot place.
        let best = (0..population.len())
            .min_by(|&a, &b| {
                population.violation[a]
                    .total_cmp(&population.violation[b])
                    .then(a.cmp(&b))
            })
            .expect("population is not empty");
        population.genes_of(best).to_vec()
    } else {
        compose(problem, &population, &front, floor)
    };

    // Keep the current placement unless the choice is clearly better. Where some replicas
    // must move (their device left or no longer qualifies), the baseline is the current
    // placement with only those replicas replaced, so that losing one device moves what was on
    // it rather than whatever a fresh pick would rearrange.
    let mut chosen = chosen;
    let mut kept_current = false;
    let baseline = if current_complete {
        Some(current_genes.clone())
    } else {
        repaired(problem, &current_genes, &missing, &chosen)
    };
    if let Some(current_genes) = baseline {
        let mut current_objectives = [0.0; 6];
        let violation = problem.assess(&current_genes, &mut current_objectives, None, None);
        if violation.iter().all(|&v| v <= 0.0) {
            let mut chosen_objectives = [0.0; 6];
            problem.assess(&chosen, &mut chosen_objectives, None, None);
            let blended = blended_weights(problem);
            let rows: Vec<&[f64]> = front
                .iter()
                .map(|&i| population.objectives_of(i))
                .chain([&current_objectives[..], &chosen_objectives[..]])
                .collect();
            let scores = pick::scores(&rows, &blended);
            let (current_score, chosen_score) = (scores[rows.len() - 2], scores[rows.len() - 1]);
            if chosen_score > current_score - config.min_gain {
                chosen = current_genes;
                kept_current = current_complete;
            }
        }
    }
    let front = front
        .iter()
        .map(|&i| {
            let mut row = [0.0; 6];
            row.copy_from_slice(population.objectives_of(i));
            row
        })
        .collect();
    (chosen, front, kept_current)
}

/// `current` with each `missing` gene (a replica whose device can no longer hold it) taken from
/// `chosen`'s genes for the same app, the same replica first, skipping devices the app's other
/// replicas hold; `None` when some replica finds no such device.
fn repaired(
    problem: &PlacementProblem<'_>,
    current: &[u32],
    missing: &[bool],
    chosen: &[u32],
) -> Option<Vec<u32>> {
    let mut genes = current.to_vec();
    for slot in &problem.slots {
        let range = slot.first_gene..slot.first_gene + slot.replicas;
        for g in range.clone().filter(|&g| missing[g]) {
            let holds = |genes: &[u32], d: u32| {
                range
                    .clone()
                    .any(|h| h != g && !missing[h] && problem.device_of(h, genes[h]) == d)
                    || range.clone().any(|h| {
                        h != g && missing[h] && h < g && problem.device_of(h, genes[h]) == d
                    })
            };
            let pick = std::iter::once(g)
                .chain(range.clone().filter(|&h| h != g))
                .map(|h| chosen[h])
                .find(|&v| !holds(&genes, problem.device_of(g, v)))?;
            genes[g] = pick;
        }
    }
    Some(genes)
}

/// Place only the `pending` apps, keeping every other app where `current` has it: the devices
/// offer what the kept replicas leave free (CPU, memory, disk), and the optimiser sees the
/// pending apps alone. This is what publishing one app costs (that app against the fleet), not
/// a re-plan of every app; the full [`plan`] runs on its own cadence and also enforces what
/// this does not re-check across kept and new replicas (tier S's regional share).
pub fn plan_some(
    devices: &[Device],
    apps: &[AppDemand],
    current: &Assignment,
    pending: &std::collections::HashSet<String>,
    config: &PlacementConfig,
) -> PlacementOutcome {
    let index: HashMap<&str, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    let mut residual = devices.to_vec();
    let mut kept = Assignment::new();
    for app in apps.iter().filter(|a| !pending.contains(&a.id)) {
        let Some(ids) = current.get(&app.id) else {
            continue;
        };
        for id in ids.iter().take(app.replica_count() as usize) {
            if let Some(&d) = index.get(id.as_str()) {
                let device = &mut residual[d];
                device.cpu_free = (device.cpu_free - app.cpu).max(0.0);
                device.mem_free_mb = (device.mem_free_mb - app.mem_mb).max(0.0);
                device.disk_free_mb = (device.disk_free_mb - app.component_mb).max(0.0);
            }
        }
        kept.insert(app.id.clone(), ids.clone());
    }
    let some: Vec<AppDemand> = apps
        .iter()
        .filter(|a| pending.contains(&a.id))
        .cloned()
        .collect();
    let mut outcome = plan(&residual, &some, current, config);
    outcome.assignment.extend(kept);
    outcome
}

/// Tier weights blended by each tier's share of the replicas.
fn blended_weights(problem: &PlacementProblem<'_>) -> [f64; 6] {
    let mut blended = [0.0; 6];
    let total = problem.gene_slot.len() as f64;
    for slot in &problem.slots {
        let w = pick::weights(problem.apps[slot.app].tier);
        for k in 0..6 {
            blended[k] += w[k] * slot.replicas as f64 / total;
        }
    }
    blended
}

/// Pick per tier and compose: each app takes its genes from its tier's pick. If the composed
/// placement breaks a constraint, use the single pick under the blended weights instead.
fn compose(
    problem: &PlacementProblem<'_>,
    population: &nsga2::Population<u32>,
    front: &[usize],
    floor: Option<(f64, f64)>,
) -> Vec<u32> {
    let rows: Vec<&[f64]> = front.iter().map(|&i| population.objectives_of(i)).collect();
    let blended =
        front[pick::pick(&rows, &blended_weights(problem), floor).expect("front is not empty")];
    let mut composed = population.genes_of(blended).to_vec();
    for tier in [Tier::S, Tier::A, Tier::B] {
        if !problem
            .slots
            .iter()
            .any(|s| problem.apps[s.app].tier == tier)
        {
            continue;
        }
        let chosen =
            front[pick::pick(&rows, &pick::weights(tier), floor).expect("front is not empty")];
        let genes = population.genes_of(chosen);
        for slot in problem
            .slots
            .iter()
            .filter(|s| problem.apps[s.app].tier == tier)
        {
            let range = slot.first_gene..slot.first_gene + slot.replicas;
            composed[range.clone()].copy_from_slice(&genes[range]);
        }
    }
    let mut objectives = [0.0; 6];
    let violation = problem.assess(&composed, &mut objectives, None, None);
    if violation.iter().all(|&v| v <= 0.0) {
        composed
    } else {
        population.genes_of(blended).to_vec()
    }
}
