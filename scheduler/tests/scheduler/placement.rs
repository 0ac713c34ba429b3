//! The placement model's guarantees on synthetic fleets.

use std::collections::{BTreeMap, HashMap, HashSet};

use fog_scheduler::placement::{
    self, AppDemand, Assignment, Device, IMBALANCE, LATENCY, PlacementConfig, Tier, scenarios,
};

fn config(seed: u64) -> PlacementConfig {
    PlacementConfig {
        population: 60,
        generations: 40,
        seed,
        ..PlacementConfig::default()
    }
}

/// Check every hard constraint of `assignment`; panic with the first broken one.
fn assert_feasible(
    devices: &[Device],
    apps: &[AppDemand],
    assignment: &Assignment,
    config: &PlacementConfig,
) {
    let by_id: HashMap<&str, &Device> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut cpu: HashMap<&str, f64> = HashMap::new();
    let mut mem: HashMap<&str, f64> = HashMap::new();
    let mut disk: HashMap<&str, f64> = HashMap::new();
    let mut region_s: HashMap<&str, f64> = HashMap::new();
    for app in apps {
        let Some(ids) = assignment.get(&app.id) else {
            continue;
        };
        assert_eq!(
            ids.len(),
            app.replica_count() as usize,
            "{}: replica count",
            app.id
        );
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "{}: replicas share a device",
            app.id
        );
        for id in ids {
            let d = by_id[id.as_str()];
            assert!(
                d.healthy && d.harvestable,
                "{} on unusable {}",
                app.id,
                d.id
            );
            assert!(
                d.heartbeat_age_s <= config.max_heartbeat_age_s,
                "{} on silent {}",
                app.id,
                d.id
            );
            assert!(d.trust >= app.min_trust, "{} on untrusted {}", app.id, d.id);
            assert!(
                !app.excluded_devices.contains(id),
                "{} on excluded {}",
                app.id,
                d.id
            );
            *cpu.entry(&d.id).or_default() += app.cpu;
            *mem.entry(&d.id).or_default() += app.mem_mb;
            *disk.entry(&d.id).or_default() += app.component_mb;
            if app.tier == Tier::S {
                *region_s.entry(&d.region).or_default() += app.cpu;
            }
        }
    }
    for (id, used) in &cpu {
        let d = by_id[id];
        assert!(
            *used <= d.cpu_free + 1e-6,
            "{id}: cpu {used} > {}",
            d.cpu_free
        );
        assert!(
            mem[id] <= d.mem_free_mb + 1e-6,
            "{id}: memory over capacity"
        );
        assert!(
            disk[id] <= d.disk_free_mb + 1e-6,
            "{id}: disk over capacity"
        );
    }
    let mut region_cap: HashMap<&str, f64> = HashMap::new();
    for d in devices {
        *region_cap.entry(&d.region).or_default() += d.cpu_capacity * config.tier_s_region_share;
    }
    for (region, used) in region_s {
        assert!(
            used <= region_cap[region] + 1e-6,
            "tier S takes {used} CPUs of {region}"
        );
    }
}

#[test]
fn chosen_placements_never_break_a_hard_constraint() {
    for seed in 1..=4 {
        let devices = scenarios::devices(300, seed);
        let mut apps = scenarios::apps(150, seed);
        // Some apps with tighter requirements.
        apps[0].min_trust = 0.8;
        apps[1].max_price = Some(0.5);
        apps[2].excluded_devices = devices.iter().take(100).map(|d| d.id.clone()).collect();
        let config = config(seed);
        let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config);
        assert_feasible(&devices, &apps, &outcome.assignment, &config);
        let placed = outcome.assignment.len() + outcome.unplaceable.len();
        assert_eq!(placed, apps.len(), "every app is placed or reported");
        assert!(outcome.front_size > 0);
    }
}

#[test]
fn a_tight_fleet_reports_what_it_cannot_place_and_places_the_rest_feasibly() {
    // 12 small devices for a lot of demand: capacity runs out.
    let devices = scenarios::devices(12, 9);
    let apps: Vec<AppDemand> = (0..30)
        .map(|i| {
            AppDemand::new(
                format!("big-{i}"),
                1.0,
                512.0,
                if i % 3 == 0 { Tier::S } else { Tier::A },
            )
        })
        .collect();
    let config = config(3);
    let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config);
    assert_feasible(&devices, &apps, &outcome.assignment, &config);
    assert!(!outcome.unplaceable.is_empty());
    assert_eq!(
        outcome.assignment.len() + outcome.unplaceable.len(),
        apps.len()
    );
    for u in &outcome.unplaceable {
        assert!(!u.reason.is_empty());
    }
}

