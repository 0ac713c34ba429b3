//! Memory footprints measured by a real host: the linear memory an app's instances held is
//! reported in heartbeats and shown in `fog ps --json` (`footprint_mb`), which placement plans
//! each replica with instead of its whole memory limit.

use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::publish::Fog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reports_the_memory_its_apps_instances_held() {
    let fog = Fog::start(1);
    for (component, name) in [(programs::HELLO, "hello"), (programs::MEMORY_BOMB, "bomb")] {
        let (code, _, err) = fog.fog(&["publish", component, "--name", name, "--tier", "B"]);
        assert_eq!(code, 0, "{err}");
    }
    // Unmeasured until a host that measures runs them and reports.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (hello, bomb) = loop {
        for name in ["hello", "bomb"] {
            // Each request runs an instance: hello's small memory, the bomb's up to its 64 MiB
            // limit (it is stopped there and answers 500).
            let path = format!("/apps/{name}/");
            let _ = fog_tests::request(fog.router.addr, "GET", &path, &[], "").await;
        }
        let (hello, bomb) = (fog.app("hello"), fog.app("bomb"));
        if let (Some(h), Some(b)) = (hello.footprint_mb, bomb.footprint_mb)
            && h > 0.0
            && b >= 32.0
        {
            break (h, b);
        }
        assert!(
            Instant::now() < deadline,
            "no footprints measured: hello {:?}, bomb {:?}",
            hello.footprint_mb,
            bomb.footprint_mb
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(hello < 16.0, "hello held {hello} MiB");
    assert!(bomb <= 64.0, "the bomb held {bomb} MiB, past its limit");
}
