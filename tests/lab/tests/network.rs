//! The network lab's own tests: the NAT is real (nothing connects in, devices connect out),
//! netem delay and loss show on the wire, processes run inside nodes, and the lab leaves nothing
//! behind. They need root; without it they fail with the lab's reason.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use fog_lab::{Lab, LabError, Links};

/// Long enough that a refused connect is not a slow one: the lab's round trips are < 1 ms
/// without netem.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Two public nodes and two devices behind NAT, with the links this kernel does best.
fn small_lab() -> Lab {
    small_lab_with(Links::Auto)
}

fn small_lab_with(links: Links) -> Lab {
    Lab::builder()
        .public("router1")
        .public("host5")
        .nated("dev1")
        .nated("dev2")
        .links(links)
        .build()
        .unwrap_or_else(|e| panic!("the network lab cannot run here: {e}"))
}

/// The NAT tests run on both kinds of link, kernel (veth) and delay lines: what keeps
/// connections out is the NAT, whatever carries the frames.
macro_rules! on_both_kinds_of_link {
    ($($test:ident),* $(,)?) => {
        mod kernel_links {
            $(#[test] fn $test() { super::$test(fog_lab::Links::Kernel) })*
        }
        mod delay_lines {
            $(#[test] fn $test() { super::$test(fog_lab::Links::DelayLine) })*
        }
    };
}

on_both_kinds_of_link!(
    a_device_connects_out_to_a_listener_on_a_public_host,
    the_public_host_sees_a_device_as_its_nat_address,
    a_device_cannot_connect_to_another_device,
    nothing_on_the_internet_can_connect_to_a_device,
    the_nat_filter_is_what_keeps_connections_out,
);

/// 198.18.0.0/15, the only addresses the lab may use.
fn in_benchmarking_range(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> 17 == u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17
}

fn at(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(addr, port))
}

/// Accepts connections on `listener` forever, answering each with "hello\n" (the thread ends
/// with the test process; the listener's namespace is gone long before).
fn serve_hello(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"hello\n");
        }
    });
}

fn read_hello(mut stream: std::net::TcpStream) -> String {
    stream.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).unwrap();
    got
}

/// Tries every (from, to) connect at once and returns those that succeeded.
fn successful_connects(lab: &Lab, attempts: &[(&str, SocketAddr)]) -> Vec<String> {
    std::thread::scope(|scope| {
        let tries: Vec<_> = attempts
            .iter()
            .map(|(from, to)| {
                scope.spawn(move || (*from, *to, lab.tcp_connect(from, *to, CONNECT_TIMEOUT)))
            })
            .collect();
        tries
            .into_iter()
            .filter_map(|t| {
                let (from, to, result) = t.join().unwrap();
                match result {
                    Ok(_) => Some(format!("{from} -> {to}")),
                    Err(LabError::Connect { .. }) => None,
                    Err(other) => panic!("the lab failed to try {from} -> {to}: {other}"),
                }
            })
            .collect()
    })
}

/// The control for the NAT tests: the lab works, so their failed connects mean something.
fn a_device_connects_out_to_a_listener_on_a_public_host(links: Links) {
    let lab = small_lab_with(links);
    let listener = lab.tcp_listen("host5", 8080).unwrap();
    serve_hello(listener);
    let host5 = lab.addr("host5").unwrap();
    let connected = lab
        .tcp_connect("dev1", at(host5, 8080), CONNECT_TIMEOUT)
        .unwrap();
    assert_eq!(read_hello(connected.stream), "hello\n");
}

fn the_public_host_sees_a_device_as_its_nat_address(links: Links) {
    let lab = small_lab_with(links);
    let listener = lab.tcp_listen("host5", 8080).unwrap();
    let host5 = lab.addr("host5").unwrap();
    let _client = lab
        .tcp_connect("dev1", at(host5, 8080), CONNECT_TIMEOUT)
        .unwrap();
    let (_stream, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(lab.public_addr("dev1").unwrap())
    );
    assert_ne!(lab.public_addr("dev1").unwrap(), lab.addr("dev1").unwrap());
}

fn a_device_cannot_connect_to_another_device(links: Links) {
    let lab = small_lab_with(links);
    let listener = lab.tcp_listen("dev2", 8080).unwrap();
    serve_hello(listener);
    let (lan, public) = (lab.addr("dev2").unwrap(), lab.public_addr("dev2").unwrap());
    let got = successful_connects(&lab, &[("dev1", at(lan, 8080)), ("dev1", at(public, 8080))]);
    assert!(got.is_empty(), "connected into a NATed device: {got:?}");
}

fn nothing_on_the_internet_can_connect_to_a_device(links: Links) {
    let lab = small_lab_with(links);
    for dev in ["dev1", "dev2"] {
        serve_hello(lab.tcp_listen(dev, 8080).unwrap());
    }
    let mut attempts = Vec::new();
    for from in ["internet", "router1", "host5"] {
        for dev in ["dev1", "dev2"] {
            attempts.push((from, at(lab.addr(dev).unwrap(), 8080)));
            attempts.push((from, at(lab.public_addr(dev).unwrap(), 8080)));
        }
    }
    let got = successful_connects(&lab, &attempts);
    assert!(got.is_empty(), "connected into a NATed device: {got:?}");
}