#[test]
fn unplaceable_apps_are_reported_with_the_blocking_constraint() {
    let devices = scenarios::devices(50, 2);
    let mut picky = AppDemand::new("picky", 0.1, 64.0, Tier::S);
    picky.min_trust = 1.5;
    let mut huge = AppDemand::new("huge", 64.0, 64.0, Tier::B);
    huge.component_mb = 1.0;
    let mut banned = AppDemand::new("banned", 0.1, 64.0, Tier::B);
    banned.excluded_devices = devices.iter().map(|d| d.id.clone()).collect();
    let fine = AppDemand::new("fine", 0.1, 64.0, Tier::A);
    let apps = vec![picky, huge, banned, fine];
    let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config(1));
    let reasons: BTreeMap<&str, &str> = outcome
        .unplaceable
        .iter()
        .map(|u| (u.app.as_str(), u.reason.as_str()))
        .collect();
    assert!(
        reasons["picky"].contains("below the app's minimum trust"),
        "{}",
        reasons["picky"]
    );
    assert!(
        reasons["picky"].contains("needs 3 distinct devices"),
        "{}",
        reasons["picky"]
    );
    assert!(
        reasons["huge"].contains("without free CPU, memory or disk"),
        "{}",
        reasons["huge"]
    );
    assert!(
        reasons["banned"].contains("50 excluded"),
        "{}",
        reasons["banned"]
    );
    assert!(!reasons.contains_key("fine"));
    assert_eq!(outcome.assignment["fine"].len(), 2);
}

#[test]
fn nothing_moves_when_nothing_changed() {
    let devices = scenarios::devices(200, 5);
    let apps = scenarios::apps(80, 5);
    let first = placement::plan(&devices, &apps, &Assignment::new(), &config(5));
    for seed in [5, 6] {
        let again = placement::plan(&devices, &apps, &first.assignment, &config(seed));
        assert_eq!(again.moved, 0, "seed {seed}");
        assert_eq!(again.assignment, first.assignment, "seed {seed}");
        assert!(again.kept_current);
    }
}

#[test]
fn replicas_on_a_lost_device_move_and_the_others_stay() {
    // Several fleets: before the current placement was kept with only the lost replicas
    // replaced, a re-plan after losing a device moved 27 to 71 replicas where 3 to 8 had to.
    for seed in [1, 2, 8] {
        let mut devices = scenarios::devices(200, seed);
        let apps = scenarios::apps(80, seed);
        let config = config(seed);
        let first = placement::plan(&devices, &apps, &Assignment::new(), &config);
        // The busiest device stops being harvestable.
        let mut load: HashMap<&str, usize> = HashMap::new();
        for ids in first.assignment.values() {
            for id in ids {
                *load.entry(id.as_str()).or_default() += 1;
            }
        }
        let (lost, on_lost) = load
            .iter()
            .max_by_key(|(id, n)| (**n, *id))
            .map(|(id, n)| (id.to_string(), *n))
            .unwrap();
        devices
            .iter_mut()
            .find(|d| d.id == lost)
            .unwrap()
            .harvestable = false;
        let again = placement::plan(&devices, &apps, &first.assignment, &config);
        assert_feasible(&devices, &apps, &again.assignment, &config);
        assert!(again.assignment.values().all(|ids| !ids.contains(&lost)));
        assert!(
            again.moved >= on_lost,
            "seed {seed}: moved {} < {on_lost}",
            again.moved
        );
        // Replicas elsewhere stay unless the pick found a clearly better arrangement; with
        // churn as an objective few should move beyond those that had to.
        assert!(
            again.moved <= on_lost + first.assignment.len() / 4,
            "seed {seed}: moved {}, {on_lost} of them on the lost device",
            again.moved
        );
    }
}

