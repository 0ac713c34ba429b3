//! Split brain: a tier-A primary whose connection to the control plane is cut (through a TCP
//! proxy the test owns and closes) while routers and its follower still reach it must stop
//! taking writes before the control plane promotes the follower; the promoted follower takes
//! them, and no acknowledged write is lost.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::ha::wait_acked;
use crate::publish::Fog;
use crate::state::{Increments, count, wait_for, wait_promoted};

/// A TCP proxy to one address; [`Proxy::cut`] closes its port and drops every connection,
/// [`Proxy::hang`] keeps them open and forwards nothing more (a hung control plane).
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    hung: watch::Sender<bool>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let hung = watch::channel(false).0;
        let accepting = {
            let (tasks, hung) = (tasks.clone(), hung.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let mut hang = hung.subscribe();
                    let task = tokio::spawn(async move {
                        let already = *hang.borrow();
                        if !already && let Ok(mut outbound) = TcpStream::connect(target).await {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                                _ = hang.changed() => {}
                            }
                        }
                        // Hung: the connection stays open and nothing more crosses it.
                        std::future::pending::<()>().await;
                        drop(inbound);
                    });
                    tasks.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        tasks.lock().unwrap().push(accepting.abort_handle());
        Proxy { addr, tasks, hung }
    }

    /// Stop: the listener and every connection through it are dropped.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Hang: connections (open ones and new ones) are held open and never answered again.
    pub(crate) fn hang(&self) {
        self.hung.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// One increment sent straight to a host's plain-HTTP data plane: (status, `x-fog-error`).
async fn increment_on(host: SocketAddr) -> (u16, String) {
    let reply = fog_tests::request(
        host,
        "POST",
        "/api/increment",
        &[("x-fog-app", "counter")],
        "",
    )
    .await
    .unwrap();
    (
        reply.status,
        reply.header(fog_proto::ERROR_HEADER).to_string(),
    )
}

/// Start host `i` of `fog` with one core, always on, given the control planes `control`, and
/// `extra` arguments.
pub(crate) fn spawn_host(fog: &mut Fog, i: usize, control: &str, extra: &[&str]) {
    let args = [&["--always-on"], extra].concat();
    let host = crate::soft::host(fog.dir.path(), i, control, &args);
    fog.hosts.push(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_control_plane_fences_itself_and_its_promoted_follower_takes_writes()
 {
    let mut fog = Fog::start(0);
    let mut proxies = Vec::new();
    for i in 0..3 {
        let proxy = Proxy::start(fog.control.addr).await;
        let control = format!("http://{}", proxy.addr);
        spawn_host(&mut fog, i, &control, &["--listen", "127.0.0.1:0"]);
        proxies.push(proxy);
    }
    let info = fog.publish_counter("A");
    let (primary, follower) = (info.assigned[0].clone(), info.assigned[1].clone());
    wait_for(
        &fog,
        "counter",
        Duration::from_secs(15),
        "not running",
        |a| a.running.contains(&primary) && a.running.contains(&follower),
    )
    .await;
    let load = Increments::start(fog.router.addr, 100);
    wait_acked(&load, 50, "no increments acknowledged").await;

    let victim = fog.host_of(&primary);
    let old = fog.hosts[victim].addr;
    proxies[victim].cut();
    let cut = Instant::now();
    // Writes sent straight to the old primary: taken until it fences itself, then refused
    // with the kind routers retry on the primary their routes name.
    let (mut direct, mut unanswered) = (0u64, 0u64);
    let fenced = loop {
        match increment_on(old).await {
            (200, _) => direct += 1,
            (_, kind) if kind == "follower" => break cut.elapsed(),
            // Written before the lapse, answered after: not acknowledged (it may count).
            (500, kind) if kind == "host" => unanswered += 1,
            (status, kind) => panic!("the old primary answered {status} {kind}"),
        }
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "the cut-off primary still takes writes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_promoted(&fog, &follower).await;
    let promoted = cut.elapsed();
    // The promoted follower takes writes through the router; the old primary still refuses.
    let before = load.acked();
    wait_acked(&load, before + 100, "the new primary takes no writes").await;
    assert_eq!(increment_on(old).await.1, "follower");
    let (acked, failed, errors, rate) = load.finish().await;
    let total = count(&fog).await;
    println!(
        "split brain: the cut-off primary refused writes {fenced:?} after the cut, the follower \
         was promoted after {promoted:?}; {acked} acknowledged through the router at {rate:.0}/s \
         and {direct} on the old primary directly ({unanswered} not acknowledged), {failed} \
         failed, count {total}"
    );
    assert!(
        total >= acked + direct,
        "acknowledged increments were lost: {total} < {acked} + {direct}"
    );
    // A request that failed may still have been applied before its answer was lost.
    assert!(
        total <= acked + direct + failed + unanswered,
        "{total} > {acked} + {direct} + {failed} + {unanswered}: {errors:?}"
    );
}
