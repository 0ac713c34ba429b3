//! What only the etcd backend has to show: control planes sharing one registry, calls from every
//! kind of runtime, values kept out of etcd, and clear errors when etcd cannot be reached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fog_proto::api::AppInfo;
use fog_proto::auth::Identity;
use fog_test_etcd::EtcdCluster;

use super::{Backend, body, request, signed};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{SledStore, Store, StoreError, Table};
use crate::{Control, ControlConfig};

fn connect(
    cluster: &EtcdCluster,
    prefix: &str,
    timeout: Duration,
) -> Result<EtcdStore, StoreError> {
    EtcdStore::connect(
        EtcdConfig {
            prefix: prefix.into(),
            timeout,
            ..EtcdConfig::from_url(&cluster.url()).unwrap()
        },
        SledStore::temporary().unwrap(),
    )
}

#[tokio::test]
async fn a_second_control_plane_sees_apps_published_through_the_first() {
    let backend = Backend::etcd();
    let first = Control::new(backend.store_at("shared"), ControlConfig::default());
    let second = Control::new(backend.store_at("shared"), ControlConfig::default());
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let published = first
        .handle(signed(
            &Identity::generate(),
            "POST",
            "/v1/apps",
            hello,
            r#"{"name":"hello","tier":"A"}"#,
        ))
        .await;
    assert_eq!(published.status(), 201);
    let published: AppInfo = serde_json::from_slice(&body(published).await).unwrap();
    let listed = second.handle(request("GET", "/v1/apps", &[], vec![])).await;
    assert_eq!(listed.status(), 200);
    let apps: Vec<AppInfo> = serde_json::from_slice(&body(listed).await).unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (apps[0].name.as_str(), apps[0].version, apps[0].replicas),
        ("hello", 1, 2)
    );
    // Both derive app keys from the one master secret in etcd: the same addresses.
    assert_eq!(apps[0].betanet, published.betanet);
    assert_eq!(apps[0].onion, published.onion);
}

