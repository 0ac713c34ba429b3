//! Placement as an NSGA-II problem: one integer gene per replica, indexing the app's list of
//! eligible devices; six objectives and three constraints evaluated in O(R log R) per solution,
//! whatever the number of devices.

use std::collections::HashMap;

use super::model::{AppDemand, Device, PlacementConfig, Tier};
use crate::market;
use crate::nsga2::{Problem, Rand};

/// Objectives, in the order of the objective vector.
pub const OBJECTIVES: [&str; 6] = [
    "latency",
    "imbalance",
    "distrust",
    "cost",
    "energy",
    "churn",
];
/// Index of each objective.
pub const LATENCY: usize = 0;
/// Variance of CPU utilisation across eligible devices.
pub const IMBALANCE: usize = 1;
/// Minus the mean trust of the chosen devices.
pub const DISTRUST: usize = 2;
/// Price per hour of the whole placement.
pub const COST: usize = 3;
/// Battery and heat risk.
pub const ENERGY: usize = 4;
/// Replicas moved from the current placement.
pub const CHURN: usize = 5;

/// One app that can be placed, with its eligible devices.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub app: usize,
    pub first_gene: usize,
    pub replicas: usize,
    pub candidates: Vec<u32>,
    /// Current devices of the app (device indices), for churn and transfer time.
    pub current: Vec<u32>,
    /// Price factor of the app: base × market × tier × spot discount (× device factor later).
    pub price_factor: f64,
}

/// The placement problem over `devices` for the placeable apps.
#[derive(Debug)]
pub(crate) struct PlacementProblem<'a> {
    pub devices: &'a [Device],
    pub apps: &'a [AppDemand],
    pub config: &'a PlacementConfig,
    pub slots: Vec<Slot>,
    pub gene_slot: Vec<u32>,
    device_region: Vec<u32>,
    region_s_cap: Vec<f64>,
    device_price_factor: Vec<f64>,
    device_risk: Vec<f64>,
    /// Eligible devices (in any app's candidate list): count, Σu and Σu² of current utilisation.
    eligible: f64,
    sum_u: f64,
    sum_u2: f64,
}

/// Risk of running on a device: low battery, discharging, heat.
pub fn energy_risk(device: &Device) -> f64 {
    let battery = match device.battery {
        None => 0.0,
        Some(level) if device.charging => 0.5 * (1.0 - level.clamp(0.0, 1.0)),
        Some(level) => 1.0 + (1.0 - level.clamp(0.0, 1.0)),
    };
    let heat = ((device.temperature_c - 35.0) / 10.0).max(0.0);
    battery + heat
}

/// Queueing and utilisation penalty of a device at utilisation `u`, ms: an M/M/1-like queue
/// (2 ms · u / (1 − u), capped at 200 ms) plus 20 ms per 0.2 of utilisation above 0.8.
pub fn load_penalty_ms(u: f64) -> f64 {
    let u = u.clamp(0.0, 1.0);
    let queue = if u >= 0.99 {
        200.0
    } else {
        (2.0 * u / (1.0 - u)).min(200.0)
    };
    queue + 100.0 * (u - 0.8).max(0.0)
}

impl<'a> PlacementProblem<'a> {
    pub fn new(
        devices: &'a [Device],
        apps: &'a [AppDemand],
        slots: Vec<Slot>,
        config: &'a PlacementConfig,
    ) -> Self {
        let mut gene_slot = Vec::new();
        for (s, slot) in slots.iter().enumerate() {
            gene_slot.extend(std::iter::repeat_n(s as u32, slot.replicas));
        }
        let mut regions: HashMap<&str, u32> = HashMap::new();
        let device_region: Vec<u32> = devices
            .iter()
            .map(|d| {
                let next = regions.len() as u32;
                *regions.entry(d.region.as_str()).or_insert(next)
            })
            .collect();
        let mut region_s_cap = vec![0.0; regions.len()];
        for (d, device) in devices.iter().enumerate() {
            region_s_cap[device_region[d] as usize] +=
                device.cpu_capacity * config.tier_s_region_share;
        }
        let device_price_factor = devices
            .iter()
            .map(|d| {
                let owner = if d.price_cpu_hour > 0.0 {
                    d.price_cpu_hour / 0.15
                } else {
                    1.0
                };
                owner * market::trust_multiplier(d.trust)
            })
            .collect();
        let device_risk = devices.iter().map(energy_risk).collect();
        let mut is_eligible = vec![false; devices.len()];
        for slot in &slots {
            for &c in &slot.candidates {
                is_eligible[c as usize] = true;
            }
        }
        let (mut eligible, mut sum_u, mut sum_u2) = (0.0, 0.0, 0.0);
        for (d, device) in devices.iter().enumerate() {
            if is_eligible[d] {
                let u = device.load();
                eligible += 1.0;
                sum_u += u;
                sum_u2 += u * u;
            }
        }
        PlacementProblem {
            devices,
            apps,
            config,
            slots,
            gene_slot,
            device_region,
            region_s_cap,
            device_price_factor,
            device_risk,
            eligible,
            sum_u,
            sum_u2,
        }
    }

