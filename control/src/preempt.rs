//! Spot preemption: when an on-demand or reserved app cannot be placed for lack of room, the
//! spot apps give way — placed again on what the others leave, or parked with their state where
//! it is — while no on-demand or reserved app ever loses its place to another app.

use std::collections::HashSet;

use fog_scheduler::market::Pricing;
use fog_scheduler::placement::{
    self, AppDemand, Assignment, Device, PlacementConfig, PlacementOutcome, Unplaceable,
};

/// Why a spot app gave way, for `fog ps` and the app's events.
pub(crate) const PARKED_FOR_HIGHER_BIDS: &str =
    "its spot capacity went to on-demand or reserved apps";

/// True for the apps that never give way (on-demand and reserved).
fn firm(demand: &AppDemand) -> bool {
    demand.pricing != Pricing::Spot
}

/// Make room for firm apps `outcome` could not place by planning firm apps first on the whole
/// fleet beside the firm apps already placed (which keep their devices), then spot apps on what
/// is left (`current` seeds them, so they stay where they can); the spot apps left without a
/// place are the ones to park. When no firm app was starved, no spot app holds anything, or
/// giving way would not place a starved app, `outcome` is returned unchanged.
pub(crate) fn make_room(
    outcome: PlacementOutcome,
    fleet: &[Device],
    demands: &[AppDemand],
    current: &Assignment,
    config: &PlacementConfig,
) -> PlacementOutcome {
    let starved: Vec<&str> = outcome
        .unplaceable
        .iter()
        .map(|u| u.app.as_str())
        .filter(|app| demands.iter().any(|d| d.id == *app && firm(d)))
        .collect();
    let spot: HashSet<String> = demands
        .iter()
        .filter(|d| !firm(d))
        .map(|d| d.id.clone())
        .collect();
    let spot_holds = spot
        .iter()
        .any(|s| outcome.assignment.get(s).is_some_and(|d| !d.is_empty()));
    if starved.is_empty() || !spot_holds {
        return outcome;
    }
    let firm_demands: Vec<AppDemand> = demands.iter().filter(|d| firm(d)).cloned().collect();
    // Firm apps placed stay exactly where the plan put them (never displaced for another);
    // only the starved ones are placed, on a fleet where spot replicas count for nothing.
    let firm_placed: Assignment = outcome
        .assignment
        .iter()
        .filter(|(app, _)| !spot.contains(*app))
        .map(|(app, devices)| (app.clone(), devices.clone()))
        .chain(
            starved
                .iter()
                .filter_map(|app| current.get(*app).map(|d| (app.to_string(), d.clone()))),
        )
        .collect();
    let pending: HashSet<String> = starved.iter().map(|a| a.to_string()).collect();
    let first = placement::plan_some(fleet, &firm_demands, &firm_placed, &pending, config);
    let helped = starved
        .iter()
        .any(|app| first.assignment.contains_key(*app));
    if !helped {
        return outcome;
    }
    let mut seeded = first.assignment.clone();
    for app in &spot {
        if let Some(devices) = current.get(app) {
            seeded.insert(app.clone(), devices.clone());
        }
    }
    let second = placement::plan_some(fleet, demands, &seeded, &spot, config);
    let mut unplaceable = first.unplaceable;
    unplaceable.extend(second.unplaceable.into_iter().map(|u| Unplaceable {
        reason: format!("{PARKED_FOR_HIGHER_BIDS} ({})", u.reason),
        app: u.app,
    }));
    PlacementOutcome {
        unplaceable,
        ..second
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::api::Tier;
    use fog_scheduler::placement::scenarios;

    /// Two devices with room for one 0.3-core replica each.
    fn fleet() -> Vec<Device> {
        let mut fleet = scenarios::devices(2, 1);
        for (i, d) in fleet.iter_mut().enumerate() {
            d.id = format!("d{i}");
            d.cpu_capacity = 0.5;
            d.cpu_free = 0.5;
            d.mem_free_mb = 4096.0;
            d.disk_free_mb = 4096.0;
            d.healthy = true;
            d.harvestable = true;
            d.heartbeat_age_s = 0.0;
            d.trust = 1.0;
        }
        fleet
    }

    fn app(id: &str, pricing: Pricing, replicas: u32) -> AppDemand {
        let mut demand = AppDemand::new(id, 0.3, 64.0, Tier::B);
        demand.pricing = pricing;
        demand.replicas = Some(replicas);
        demand.min_trust = 0.0;
        demand
    }

    fn config() -> PlacementConfig {
        PlacementConfig {
            population: 20,
            generations: 10,
            ..PlacementConfig::default()
        }
    }

    fn run(demands: &[AppDemand], current: &Assignment) -> PlacementOutcome {
        let fleet = fleet();
        let outcome = placement::plan(&fleet, demands, current, &config());
        make_room(outcome, &fleet, demands, current, &config())
    }

    #[test]
    fn a_spot_app_is_parked_for_an_on_demand_app_that_needs_its_device() {
        let current = Assignment::from([("cheap".into(), vec!["d0".into()])]);
        let demands = [
            app("cheap", Pricing::Spot, 1),
            app("paying", Pricing::OnDemand, 2),
        ];
        let outcome = run(&demands, &current);
        assert_eq!(outcome.assignment["paying"].len(), 2, "{outcome:?}");
        assert!(!outcome.assignment.contains_key("cheap"), "{outcome:?}");
        assert!(outcome.unplaceable.iter().any(|u| u.app == "cheap"));
    }

    #[test]
    fn a_spot_app_moves_when_another_device_has_room() {
        let current = Assignment::from([("cheap".into(), vec!["d0".into()])]);
        let demands = [
            app("cheap", Pricing::Spot, 1),
            app("paying", Pricing::Reserved, 1),
        ];
        let outcome = run(&demands, &current);
        assert_eq!(outcome.assignment["cheap"].len(), 1, "{outcome:?}");
        assert_eq!(outcome.assignment["paying"].len(), 1);
        assert_ne!(outcome.assignment["cheap"], outcome.assignment["paying"]);
    }

    #[test]
    fn on_demand_and_reserved_apps_stay_where_they_are_while_spot_gives_way() {
        let mut fleet = fleet();
        let mut third = fleet[0].clone();
        third.id = "d2".into();
        fleet.push(third);
        let current = Assignment::from([
            ("held".into(), vec!["d0".into()]),
            ("reserved".into(), vec!["d1".into()]),
            ("cheap".into(), vec!["d2".into()]),
        ]);
        let demands = [
            app("held", Pricing::OnDemand, 1),
            app("reserved", Pricing::Reserved, 1),
            app("cheap", Pricing::Spot, 1),
            app("late", Pricing::OnDemand, 1),
        ];
        let outcome = placement::plan(&fleet, &demands, &current, &config());
        let before = outcome.assignment.clone();
        let outcome = make_room(outcome, &fleet, &demands, &current, &config());
        assert!(!outcome.assignment.contains_key("cheap"), "{outcome:?}");
        assert_eq!(outcome.assignment["held"], before["held"]);
        assert_eq!(outcome.assignment["reserved"], before["reserved"]);
        assert_eq!(outcome.assignment["late"].len(), 1);
    }

    #[test]
    fn nothing_gives_way_when_no_spot_app_holds_room() {
        let current = Assignment::from([
            ("held".into(), vec!["d0".into()]),
            ("reserved".into(), vec!["d1".into()]),
        ]);
        let demands = [
            app("held", Pricing::OnDemand, 1),
            app("reserved", Pricing::Reserved, 1),
            app("late", Pricing::OnDemand, 1),
        ];
        let fleet = fleet();
        let outcome = placement::plan(&fleet, &demands, &current, &config());
        let before = outcome.assignment.clone();
        let outcome = make_room(outcome, &fleet, &demands, &current, &config());
        assert_eq!(outcome.assignment, before);
        assert!(outcome.unplaceable.iter().any(|u| u.app == "late"));
    }
}