#[test]
fn two_control_planes_never_lose_an_update_to_one_app() {
    let backend = Backend::etcd();
    let owner = Identity::generate().public_hex();
    let controls: Vec<Arc<Control>> = (0..2)
        .map(|_| Control::new(backend.store_at("shared"), ControlConfig::default()))
        .collect();
    controls[0]
        .update_app("counter", |_| {
            Ok(Some(crate::store::AppRecord {
                name: "counter".into(),
                owner: owner.clone(),
                version: 1,
                sha256: String::new(),
                size: 0,
                tier: fog_proto::api::Tier::B,
                replicas: 0,
                limits: fog_proto::Limits::default(),
                updated_ms: 0,
            }))
        })
        .unwrap();
    const EACH: u32 = 25;
    // Two threads per control plane, each serialised by its plane's lock as the handlers are;
    // the planes race each other on etcd.
    let threads: Vec<_> = controls
        .iter()
        .flat_map(|control| [control.clone(), control.clone()])
        .map(|control| {
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    let _guard = control.writes.lock().unwrap();
                    control
                        .update_app("counter", |record| {
                            Ok(record.map(|mut r| {
                                r.replicas += 1;
                                r
                            }))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for control in &controls {
        assert_eq!(control.app("counter").unwrap().replicas, 4 * EACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn handlers_and_reconcile_on_a_one_worker_runtime_never_deadlock() {
    let backend = Backend::etcd();
    let control = backend.control();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reconciler = tokio::spawn(control.clone().run_reconciler(async {
        let _ = stopped.await;
    }));
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let key = Arc::new(Identity::generate());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let control = control.clone();
        let hello = hello.clone();
        let key = key.clone();
        tasks.spawn(async move {
            let meta = format!(r#"{{"name":"app{i}","tier":"B"}}"#);
            let published = control
                .handle(signed(&key, "POST", "/v1/apps", hello, &meta))
                .await;
            let listed = control
                .handle(request("GET", "/v1/apps", &[], vec![]))
                .await;
            (published.status().as_u16(), listed.status().as_u16())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), tasks.join_all())
        .await
        .expect("every handler answers: nothing is stuck");
    assert!(all.iter().all(|s| *s == (201, 200)), "{all:?}");
    assert_eq!(control.apps().unwrap().len(), 24);
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), reconciler)
        .await
        .expect("the reconciler stops")
        .unwrap();
}

#[test]
fn etcd_refuses_a_record_over_its_request_limit_so_components_stay_on_local_disk() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let first = connect(&cluster, "fog", Duration::from_secs(5)).unwrap();
    let big = vec![7u8; 2 << 20];
    let refused = first.put(Table::Apps, "huge", &big);
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "{refused:?}"
    );
    first.put(Table::Blobs, "sha", &big).unwrap();
    assert_eq!(first.get(Table::Blobs, "sha").unwrap(), Some(big));
    // Another control plane on the same etcd has its own disk: blobs are not replicated yet.
    let second = connect(&cluster, "fog", Duration::from_secs(5)).unwrap();
    assert_eq!(second.get(Table::Blobs, "sha").unwrap(), None);
}

// Async, as `fog control` starts it: the failed store must not drop its runtime here.
#[tokio::test]
async fn an_unreachable_etcd_at_start_is_one_error_naming_the_endpoints() {
    // Ports nobody listens on: bound, read, released.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let url = format!("etcd://127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let started = Instant::now();
    let err = EtcdStore::connect(
        EtcdConfig {
            timeout: Duration::from_secs(1),
            ..EtcdConfig::from_url(&url).unwrap()
        },
        SledStore::temporary().unwrap(),
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let StoreError::Unreachable { endpoints, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(endpoints.len(), 2);
    let text = err.to_string();
    for port in ports {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
}

#[test]
fn requests_after_etcd_stops_fail_as_unreachable_within_the_timeout() {
    let mut cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let store = connect(&cluster, "fog", Duration::from_secs(1)).unwrap();
    store.put(Table::Apps, "hello", b"v1").unwrap();
    cluster.kill(0);
    let started = Instant::now();
    let err = store.get(Table::Apps, "hello").unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_api_answers_503_naming_the_endpoints_once_etcd_is_unreachable() {
    let mut cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let control = Control::new(
        Arc::new(connect(&cluster, "fog", Duration::from_secs(1)).unwrap()),
        ControlConfig::default(),
    );
    let listed = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    assert_eq!(listed.status(), 200);
    let endpoint = cluster.endpoints().remove(0);
    cluster.kill(0);
    let listed = control
        .handle(request("GET", "/v1/apps", &[], vec![]))
        .await;
    assert_eq!(listed.status(), 503);
    let text = String::from_utf8_lossy(&body(listed).await).into_owned();
    assert!(
        text.contains(&format!("etcd at {endpoint} is unreachable")),
        "{text}"
    );
}

#[test]
fn the_store_keeps_working_when_one_of_three_members_dies() {
    let mut cluster = EtcdCluster::start(3).unwrap_or_else(|e| panic!("{e}"));
    let store = connect(&cluster, "fog", Duration::from_secs(2)).unwrap();
    store.put(Table::Apps, "before", b"1").unwrap();
    cluster.kill(0);
    // The client may first try the dead member; within a deadline, requests go to the others.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.put(Table::Apps, "probe", b"1").is_err() {
        assert!(
            Instant::now() < deadline,
            "no write succeeded after a member died"
        );
    }
    for i in 0..20 {
        store.put(Table::Apps, &format!("after-{i}"), b"1").unwrap();
    }
    assert_eq!(
        store.get(Table::Apps, "before").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(store.list(Table::Apps).unwrap().len(), 22);
}

/// Poll `condition` until it holds or `within` passes.
fn eventually(within: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// Two stores under `prefix` (ours and another control plane's), once ours watches.
fn ours_watching_and_theirs(cluster: &EtcdCluster, prefix: &str) -> (EtcdStore, EtcdStore) {
    let ours = connect(cluster, prefix, Duration::from_secs(5)).unwrap();
    let theirs = connect(cluster, prefix, Duration::from_secs(5)).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ours
            .generation(Table::Apps)
            .is_some()),
        "the watch never started"
    );
    (ours, theirs)
}

#[test]
fn a_table_changed_by_another_control_plane_is_seen_through_the_watch() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let (ours, theirs) = ours_watching_and_theirs(&cluster, "watched");
    let apps = ours.generation(Table::Apps).unwrap();
    let devices = ours.generation(Table::Devices).unwrap();
    // Another control plane's write shows through the watch, in that table only.
    theirs.put(Table::Apps, "theirs", b"1").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ours
            .generation(Table::Apps)
            .unwrap()
            > apps),
        "another control plane's write was never seen"
    );
    // Our own write shows at once: a read right after it never uses a view from before.
    let before_ours = ours.generation(Table::Apps).unwrap();
    ours.put(Table::Apps, "mine", b"1").unwrap();
    assert!(ours.generation(Table::Apps).unwrap() > before_ours);
    assert_eq!(ours.generation(Table::Devices), Some(devices));
}

#[test]
fn a_watch_response_over_grpcs_default_message_limit_keeps_the_watch() {
    // A watch falling behind gets up to 1,000 revisions in one response, easily over gRPC's
    // default 4 MiB; one record that large (allowed by a raised etcd request limit) makes such
    // a response here.
    let cluster = EtcdCluster::start_with(1, &["--max-request-bytes", "10485760"])
        .unwrap_or_else(|e| panic!("{e}"));
    let (ours, theirs) = ours_watching_and_theirs(&cluster, "large");
    let apps = ours.generation(Table::Apps).unwrap();
    let devices = ours.generation(Table::Devices).unwrap();
    theirs
        .put(Table::Apps, "large", &vec![7u8; 5 << 20])
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || ours
            .generation(Table::Apps)
            .is_some_and(|seen| seen > apps)),
        "the large write was never seen"
    );
    // A watch that broke and was made again counts every table as changed.
    assert_eq!(
        ours.generation(Table::Devices),
        Some(devices),
        "the watch broke on the large response"
    );
}

#[test]
fn without_a_watch_the_store_cannot_vouch_for_a_cached_view() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let store = connect(&cluster, "unwatched", Duration::from_millis(500)).unwrap();
    assert!(eventually(Duration::from_secs(10), || store
        .generation(Table::Apps)
        .is_some()));
    drop(cluster);
    assert!(
        eventually(Duration::from_secs(20), || store
            .generation(Table::Apps)
            .is_none()),
        "a broken watch must stop vouching for cached views"
    );
}

#[test]
fn one_control_plane_leads_and_another_takes_over_once_it_stops() {
    use crate::store::Leadership;
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let first = connect(&cluster, "elect", Duration::from_secs(5)).unwrap();
    let second = connect(&cluster, "elect", Duration::from_secs(5)).unwrap();
    assert_eq!(first.lead("first").unwrap(), Leadership::Leader);
    assert_eq!(
        second.lead("second").unwrap(),
        Leadership::Follower {
            leader: Some("first".into())
        }
    );
    // Renewing keeps it.
    assert_eq!(first.lead("first").unwrap(), Leadership::Leader);
    // The leader's process goes away without a word: its lease runs out.
    let stopped = Instant::now();
    drop(first);
    assert!(
        eventually(Duration::from_secs(15), || second.lead("second").unwrap()
            == Leadership::Leader),
        "the second control plane never took over"
    );
    let took = stopped.elapsed();
    assert!(
        took <= Duration::from_secs(super::super::store::etcd::LEADER_LEASE_TTL_S as u64 + 3),
        "took over after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposed_leaders_fenced_writes_fail_and_change_nothing() {
    use crate::store::{Leadership, as_leader};
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let first = connect(&cluster, "fence", Duration::from_secs(5)).unwrap();
    let second = connect(&cluster, "fence", Duration::from_secs(5)).unwrap();
    assert_eq!(first.lead("first").unwrap(), Leadership::Leader);
    as_leader(|| first.put(Table::Placements, "app", b"first")).unwrap();
    // The leader is cut off long enough for its lease to end (revoked here, as etcd would
    // expire it), and the other control plane is elected.
    let mut client = etcd_client::Client::connect([cluster.url().replace("etcd://", "")], None)
        .await
        .unwrap();
    let leader = client.get("fence/leader", None).await.unwrap();
    let lease = leader.kvs()[0].lease();
    client.lease_revoke(lease).await.unwrap();
    assert_eq!(second.lead("second").unwrap(), Leadership::Leader);
    // The deposed leader has not noticed: its writes as the leader fail, every kind of them.
    for write in [
        as_leader(|| first.put(Table::Placements, "app", b"stale")),
        as_leader(|| first.delete(Table::Placements, "app")),
        as_leader(|| first.put_many(Table::Placements, &[("app".into(), b"stale".to_vec())])),
        as_leader(|| {
            let read = first.get_versioned(Table::Placements, "app").unwrap();
            first.put_if(Table::Placements, "app", b"stale", &read.revision)
        }),
    ] {
        assert!(matches!(write, Err(StoreError::Deposed)), "{write:?}");
    }
    assert_eq!(
        second.get(Table::Placements, "app").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    // The new leader's fenced writes go through; an API write (unfenced) from either works.
    as_leader(|| second.put(Table::Placements, "app", b"second")).unwrap();
    first.put(Table::Apps, "published", b"1").unwrap();
}

/// `n` control planes on one etcd prefix, each serving its API on loopback, advertising it and
/// announcing itself, every one seeing the others before this returns.
async fn planes(
    backend: &Backend,
    n: usize,
) -> (Vec<Arc<Control>>, tokio::sync::watch::Sender<bool>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut controls = Vec::new();
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let control = Control::new(
            backend.store_at("planes"),
            ControlConfig {
                advertise: Some(url),
                ..ControlConfig::default()
            },
        );
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::spawn(crate::serve(
            listener,
            control.clone(),
            until(stopped.clone()),
        ));
        tokio::spawn(control.clone().run_presence(until(stopped.clone())));
        controls.push(control);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while controls.iter().any(|c| c.planes.peers().len() < n - 1) {
        assert!(
            Instant::now() < deadline,
            "control planes never saw each other"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (controls, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_is_acknowledged_once_a_second_control_plane_holds_the_component() {
    let backend = Backend::etcd();
    let (controls, _stop) = planes(&backend, 3).await;
    let hello = std::fs::read(fog_test_programs::HELLO).unwrap();
    let sha = fog_proto::auth::sha256_hex(&hello);
    let published = controls[0]
        .handle(signed(
            &Identity::generate(),
            "POST",
            "/v1/apps",
            hello.clone(),
            r#"{"name":"hello","tier":"A"}"#,
        ))
        .await;
    assert_eq!(published.status(), 201);
    let holding = |c: &Arc<Control>| c.store.get(Table::Blobs, &sha).unwrap().is_some();
    let copies = controls.iter().filter(|c| holding(c)).count();
    assert_eq!(
        copies, 2,
        "on the receiving control plane and one peer when acknowledged"
    );
    // The one without it pulls it from a peer when asked, checked, and keeps it.
    let lacking = controls.iter().find(|c| !holding(c)).unwrap();
    let fetched = lacking
        .handle(request("GET", &format!("/v1/blobs/{sha}"), &[], vec![]))
        .await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(body(fetched).await, hello);
    assert!(holding(lacking));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_names_an_announced_control_plane_never_a_url() {
    let backend = Backend::etcd();
    let (controls, _stop) = planes(&backend, 2).await;
    let sha = "ab".repeat(32);
    for from in ["http://127.0.0.1:1", "0123456789abcdef"] {
        let asked = controls[0]
            .handle(request(
                "POST",
                &format!("/v1/blobs/{sha}/pull?from={from}"),
                &[],
                vec![],
            ))
            .await;
        assert_eq!(asked.status(), 503, "{from}");
    }
    assert!(controls[0].store.get(Table::Blobs, &sha).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_heartbeating_to_one_control_plane_is_alive_on_the_others() {
    let backend = Backend::etcd();
    let (controls, _stop) = planes(&backend, 2).await;
    let device = Identity::generate();
    let registration = br#"{"region":"r","cpu":1,"mem_mb":1024,"disk_mb":1024}"#.to_vec();
    let registered = controls[0]
        .handle(signed(&device, "POST", "/v1/devices", registration, ""))
        .await;
    assert_eq!(registered.status(), 200);
    let id = fog_proto::auth::device_id(&device.public_hex());
    let heartbeat = br#"{"harvestable":true,"cpu_free":1.0,"mem_free_mb":1024.0}"#.to_vec();
    let path = format!("/v1/devices/{id}/heartbeat");
    let answered = controls[0]
        .handle(signed(&device, "POST", &path, heartbeat, ""))
        .await;
    assert_eq!(answered.status(), 200);
    let alive_on_second = || {
        controls[1]
            .device_infos()
            .unwrap()
            .iter()
            .any(|d| d.id == id && d.alive)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !alive_on_second() {
        assert!(
            Instant::now() < deadline,
            "the second control plane never saw it alive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Regression: a control plane announced the last heartbeat of every device heartbeating to
/// it in one record, twice a second; at 5,000 devices that was 2.4 MB, which etcd refuses.
#[test]
fn devices_heard_by_a_fleet_larger_than_an_etcd_request_reach_the_other_control_plane() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let ours = connect(&cluster, "heard", Duration::from_secs(5)).unwrap();
    let theirs = connect(&cluster, "heard", Duration::from_secs(5)).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || theirs
            .generation(Table::Apps)
            .is_some()),
        "the watch never started"
    );
    // 3,000 devices of 1 KiB each: twice what one etcd request may carry.
    let record = |device: usize, round: u8| {
        let mut bytes = vec![round; 1024];
        bytes[..8].copy_from_slice(&(device as u64).to_le_bytes());
        bytes
    };
    let fleet: Vec<(String, Vec<u8>)> = (0..3_000)
        .map(|d| (format!("device-{d}"), record(d, 1)))
        .collect();
    assert!(
        !ours.announce("ours", b"{}", &fleet).unwrap(),
        "a first announcement has no earlier one to keep"
    );
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < fleet.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} devices reached the other control plane",
            seen.len(),
            fleet.len()
        );
        seen.extend(theirs.heard().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fleet.iter().all(|(d, r)| seen.get(d) == Some(r)));
    assert!(
        ours.heard().unwrap().is_empty(),
        "a control plane is not told what it announced itself"
    );
    // A full read may come before the watch has delivered every put it already showed: wait
    // until the watch is quiet (each record it brings is one already seen).
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(500) {
        let late = theirs.heard().unwrap();
        if !late.is_empty() {
            assert!(late.iter().all(|(d, r)| seen.get(d) == Some(r)));
            quiet_since = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next round names one device heard again: only it is read by the other.
    assert!(
        ours.announce("ours", b"{}", &[("device-7".into(), record(7, 2))])
            .unwrap(),
        "the lease was kept"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let changed = loop {
        let changed = theirs.heard().unwrap();
        if !changed.is_empty() || Instant::now() > deadline {
            break changed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let names: Vec<&str> = changed.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["device-7"]);
    assert!(changed[0].1 == record(7, 2), "device-7's old record");
    assert_eq!(theirs.planes().unwrap().len(), 1);
}

/// Regression: a reconcile after 5,000 devices registered saved each one's first trust
/// evidence in a fenced transaction of its own, outlasting the leader's 3 s lease.
#[test]
fn thousands_of_records_written_at_once_as_the_leader_all_land() {
    use crate::store::{Leadership, as_leader};
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let store = connect(&cluster, "many", Duration::from_secs(5)).unwrap();
    assert_eq!(store.lead("leader").unwrap(), Leadership::Leader);
    // More records than one transaction takes, and more bytes than one request.
    let records: Vec<(String, Vec<u8>)> = (0..2_000)
        .map(|d| (format!("device-{d:04}"), vec![(d % 251) as u8; 1024]))
        .collect();
    as_leader(|| store.put_many(Table::Trust, &records)).unwrap();
    assert_eq!(store.list(Table::Trust).unwrap(), records);
}

/// Regression: the leader's lease was renewed only between reconcile ticks, so a tick longer
/// than the lease (a full plan of thousands of apps, a machine short of CPU) lost it mid-way.
#[test]
fn a_reconcile_tick_longer_than_the_leaders_lease_keeps_the_leadership() {
    use crate::store::Leadership;
    use crate::store::etcd::LEADER_LEASE_TTL_S;
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let control = Control::new(
        Arc::new(connect(&cluster, "renew", Duration::from_secs(5)).unwrap()),
        ControlConfig::default(),
    );
    let other = connect(&cluster, "renew", Duration::from_secs(5)).unwrap();
    assert_eq!(control.store.lead(&control.id).unwrap(), Leadership::Leader);
    control.renewing_leadership(|| {
        std::thread::sleep(Duration::from_secs(2 * LEADER_LEASE_TTL_S as u64));
    });
    assert_eq!(
        other.lead("other").unwrap(),
        Leadership::Follower {
            leader: Some(control.id.clone())
        }
    );
}

/// The store compacts the cluster's history older than it was told to keep, so the records
/// written every round (heartbeats, announcements) do not fill etcd's space quota.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_compacts_etcd_history_older_than_it_keeps() {
    let cluster = EtcdCluster::start(1).unwrap_or_else(|e| panic!("{e}"));
    let mut client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let first = client.put("outside/key", "one", None).await.unwrap();
    let old = first.header().unwrap().revision();
    client.put("outside/key", "two", None).await.unwrap();
    let _store = EtcdStore::connect(
        EtcdConfig {
            history: Some(Duration::from_millis(400)),
            ..EtcdConfig::from_url(&cluster.url()).unwrap()
        },
        SledStore::temporary().unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = client
            .get(
                "outside/key",
                Some(etcd_client::GetOptions::new().with_revision(old)),
            )
            .await;
        match read {
            Err(etcd_client::Error::GRpcStatus(status))
                if status.code() == tonic::Code::OutOfRange =>
            {
                break;
            }
            Err(err) => panic!("reading an old revision failed otherwise: {err}"),
            Ok(found) => {
                assert_eq!(found.kvs()[0].value(), b"one");
                assert!(
                    Instant::now() < deadline,
                    "revision {old} is still readable 30 s after a store keeping 400 ms of history started"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