    /// The device index a gene points at.
    #[inline]
    pub fn device_of(&self, gene: usize, value: u32) -> u32 {
        let slot = &self.slots[self.gene_slot[gene] as usize];
        slot.candidates[(value as usize).min(slot.candidates.len() - 1)]
    }

    /// Which replica of a new active-passive app's `slot` visitors will reach, as an offset
    /// into its genes: the chosen device nearest the routers, which [`super::plan`] lists
    /// first. The control plane makes the first device of a new placement its primary, and an
    /// active-passive app's visitors reach only its primary (the latency objective, a mean over
    /// replicas, does not depend on their order). `None` for a tier-S app (every replica
    /// serves), a single replica, or an app already placed: there the control plane keeps the
    /// primary, or hands over to or promotes the follower holding the most state.
    pub fn primary_of(&self, slot: &Slot, genes: &[u32]) -> Option<usize> {
        if self.apps[slot.app].tier == Tier::S || slot.replicas < 2 || !slot.current.is_empty() {
            return None;
        }
        let device = |k: usize| {
            let g = slot.first_gene + k;
            self.device_of(g, genes[g])
        };
        (0..slot.replicas).min_by(|&a, &b| {
            let latency = |k: usize| self.devices[device(k) as usize].latency_ms;
            latency(a).total_cmp(&latency(b))
        })
    }