/// The internet has routes to every device LAN, so it is the NAT's filter (not a missing
/// route) that keeps connections out: without the filter the same connect goes through.
fn the_nat_filter_is_what_keeps_connections_out(links: Links) {
    let lab = small_lab_with(links);
    serve_hello(lab.tcp_listen("dev2", 8080).unwrap());
    let dev2 = at(lab.addr("dev2").unwrap(), 8080);
    assert!(successful_connects(&lab, &[("router1", dev2)]).is_empty());
    lab.run("dev2-nat", "nft", &["delete", "table", "inet", "fognat"])
        .unwrap();
    let connected = lab.tcp_connect("router1", dev2, CONNECT_TIMEOUT).unwrap();
    assert_eq!(read_hello(connected.stream), "hello\n");
}

#[test]
fn netem_delay_of_80_ms_shows_in_the_tcp_connect_time() {
    let lab = small_lab();
    serve_hello(lab.tcp_listen("host5", 8080).unwrap());
    let host5 = at(lab.addr("host5").unwrap(), 8080);
    // The fastest of a few handshakes: one round trip, without scheduling noise.
    let fastest = |lab: &Lab| {
        (0..5)
            .map(|_| {
                lab.tcp_connect("dev1", host5, CONNECT_TIMEOUT)
                    .unwrap()
                    .elapsed
            })
            .min()
            .unwrap()
    };
    let before = fastest(&lab);
    lab.set_netem("dev1", Duration::from_millis(80), 0.0)
        .unwrap();
    let with_delay = fastest(&lab);
    println!("TCP connect dev1 -> host5: {before:?} without netem, {with_delay:?} with 80 ms");
    assert!(
        before < Duration::from_millis(40),
        "the lab is slow without netem: {before:?}"
    );
    assert!(
        with_delay >= Duration::from_millis(80),
        "delay missing: {with_delay:?}"
    );
    assert!(with_delay < Duration::from_millis(80) + Duration::from_millis(200));
}

/// On kernel links the delay is tc netem's: it shows as above where the kernel has netem, and
/// where it has not (CONFIG_NET_SCH_NETEM off) the error says so — and `Links::Auto` then
/// chose delay lines.
#[test]
fn netem_on_kernel_links_delays_or_says_the_kernel_lacks_netem() {
    let lab = small_lab_with(Links::Kernel);
    serve_hello(lab.tcp_listen("host5", 8080).unwrap());
    let host5 = at(lab.addr("host5").unwrap(), 8080);
    match lab.set_netem("dev1", Duration::from_millis(80), 0.0) {
        Ok(()) => {
            let fastest = (0..5)
                .map(|_| {
                    lab.tcp_connect("dev1", host5, CONNECT_TIMEOUT)
                        .unwrap()
                        .elapsed
                })
                .min()
                .unwrap();
            assert!(
                fastest >= Duration::from_millis(80),
                "delay missing: {fastest:?}"
            );
            assert_eq!(small_lab().links(), Links::Kernel);
        }
        Err(LabError::NoNetem { node }) => {
            assert_eq!(node, "dev1");
            assert_eq!(small_lab().links(), Links::DelayLine);
        }
        Err(other) => panic!("tc netem failed: {other}"),
    }
}

#[test]
fn netem_loss_of_100_percent_cuts_the_link_and_clearing_it_restores_it() {
    let lab = small_lab();
    serve_hello(lab.tcp_listen("host5", 8080).unwrap());
    let host5 = at(lab.addr("host5").unwrap(), 8080);
    lab.set_netem("dev1", Duration::ZERO, 100.0).unwrap();
    assert!(successful_connects(&lab, &[("dev1", host5)]).is_empty());
    lab.set_netem("dev1", Duration::ZERO, 0.0).unwrap();
    // As after a real outage, ARP for the gateway may have failed and needs a moment.
    lab.wait_for_tcp("dev1", host5, Duration::from_secs(10))
        .unwrap();
}

#[test]
fn a_spawned_process_runs_inside_its_node() {
    let lab = small_lab();
    let mut cmd = Command::new("ip");
    cmd.args(["-4", "-o", "addr", "show"]);
    let process = lab.spawn("dev1", cmd).unwrap();
    let status = process
        .wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("ip exits");
    assert!(status.success(), "{}", process.log());
    let log = process.log();
    assert!(log.contains("inet 198.19.1.2/24"), "{log}");
    assert!(
        !log.contains("198.18."),
        "a device sees only its LAN: {log}"
    );
}

