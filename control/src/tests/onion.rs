//! Onion leases through the API: one router at a time holds an app's lease and only it gets the
//! key; a lease passes to another router only after it runs out; leases spread over live routers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::api::{OnionLease, OnionLeaseInfo};
use fog_proto::auth::Identity;

use super::{Backend, body, on_both_backends, request, signed};
use crate::{Control, ControlConfig};

on_both_backends!(
    only_the_lease_holder_gets_an_apps_onion_key_until_its_lease_runs_out,
    onion_leases_spread_over_the_live_routers,
);

const LEASE: Duration = Duration::from_millis(600);
const GRACE: Duration = Duration::from_millis(300);

/// A control plane trusting `routers`, with short leases, and `apps` published (HELLO each).
async fn control_with(backend: &Backend, routers: &[&Identity], apps: &[&str]) -> Arc<Control> {
    let control = Control::new(
        backend.store(),
        ControlConfig {
            trusted_routers: routers.iter().map(|r| r.public_hex()).collect(),
            onion_lease: LEASE,
            onion_lease_grace: GRACE,
            ..ControlConfig::default()
        },
    );
    let developer = Identity::generate();
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    for app in apps {
        let meta = format!(r#"{{"name":"{app}","tier":"B"}}"#);
        let answer = control
            .handle(signed(&developer, "POST", "/v1/apps", hello.clone(), &meta))
            .await;
        assert_eq!(answer.status(), 201, "{app}");
    }
    control
}

/// What `router` is granted when it asks for its leases.
async fn leases(control: &Arc<Control>, router: &Identity) -> Vec<OnionLease> {
    let answer = control
        .handle(signed(
            router,
            "POST",
            "/v1/onion-leases",
            b"{}".to_vec(),
            "",
        ))
        .await;
    assert_eq!(answer.status(), 200);
    serde_json::from_slice(&body(answer).await).unwrap()
}

fn apps_of(leases: &[OnionLease]) -> Vec<&str> {
    leases.iter().map(|l| l.app.as_str()).collect()
}

async fn lease_infos(control: &Arc<Control>) -> Vec<OnionLeaseInfo> {
    let answer = control
        .handle(request("GET", "/v1/onion-leases", &[], vec![]))
        .await;
    assert_eq!(answer.status(), 200);
    serde_json::from_slice(&body(answer).await).unwrap()
}

/// Ask as `router` until it is granted `app` (within 10 s): the leases it got then.
async fn until_granted(control: &Arc<Control>, router: &Identity, app: &str) -> Vec<OnionLease> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let granted = leases(control, router).await;
        if apps_of(&granted).contains(&app) {
            return granted;
        }
        assert!(
            Instant::now() < deadline,
            "{app} never granted: {granted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn only_the_lease_holder_gets_an_apps_onion_key_until_its_lease_runs_out(backend: Backend) {
    let (first, second) = (Identity::generate(), Identity::generate());
    let control = control_with(&backend, &[&first, &second], &["hello"]).await;
    let granted = leases(&control, &first).await;
    assert_eq!(apps_of(&granted), ["hello"]);
    assert!(granted[0].ttl_ms > 0 && granted[0].ttl_ms <= LEASE.as_millis() as u64);
    assert!(granted[0].address.ends_with(".onion") && granted[0].secret.len() == 64);
    // The other router is told nothing while the lease is renewed, not even the key.
    let asked = Instant::now();
    while asked.elapsed() < LEASE * 2 {
        assert!(leases(&control, &second).await.is_empty());
        assert_eq!(apps_of(&leases(&control, &first).await), ["hello"]);
        // Paced as routers ask (every few seconds), faster than the lease.
        tokio::time::sleep(LEASE / 6).await;
    }
    let infos = lease_infos(&control).await;
    assert_eq!(infos[0].router, Some(first.public_hex()));
    assert_eq!(
        infos[0].terms.len(),
        1,
        "renewals extend one term: {infos:?}"
    );

    // The holder stops renewing (it died): the other router gets the lease, and the key, only
    // after the lease and the grace ran out.
    let last_renewal = lease_infos(&control).await[0].terms[0].until_ms;
    let taken = until_granted(&control, &second, "hello").await;
    assert_eq!(taken[0].secret, granted[0].secret);
    let infos = lease_infos(&control).await;
    assert_eq!(infos[0].router, Some(second.public_hex()));
    let terms = &infos[0].terms;
    assert_eq!(terms.len(), 2);
    assert_eq!(terms[0].until_ms, last_renewal);
    assert!(terms[1].from_ms > terms[0].until_ms + GRACE.as_millis() as u64);
    // The old holder, back, is told it holds nothing.
    assert!(leases(&control, &first).await.is_empty());
}

async fn onion_leases_spread_over_the_live_routers(backend: Backend) {
    let (first, second) = (Identity::generate(), Identity::generate());
    let control = control_with(&backend, &[&first, &second], &["alpha", "beta"]).await;
    // Alone, the first router publishes both.
    assert_eq!(apps_of(&leases(&control, &first).await), ["alpha", "beta"]);
    // A second router appears: nothing is free, so it gets nothing at once; the first keeps
    // its share (one) and stops renewing the other, which passes to the second once it runs out.
    assert!(leases(&control, &second).await.is_empty());
    assert_eq!(apps_of(&leases(&control, &first).await), ["alpha"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Both keep asking, as routers do.
        let firsts = leases(&control, &first).await;
        let seconds = leases(&control, &second).await;
        assert_eq!(apps_of(&firsts), ["alpha"]);
        if apps_of(&seconds) == ["beta"] {
            break;
        }
        assert!(seconds.is_empty(), "{seconds:?}");
        assert!(
            Instant::now() < deadline,
            "beta never passed to the second router"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let infos = lease_infos(&control).await;
    let beta = infos.iter().find(|i| i.app == "beta").unwrap();
    assert!(beta.terms[1].from_ms > beta.terms[0].until_ms, "{beta:?}");
}