    /// Objectives and the violation of each kind (capacity, distinct, tier-S region share) for
    /// `genes`; violations per slot are added to `per_slot` when given. Slots marked in `skip`
    /// are left out, as if those apps were not placed.
    pub fn assess(
        &self,
        genes: &[u32],
        objectives: &mut [f64],
        mut per_slot: Option<&mut [f64]>,
        skip: Option<&[bool]>,
    ) -> [f64; 3] {
        let skipped = |s: usize| skip.is_some_and(|skip| skip[s]);
        // (device, gene) pairs sorted by device: replicas sharing a device are adjacent.
        let mut placed: Vec<(u32, u32)> = genes
            .iter()
            .enumerate()
            .filter(|&(g, _)| !skipped(self.gene_slot[g] as usize))
            .map(|(g, &v)| (self.device_of(g, v), g as u32))
            .collect();
        placed.sort_unstable();

        let mut latency = 0.0;
        let mut trust = 0.0;
        let mut cost = 0.0;
        let mut risk = 0.0;
        let mut risk_weight = 0.0;
        let (mut delta_u, mut delta_u2) = (0.0, 0.0);
        let mut capacity_excess = 0.0;
        let mut duplicates = 0.0;
        let mut region_s = vec![0.0; self.region_s_cap.len()];

        let mut start = 0;
        while start < placed.len() {
            let d = placed[start].0;
            let mut end = start;
            let (mut cpu, mut mem, mut disk) = (0.0, 0.0, 0.0);
            while end < placed.len() && placed[end].0 == d {
                let app =
                    &self.apps[self.slots[self.gene_slot[placed[end].1 as usize] as usize].app];
                cpu += app.cpu;
                mem += app.mem_mb;
                disk += app.component_mb;
                end += 1;
            }
            let device = &self.devices[d as usize];
            let over = (cpu - device.cpu_free).max(0.0) / device.cpu_capacity.max(1e-9)
                + (mem - device.mem_free_mb).max(0.0) / device.mem_capacity_mb.max(1e-9)
                + (disk - device.disk_free_mb).max(0.0) / device.disk_free_mb.max(1.0);
            if over > 0.0 {
                capacity_excess += over;
            }
            let u0 = device.load();
            let u = if device.cpu_capacity > 0.0 {
                ((device.cpu_capacity - device.cpu_free + cpu) / device.cpu_capacity)
                    .clamp(0.0, 1.0)
            } else {
                1.0
            };
            delta_u += u - u0;
            delta_u2 += u * u - u0 * u0;
            let penalty = load_penalty_ms(u);
            // Replicas of one app on this device: adjacent genes of the same slot are duplicates.
            let group = &placed[start..end];
            for (k, &(_, g)) in group.iter().enumerate() {
                let s = self.gene_slot[g as usize] as usize;
                let slot = &self.slots[s];
                let app = &self.apps[slot.app];
                if group[..k]
                    .iter()
                    .any(|&(_, h)| self.gene_slot[h as usize] as usize == s)
                {
                    duplicates += 1.0;
                    if let Some(per_slot) = per_slot.as_deref_mut() {
                        per_slot[s] += 1.0;
                    }
                }
                let transfer = if slot.current.contains(&d) {
                    0.0
                } else {
                    app.component_mb * 8.0 / device.bandwidth_mbps.max(0.1) * 1000.0
                };
                let off_region = match &app.region_preference {
                    Some(region) if *region != device.region => self.config.off_region_penalty_ms,
                    _ => 0.0,
                };
                latency += device.latency_ms + transfer + penalty + off_region;
                trust += device.trust;
                cost += app.cpu * slot.price_factor * self.device_price_factor[d as usize]
                    + app.mem_mb / 1024.0 * device.price_gb_hour * app.tier.price_multiplier();
                risk += app.cpu * self.device_risk[d as usize];
                risk_weight += app.cpu;
                if app.tier == Tier::S {
                    region_s[self.device_region[d as usize] as usize] += app.cpu;
                }
                if over > 0.0
                    && let Some(per_slot) = per_slot.as_deref_mut()
                {
                    per_slot[s] += over;
                }
            }
            start = end;
        }

        let mut region_excess = 0.0;
        for (r, &used) in region_s.iter().enumerate() {
            let cap = self.region_s_cap[r];
            if used > cap {
                region_excess += (used - cap) / cap.max(1e-9);
            }
        }
        if region_excess > 0.0
            && let Some(per_slot) = per_slot
        {
            for (s, slot) in self.slots.iter().enumerate() {
                if self.apps[slot.app].tier == Tier::S && !skipped(s) {
                    per_slot[s] += region_excess;
                }
            }
        }

        let mut churn = 0.0;
        for (s, slot) in self.slots.iter().enumerate() {
            if slot.current.is_empty() || skipped(s) {
                continue;
            }
            let chosen = &genes[slot.first_gene..slot.first_gene + slot.replicas];
            let kept = slot
                .current
                .iter()
                .filter(|&&d| {
                    chosen
                        .iter()
                        .enumerate()
                        .any(|(k, &v)| self.device_of(slot.first_gene + k, v) == d)
                })
                .count();
            let wanted = slot.current.len().min(slot.replicas);
            churn += wanted.saturating_sub(kept) as f64;
        }

        let n = placed.len().max(1) as f64;
        let mean_u = (self.sum_u + delta_u) / self.eligible.max(1.0);
        let variance =
            ((self.sum_u2 + delta_u2) / self.eligible.max(1.0) - mean_u * mean_u).max(0.0);
        objectives[LATENCY] = latency / n;
        objectives[IMBALANCE] = variance;
        objectives[DISTRUST] = -trust / n;
        objectives[COST] = cost;
        objectives[ENERGY] = if risk_weight > 0.0 {
            risk / risk_weight
        } else {
            0.0
        };
        objectives[CHURN] = churn;
        [capacity_excess, duplicates, region_excess]
    }

    /// Move replicas off duplicate and over-full devices to random eligible devices with room.
    fn repair_genes(&self, genes: &mut [u32], rng: &mut Rand) {
        // Usage of touched devices: (cpu, mem, disk).
        let mut used: HashMap<u32, (f64, f64, f64)> = HashMap::with_capacity(genes.len());
        for (g, &v) in genes.iter().enumerate() {
            let app = &self.apps[self.slots[self.gene_slot[g] as usize].app];
            let entry = used.entry(self.device_of(g, v)).or_insert((0.0, 0.0, 0.0));
            entry.0 += app.cpu;
            entry.1 += app.mem_mb;
            entry.2 += app.component_mb;
        }
        let fits = |device: &Device, (cpu, mem, disk): (f64, f64, f64)| {
            cpu <= device.cpu_free + 1e-9
                && mem <= device.mem_free_mb + 1e-9
                && disk <= device.disk_free_mb + 1e-9
        };
        for slot in &self.slots {
            let app = &self.apps[slot.app];
            for k in 0..slot.replicas {
                let g = slot.first_gene + k;
                let d = self.device_of(g, genes[g]);
                let duplicate = (0..k)
                    .any(|j| self.device_of(slot.first_gene + j, genes[slot.first_gene + j]) == d);
                let over = !fits(&self.devices[d as usize], used[&d]);
                if !duplicate && !over {
                    continue;
                }
                for _ in 0..REPAIR_DRAWS {
                    let v = rng.below(slot.candidates.len()) as u32;
                    let nd = slot.candidates[v as usize];
                    if nd == d
                        || (0..slot.replicas).any(|j| {
                            j != k
                                && self.device_of(slot.first_gene + j, genes[slot.first_gene + j])
                                    == nd
                        })
                    {
                        continue;
                    }
                    let now = used.get(&nd).copied().unwrap_or((0.0, 0.0, 0.0));
                    let after = (
                        now.0 + app.cpu,
                        now.1 + app.mem_mb,
                        now.2 + app.component_mb,
                    );
                    if fits(&self.devices[nd as usize], after) {
                        used.insert(nd, after);
                        let old = used.get_mut(&d).expect("moved replica's device is tracked");
                        old.0 -= app.cpu;
                        old.1 -= app.mem_mb;
                        old.2 -= app.component_mb;
                        genes[g] = v;
                        break;
                    }
                }
            }
        }
    }
}