#[test]
fn a_listener_process_on_a_public_host_serves_a_device() {
    let lab = small_lab();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_lab"));
    serve.args(["serve", "9000"]);
    let server = lab.spawn("host5", serve).unwrap();
    let host5 = at(lab.addr("host5").unwrap(), 9000);
    lab.wait_for_tcp("dev1", host5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}; server said: {}", server.log()));
    let connected = lab.tcp_connect("dev1", host5, CONNECT_TIMEOUT).unwrap();
    assert_eq!(read_hello(connected.stream), "hello\n");
}

#[test]
fn every_address_in_the_lab_is_in_the_benchmarking_range() {
    let lab = small_lab();
    for node in lab.nodes() {
        let out = lab.run(node, "ip", &["-o", "addr", "show"]).unwrap();
        for line in out.lines().filter(|l| !l.contains(" lo ")) {
            let mut words = line.split_whitespace();
            let (family, addr) = (words.nth(2).unwrap(), words.next().unwrap());
            assert_eq!(family, "inet", "{node} has a non-IPv4 address: {line}");
            let ip: Ipv4Addr = addr.split('/').next().unwrap().parse().unwrap();
            assert!(in_benchmarking_range(ip), "{node}: {line}");
        }
        // Every gateway of every route is a lab address too.
        let routes = lab.run(node, "ip", &["-4", "route", "show"]).unwrap();
        for gw in routes.lines().filter_map(|l| l.split(" via ").nth(1)) {
            let gw: Ipv4Addr = gw.split_whitespace().next().unwrap().parse().unwrap();
            assert!(in_benchmarking_range(gw), "{node}: {routes}");
        }
    }
}

#[test]
fn dropping_the_lab_removes_its_namespaces_and_processes() {
    let lab = small_lab();
    let names: HashSet<String> = lab
        .nodes()
        .iter()
        .map(|n| lab.ns(n).unwrap().to_owned())
        .collect();
    let mut sleep = Command::new("sleep");
    sleep.arg("1000");
    let pid = lab.spawn("dev1", sleep).unwrap().pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(lab);
    let left: Vec<String> = fog_lab::list_namespaces()
        .unwrap()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still runs"
    );
}

#[test]
fn a_test_that_panics_still_removes_its_lab() {
    let names = std::sync::Mutex::new(HashSet::new());
    let outcome = std::panic::catch_unwind(|| {
        let lab = small_lab();
        let mut seen = names.lock().unwrap();
        seen.extend(lab.nodes().iter().map(|n| lab.ns(n).unwrap().to_owned()));
        drop(seen);
        panic!("a failing test");
    });
    assert!(outcome.is_err());
    let names = names.into_inner().unwrap();
    assert!(!names.is_empty());
    let left: Vec<String> = fog_lab::list_namespaces()
        .unwrap()
        .into_iter()
        .filter(|n| names.contains(n))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn leftovers_of_a_dead_process_are_swept() {
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = format!("fl{dead_pid}x0-stale");
    let made = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(made.success());
    // Another test process's sweep may get there first; either way it must be gone.
    let removed = fog_lab::sweep_stale().unwrap();
    assert!(
        !fog_lab::list_namespaces().unwrap().contains(&stale),
        "{removed:?}"
    );
}

/// A test process killed with SIGKILL stays a zombie until something reaps it; its labs are
/// leftovers all the same.
#[test]
fn leftovers_of_a_killed_process_not_yet_reaped_are_swept() {
    let mut zombie = Command::new("true").spawn().unwrap();
    let pid = zombie.id();
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never exited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stale = format!("fl{pid}x0-zombie");
    assert!(
        Command::new("ip")
            .args(["netns", "add", &stale])
            .status()
            .unwrap()
            .success()
    );
    let removed = fog_lab::sweep_stale().unwrap();
    let left = fog_lab::list_namespaces().unwrap();
    zombie.wait().unwrap();
    assert!(!left.contains(&stale), "{removed:?}");
}

#[test]
fn without_root_the_lab_says_why() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let euid: u32 = uid_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let out = if euid == 0 {
        // Root drops to nobody; the binary is copied where nobody can run it.
        let dir = std::env::temp_dir().join(format!("fog-lab-noroot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("lab");
        std::fs::copy(env!("CARGO_BIN_EXE_lab"), &bin).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("up")
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        out
    } else {
        Command::new(env!("CARGO_BIN_EXE_lab"))
            .arg("up")
            .output()
            .unwrap()
    };
    let uid = if euid == 0 { 65534 } else { euid };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs root") && stderr.contains(&format!("uid {uid}")),
        "{stderr}"
    );
}

#[test]
fn a_missing_tool_is_named_with_its_package() {
    // A PATH with `ip` and `tc` but no `nft`.
    let dir = std::env::temp_dir().join(format!("fog-lab-nonft-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["ip", "tc"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output();
        let path = String::from_utf8(found.unwrap().stdout).unwrap();
        std::os::unix::fs::symlink(path.trim(), dir.join(tool)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("up")
        .env("PATH", &dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`nft` command (Debian package nftables)"),
        "{stderr}"
    );
}