#[test]
fn the_pick_is_at_least_as_good_as_greedy_on_latency_and_balance() {
    for seed in 1..=3 {
        let devices = scenarios::devices(400, seed);
        let apps = scenarios::apps(150, seed);
        let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config(seed));
        let greedy = outcome
            .greedy
            .expect("greedy places everything on this fleet");
        assert!(outcome.unplaceable.is_empty());
        assert!(
            outcome.objectives[LATENCY] <= greedy[LATENCY] + 1e-9,
            "latency {:?} vs {:?}",
            outcome.objectives,
            greedy
        );
        assert!(
            outcome.objectives[IMBALANCE] <= greedy[IMBALANCE] + 1e-12,
            "imbalance {:?} vs {:?}",
            outcome.objectives,
            greedy
        );
        eprintln!(
            "seed {seed}: latency {:.1} ms vs greedy {:.1} ms; imbalance {:.5} vs {:.5}",
            outcome.objectives[LATENCY],
            greedy[LATENCY],
            outcome.objectives[IMBALANCE],
            greedy[IMBALANCE]
        );
    }
}

#[test]
fn a_seed_gives_the_same_placement_with_one_and_two_threads() {
    let devices = scenarios::devices(300, 4);
    let apps = scenarios::apps(100, 4);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| placement::plan(&devices, &apps, &Assignment::new(), &config(11)))
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one.assignment, two.assignment);
    assert_eq!(one.objectives, two.objectives);
}

/// `n` identical, usable devices on mains in one region, asking `price`, with `latency_ms`.
fn uniform_fleet(n: usize, price: f64, latency_ms: f64) -> Vec<Device> {
    (0..n)
        .map(|i| Device {
            id: format!("d{i}"),
            cpu_capacity: 4.0,
            cpu_free: 4.0,
            mem_capacity_mb: 4096.0,
            mem_free_mb: 4096.0,
            disk_free_mb: 4096.0,
            harvestable: true,
            healthy: true,
            heartbeat_age_s: 0.0,
            battery: None,
            charging: true,
            temperature_c: 30.0,
            region: "local".into(),
            latency_ms,
            bandwidth_mbps: 100.0,
            trust: 0.5,
            price_cpu_hour: price,
            price_gb_hour: 0.01,
        })
        .collect()
}

#[test]
fn a_device_asking_more_than_the_max_price_never_hosts_the_app() {
    let mut devices = uniform_fleet(6, 0.10, 5.0);
    for d in &mut devices[..3] {
        d.price_cpu_hour = 0.50;
    }
    // A tier-B app in a market with far more supply than demand: the market price on the dear
    // devices (about 0.31) is under the cap, so only their owners' asking price keeps it away.
    let mut app = AppDemand::new("capped", 0.1, 64.0, Tier::B);
    app.max_price = Some(0.40);
    app.replicas = Some(3);
    let outcome = placement::plan(&devices, &[app.clone()], &Assignment::new(), &config(3));
    let ids = &outcome.assignment["capped"];
    assert_eq!(ids.len(), 3);
    for id in ids {
        assert!(!["d0", "d1", "d2"].contains(&id.as_str()), "{ids:?}");
    }
    // Four replicas need a fourth device under the cap: there is none.
    app.replicas = Some(4);
    let outcome = placement::plan(&devices, &[app], &Assignment::new(), &config(3));
    let reason = &outcome.unplaceable[0].reason;
    assert!(
        reason.contains("3 above the app's maximum price"),
        "{reason}"
    );
}

#[test]
fn when_no_device_is_cheap_enough_the_problem_says_so() {
    let devices = uniform_fleet(4, 0.50, 5.0);
    let mut app = AppDemand::new("stingy", 0.1, 64.0, Tier::B);
    app.max_price = Some(0.05);
    let outcome = placement::plan(&devices, &[app], &Assignment::new(), &config(3));
    assert!(outcome.assignment.is_empty());
    let reason = &outcome.unplaceable[0].reason;
    assert!(
        reason.contains("4 above the app's maximum price of 0.05 per CPU-hour"),
        "{reason}"
    );
}

#[test]
fn a_slow_device_gets_no_tier_s_replica_while_fast_devices_have_room() {
    for seed in 1..=5 {
        let mut devices = uniform_fleet(5, 0.10, 1.0);
        devices[2].latency_ms = 121.0;
        let app = AppDemand::new("fast", 0.1, 64.0, Tier::S);
        let outcome = placement::plan(&devices, &[app], &Assignment::new(), &config(seed));
        let ids = &outcome.assignment["fast"];
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&"d2".to_string()), "seed {seed}: {ids:?}");
    }
}