/// Random draws a repair tries per misplaced replica.
const REPAIR_DRAWS: usize = 24;

impl Problem for PlacementProblem<'_> {
    type Gene = u32;

    fn objectives(&self) -> usize {
        OBJECTIVES.len()
    }

    fn genes(&self) -> usize {
        self.gene_slot.len()
    }

    fn evaluate(&self, genes: &[u32], objectives: &mut [f64]) -> f64 {
        let [capacity, duplicates, region] = self.assess(genes, objectives, None, None);
        capacity + duplicates + region
    }

    fn random(&self, genes: &mut [u32], rng: &mut Rand) {
        for slot in &self.slots {
            let n = slot.candidates.len();
            for k in 0..slot.replicas {
                // Distinct devices when the list allows it (rejection sampling, bounded).
                let mut v = rng.below(n) as u32;
                for _ in 0..16 {
                    if !genes[slot.first_gene..slot.first_gene + k].contains(&v) {
                        break;
                    }
                    v = rng.below(n) as u32;
                }
                genes[slot.first_gene + k] = v;
            }
        }
    }

    /// App-wise uniform crossover: each app's replica set comes whole from one parent, which keeps
    /// its replicas on distinct devices.
    fn crossover(&self, p1: &[u32], p2: &[u32], c1: &mut [u32], c2: &mut [u32], rng: &mut Rand) {
        c1.copy_from_slice(p1);
        c2.copy_from_slice(p2);
        if !rng.chance(0.9) {
            return;
        }
        for slot in &self.slots {
            if rng.chance(0.5) {
                let range = slot.first_gene..slot.first_gene + slot.replicas;
                c1[range.clone()].copy_from_slice(&p2[range.clone()]);
                c2[range.clone()].copy_from_slice(&p1[range]);
            }
        }
    }

    fn mutate(&self, genes: &mut [u32], rng: &mut Rand) {
        let p = (1.0 / genes.len().max(1) as f64).max(0.01);
        for (g, gene) in genes.iter_mut().enumerate() {
            if rng.chance(p) {
                let n = self.slots[self.gene_slot[g] as usize].candidates.len();
                *gene = rng.below(n) as u32;
            }
        }
    }

    fn repair(&self, genes: &mut [u32], rng: &mut Rand) {
        if self.config.repair {
            self.repair_genes(genes, rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_grow_with_load_and_risk_with_battery_and_heat() {
        assert_eq!(load_penalty_ms(0.0), 0.0);
        assert!(load_penalty_ms(0.5) < load_penalty_ms(0.9));
        assert!(load_penalty_ms(1.0) >= 200.0);
        let mut device = Device {
            id: "d".into(),
            cpu_capacity: 4.0,
            cpu_free: 4.0,
            mem_capacity_mb: 4096.0,
            mem_free_mb: 4096.0,
            disk_free_mb: 1000.0,
            harvestable: true,
            healthy: true,
            heartbeat_age_s: 1.0,
            battery: None,
            charging: true,
            temperature_c: 30.0,
            region: "r".into(),
            latency_ms: 10.0,
            bandwidth_mbps: 100.0,
            trust: 0.5,
            price_cpu_hour: 0.0,
            price_gb_hour: 0.01,
        };
        assert_eq!(energy_risk(&device), 0.0);
        device.battery = Some(0.5);
        let charging = energy_risk(&device);
        device.charging = false;
        assert!(energy_risk(&device) > charging);
        device.temperature_c = 50.0;
        assert!(energy_risk(&device) > 2.0);
    }
}
