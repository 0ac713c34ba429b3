//! Accounts across processes: hosts harvesting at different prices sign ledger periods, and
//! `GET /v1/balances` (and `fog balance`) show devices earning exactly what the developer spent.

use std::time::{Duration, Instant};

use fog_proto::api::{Balances, SignedPeriod};
use fog_proto::auth::Identity;

use crate::publish::{Fog, Load};

const PLUGGED: &str =
    r#"{"charging": true, "battery": 0.9, "cpus": 2, "mem_total_mb": 4096, "user_idle_s": 3600}"#;

async fn get<T: serde::de::DeserializeOwned>(fog: &Fog, path: &str) -> T {
    let reply = fog_tests::request(fog.control.addr, "GET", path, &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap()
}

/// The balances once `devices` devices have earned something from verified periods.
async fn earning(fog: &Fog, devices: usize) -> Balances {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let balances: Balances = get(fog, "/v1/balances").await;
        if balances.devices.iter().filter(|d| d.earned > 0.0).count() >= devices {
            return balances;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {devices} devices earned: {balances:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_earned_by_devices_equal_credits_spent_by_developers() {
    // Two hosts asking different prices, harvesting at once, closing a ledger period a second.
    let fog = Fog::start_with(2, |i, dir| {
        let sensors = dir.join(format!("sensors{i}.json"));
        std::fs::write(&sensors, PLUGGED).unwrap();
        let policy = dir.join("harvest.toml");
        std::fs::write(&policy, "[harvest]\nmin_idle_s = 0\n").unwrap();
        vec![
            "--sensors".into(),
            sensors.to_str().unwrap().into(),
            "--harvest".into(),
            policy.to_str().unwrap().into(),
            "--ledger-period".into(),
            "1".into(),
            "--price".into(),
            ["0.2", "0.9"][i].into(),
        ]
    });
    let info = fog.publish_counter("A");
    assert_eq!(info.running.len(), 2, "{info:?}");
    let load = Load::start(fog.router.addr, 4);

    // Only the primary burns fuel for requests: once it has earned, move the primary to the
    // other device so both earn, each at its own price.
    let balances = earning(&fog, 1).await;
    let primary = &balances
        .devices
        .iter()
        .find(|d| d.earned > 0.0)
        .unwrap()
        .device;
    let other = info.running.iter().find(|d| *d != primary).unwrap();
    let (code, _, err) = fog.fog(&["move", "counter", "--to", other]);
    assert_eq!(code, 0, "{err}");
    let balances = earning(&fog, 2).await;
    let (ok, _, _) = load.finish().await;
    assert!(ok > 0);

    // Both sides add up, each summed here from its own rows.
    let earned: f64 = balances.devices.iter().map(|d| d.earned).sum();
    let spent: f64 = balances.developers.iter().map(|d| d.spent).sum();
    assert!(earned > 0.0 && spent > 0.0, "{balances:?}");
    assert!(
        (earned - spent).abs() <= 1e-9 * earned,
        "earned {earned} != spent {spent}: {balances:?}"
    );
    let fuel: u64 = balances.devices.iter().map(|d| d.fuel).sum();
    assert_eq!(
        fuel,
        balances.developers.iter().map(|d| d.fuel).sum::<u64>()
    );
    // The developer who published is the one who pays.
    let developer = Identity::from_text(&std::fs::read_to_string(&fog.key).unwrap())
        .unwrap()
        .public_hex();
    assert_eq!(balances.developers.len(), 1, "{balances:?}");
    assert_eq!(balances.developers[0].owner, developer);
    assert_eq!(balances.developers[0].apps, vec!["counter".to_string()]);

    // Each device earned what its own signed periods say, at its own price: the one asking
    // 0.9 earns 4.5× per unit of fuel what the one asking 0.2 earns.
    let mut per_fuel = Vec::new();
    for device in &balances.devices {
        let periods: Vec<SignedPeriod> =
            get(&fog, &format!("/v1/devices/{}/ledger", device.device)).await;
        let counted = &periods[..device.periods as usize];
        let credits: f64 = counted.iter().map(|p| p.period.total_credits).sum();
        assert!(
            (credits - device.earned).abs() <= 1e-9 * credits,
            "{} earned {} but its periods total {credits}",
            device.device,
            device.earned
        );
        per_fuel.push(device.earned / device.fuel as f64);
    }
    per_fuel.sort_by(f64::total_cmp);
    let ratio = per_fuel[1] / per_fuel[0];
    assert!((ratio - 4.5).abs() < 1e-6, "price ratio {ratio}");

    // `fog balance` shows both sides and the totals.
    let (code, out, err) = fog.fog(&["balance"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("DEVICES (earned)") && out.contains("DEVELOPERS (spent)"),
        "{out}"
    );
    assert!(out.contains(&developer), "{out}");
    for device in &balances.devices {
        assert!(out.contains(&device.device), "{out}");
    }
    assert!(out.contains("total earned:"), "{out}");
}
