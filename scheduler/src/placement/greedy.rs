//! The greedy baseline: first-fit decreasing. Replicas, largest CPU demand first, each go to the
//! first eligible device (in device order) with room that does not already run a replica of the
//! same app and keeps tier S within its regional share.

use std::collections::HashMap;

use super::model::Tier;
use super::problem::PlacementProblem;

/// Genes of the first-fit-decreasing placement, and for each slot whether all its replicas fit.
pub(crate) fn first_fit_decreasing(problem: &PlacementProblem<'_>) -> (Vec<u32>, Vec<bool>) {
    let devices = problem.devices;
    let mut genes = vec![u32::MAX; problem.gene_slot.len()];
    let mut placed = vec![true; problem.slots.len()];
    let mut order: Vec<usize> = (0..genes.len()).collect();
    let demand = |g: usize| problem.apps[problem.slots[problem.gene_slot[g] as usize].app].cpu;
    order.sort_by(|&a, &b| demand(b).total_cmp(&demand(a)).then(a.cmp(&b)));
    let mut cpu = vec![0.0; devices.len()];
    let mut mem = vec![0.0; devices.len()];
    let mut disk = vec![0.0; devices.len()];
    let mut region_s: HashMap<&str, f64> = HashMap::new();
    let mut region_cap: HashMap<&str, f64> = HashMap::new();
    for d in devices {
        *region_cap.entry(d.region.as_str()).or_insert(0.0) +=
            d.cpu_capacity * problem.config.tier_s_region_share;
    }
    for g in order {
        let s = problem.gene_slot[g] as usize;
        let slot = &problem.slots[s];
        let app = &problem.apps[slot.app];
        let siblings: Vec<u32> = (slot.first_gene..slot.first_gene + slot.replicas)
            .filter(|&h| h != g && genes[h] != u32::MAX)
            .map(|h| genes[h])
            .collect();
        let found = slot.candidates.iter().enumerate().find(|&(v, &d)| {
            let device = &devices[d as usize];
            let d = d as usize;
            !siblings.contains(&(v as u32))
                && cpu[d] + app.cpu <= device.cpu_free + 1e-9
                && mem[d] + app.mem_mb <= device.mem_free_mb + 1e-9
                && disk[d] + app.component_mb <= device.disk_free_mb + 1e-9
                && (app.tier != Tier::S
                    || region_s.get(device.region.as_str()).copied().unwrap_or(0.0) + app.cpu
                        <= region_cap[device.region.as_str()] + 1e-9)
        });
        match found {
            Some((v, &d)) => {
                let device = &devices[d as usize];
                let d = d as usize;
                cpu[d] += app.cpu;
                mem[d] += app.mem_mb;
                disk[d] += app.component_mb;
                if app.tier == Tier::S {
                    *region_s.entry(device.region.as_str()).or_insert(0.0) += app.cpu;
                }
                genes[g] = v as u32;
            }
            None => placed[s] = false,
        }
    }
    for gene in &mut genes {
        if *gene == u32::MAX {
            *gene = 0;
        }
    }
    (genes, placed)
}