#[test]
fn placing_some_apps_keeps_every_other_app_and_fits_beside_them() {
    let devices = scenarios::devices(200, 11);
    let apps = scenarios::apps(80, 11);
    let config = config(11);
    let (old, new) = apps.split_at(apps.len() - apps.len() / 8);
    let first = placement::plan(&devices, old, &Assignment::new(), &config);
    let pending: HashSet<String> = new.iter().map(|a| a.id.clone()).collect();
    let again = placement::plan_some(&devices, &apps, &first.assignment, &pending, &config);
    for app in old {
        assert_eq!(
            again.assignment.get(&app.id),
            first.assignment.get(&app.id),
            "{} moved",
            app.id
        );
    }
    let placed: Vec<&String> = pending
        .iter()
        .filter(|id| again.assignment.contains_key(*id))
        .collect();
    assert!(
        placed.len() + again.unplaceable.len() >= pending.len(),
        "every new app is placed or explained"
    );
    assert!(!placed.is_empty(), "the new apps found room");
    // Capacity holds across kept and new replicas (tier S's regional share is the full
    // re-plan's to enforce, so this fleet's check leaves it out).
    let mut relaxed = config.clone();
    relaxed.tier_s_region_share = 1.0;
    assert_feasible(&devices, &apps, &again.assignment, &relaxed);
}

#[test]
fn placing_some_apps_never_uses_capacity_the_kept_apps_hold() {
    // Two devices with room for one replica each; one already holds an app.
    let mut devices = scenarios::devices(2, 12);
    for d in &mut devices {
        d.cpu_free = 1.0;
        d.cpu_capacity = 1.0;
        d.healthy = true;
        d.harvestable = true;
        d.heartbeat_age_s = 0.0;
        d.trust = 1.0;
    }
    let app = |id: &str| AppDemand {
        replicas: Some(1),
        min_trust: 0.0,
        max_price: None,
        ..AppDemand::new(id.to_string(), 1.0, 1.0, Tier::B)
    };
    let apps = vec![app("kept"), app("new")];
    let mut current = Assignment::new();
    current.insert("kept".into(), vec![devices[0].id.clone()]);
    let pending: HashSet<String> = ["new".to_string()].into();
    let outcome = placement::plan_some(&devices, &apps, &current, &pending, &config(12));
    assert_eq!(outcome.assignment["kept"], vec![devices[0].id.clone()]);
    assert_eq!(outcome.assignment["new"], vec![devices[1].id.clone()]);
}

#[test]
fn a_slow_device_gets_no_tier_s_replica_beside_apps_already_placed_on_the_fast_ones() {
    // The slow device comes first, so greedy (first fit) uses it; the fast ones already hold a
    // tier-S app of a hundredth of a core each, so avoiding the slow one balances a hair worse.
    let mut devices = uniform_fleet(4, 0.10, 1.0);
    for d in &mut devices {
        d.cpu_capacity = 1.0;
        d.cpu_free = 1.0;
    }
    devices[0].latency_ms = 121.0;
    let app = |id: &str| AppDemand::new(id.to_string(), 0.01, 64.0, Tier::S);
    let apps = vec![app("first"), app("second")];
    let mut current = Assignment::new();
    current.insert("first".into(), vec!["d1".into(), "d2".into(), "d3".into()]);
    let pending: HashSet<String> = ["second".to_string()].into();
    for seed in 1..=3 {
        let outcome = placement::plan_some(&devices, &apps, &current, &pending, &config(seed));
        let ids = &outcome.assignment["second"];
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains(&"d0".to_string()), "seed {seed}: {ids:?}");
    }
}

#[test]
fn an_active_passive_app_gets_its_primary_on_the_nearest_of_its_devices() {
    // Visitors reach only the primary of a tier-A app: with one near device among far ones,
    // every app placed on it has it first, whatever order the genes hold them in.
    for seed in 1..=3 {
        let mut devices = uniform_fleet(4, 0.10, 80.0);
        devices[3].latency_ms = 5.0;
        let apps: Vec<AppDemand> = (0..8)
            .map(|i| AppDemand::new(format!("a{i}"), 0.1, 64.0, Tier::A))
            .collect();
        let outcome = placement::plan(&devices, &apps, &Assignment::new(), &config(seed));
        let on_near: Vec<&Vec<String>> = outcome
            .assignment
            .values()
            .filter(|ids| ids.contains(&"d3".to_string()))
            .collect();
        assert!(!on_near.is_empty(), "seed {seed}: {:?}", outcome.assignment);
        for ids in on_near {
            assert_eq!(ids[0], "d3", "seed {seed}: {ids:?}");
        }
    }
}
