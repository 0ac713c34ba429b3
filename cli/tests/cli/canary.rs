//! Spot checks with real processes: a control plane checking every few seconds, a router that
//! carries the checks, honest hosts and one started with the test-only `--corrupt-responses`;
//! the corrupting device loses its replicas within two checks, `fog devices` says why, and the
//! honest devices keep their trust and take the app.

use std::time::{Duration, Instant};

use fog_proto::api::DeviceInfo;
use fog_test_programs as programs;

use crate::publish::Fog;

/// Seconds between two checks of a device.
const INTERVAL: &str = "5";

/// The device id a host printed on its first line (`... device <id> ...`).
fn device_of(line: &str) -> String {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "device" {
            return words.next().unwrap().trim_end_matches(',').to_string();
        }
    }
    panic!("no device id in {line:?}")
}

/// Poll `fog devices` until `done` holds, or fail after `limit` saying `what`.
async fn wait_devices(
    fog: &Fog,
    limit: Duration,
    what: &str,
    done: impl Fn(&[DeviceInfo]) -> bool,
) -> Vec<DeviceInfo> {
    let deadline = Instant::now() + limit;
    loop {
        let devices = fog.devices();
        if done(&devices) {
            return devices;
        }
        assert!(Instant::now() < deadline, "{what}: {devices:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(devices: &'a [DeviceInfo], id: &str) -> &'a DeviceInfo {
    devices.iter().find(|d| d.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_corrupts_responses_loses_its_replicas_within_two_checks() {
    let fog = Fog::start_with_control(3, &["--canary-interval", INTERVAL], |i, _| {
        let mut args = vec!["--always-on".to_string()];
        if i == 2 {
            args.push("--corrupt-responses".to_string());
        }
        args
    });
    let cheat = device_of(&fog.hosts[2].line);
    let honest: Vec<String> = fog.hosts[..2].iter().map(|h| device_of(&h.line)).collect();
    // One replica on each of the three devices: the cheat must hold one. A device is first
    // checked one interval after its canary runs, so the replica lands before that.
    let (code, _, err) = fog.fog(&[
        "publish",
        programs::HELLO,
        "--name",
        "hello",
        "--tier",
        "B",
        "--replicas",
        "3",
        "--wait",
        "0",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let devices = wait_devices(
        &fog,
        Duration::from_secs(30),
        "the corrupting device never held a replica",
        |d| {
            d.len() == 3
                && d.iter()
                    .find(|d| d.id == cheat)
                    .is_some_and(|d| d.assigned.contains(&"hello".to_string()))
        },
    )
    .await;
    let checks_then = find(&devices, &cheat).canary_checks;

    // Caught: its replica goes, and the checks it took are counted.
    let devices = wait_devices(
        &fog,
        Duration::from_secs(60),
        "the corrupting device kept its replica",
        |d| find(d, &cheat).assigned.is_empty(),
    )
    .await;
    let cheater = find(&devices, &cheat);
    assert!(
        cheater.canary_checks > checks_then && cheater.canary_checks <= checks_then + 2,
        "replica gone after {} checks (had {checks_then} when it held it)",
        cheater.canary_checks
    );
    assert!(cheater.trust < 0.1, "{cheater:#?}");
    assert!(
        cheater
            .trust_reasons
            .iter()
            .any(|r| r.starts_with("canary: wrong answer at")),
        "{cheater:#?}"
    );
    // Its canary keeps running (it is checked again), but `fog devices` lists only apps.
    assert!(cheater.running.iter().all(|a| a != "fog-canary"));

    // Three replicas no longer fit the two devices trusted enough: scaled to two, the app is
    // placed on the honest devices, which answered their checks rightly and kept their trust.
    let (code, _, err) = fog.fog(&["scale", "hello", "2"]);
    assert_eq!(code, 0, "{err}");
    let devices = wait_devices(
        &fog,
        Duration::from_secs(30),
        "the honest devices were not both checked, or do not hold the replicas",
        |d| {
            honest.iter().all(|h| {
                d.iter()
                    .find(|d| &d.id == h)
                    .is_some_and(|d| d.canary_checks >= 1 && d.assigned == ["hello"])
            }) && find(d, &cheat).assigned.is_empty()
        },
    )
    .await;
    for id in &honest {
        let device = find(&devices, id);
        assert!(
            device.trust >= 0.2
                && device
                    .trust_reasons
                    .iter()
                    .any(|r| r.contains("checks right"))
                && !device.trust_reasons.iter().any(|r| r.contains("wrong")),
            "{device:#?}"
        );
    }

    // `fog devices` says why, under the device.
    let (code, out, err) = fog.fog(&["devices"]);
    assert_eq!(code, 0, "{err}");
    let block: String = out
        .lines()
        .skip_while(|l| !l.starts_with(&cheat))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        block.contains("trust: ") && block.contains("canary: wrong answer at"),
        "{out}"
    );

    // Visitors get the honest answer from the replicas left.
    let reply = fog_tests::request(fog.router.addr, "GET", "/apps/hello/", &[], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("<html"), "{}", reply.text());
}
