//! Config and secrets (`fog publish --var/--secret`, `fog config`): a guest reads them through
//! wasi:config, a change reaches the running replica, and a secret's value appears nowhere it
//! must not — `fog ps --json`, `fog logs`, any line the control plane, router or host printed,
//! or the registry's bytes on disk.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fog_test_programs as programs;

use crate::fog::{FOG, run};

/// A `fog` process whose stdout and stderr are kept whole, killed when dropped.
struct Captured {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Captured {
    /// Start `fog ARGS` with every log line on (FOG_LOG=debug), and wait for its address.
    fn start(args: &[&str]) -> (Captured, String) {
        let mut child = Command::new(FOG)
            .args(args)
            .env("FOG_LOG", "debug,tor_netdir=error")
            .env("FOG_ADMISSION_TOKEN", crate::fog::ADMISSION_TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting fog");
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let captured = Captured { child, output };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = captured.text();
            if let Some(url) = text
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .map(|w| w.trim_end_matches([',', '/']).to_string())
            {
                return (captured, url);
            }
            assert!(
                Instant::now() < deadline,
                "no address from fog {args:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_bytes(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reaches_the_guest_and_running_replicas_and_secrets_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let (code, _, err) = run(&["keygen", "--key", &path("router/device.key")]);
    assert_eq!(code, 0, "{err}");
    let router_key = fog_proto::auth::Identity::from_text(
        &std::fs::read_to_string(path("router/device.key")).unwrap(),
    )
    .unwrap()
    .public_hex();
    let (control, control_url) = Captured::start(&[
        "control",
        "--listen",
        "127.0.0.1:0",
        "--data",
        &path("control"),
        "--trust-router",
        &router_key,
    ]);
    let (router, router_url) = Captured::start(&[
        "router",
        "--listen",
        "127.0.0.1:0",
        "--control",
        &control_url,
        "--data",
        &path("router"),
        "--betanet",
        "off",
        "--attach",
        "127.0.0.1:0",
        "--visitor-rate",
        "0",
    ]);
    let (host, _) = Captured::start(&[
        "host",
        "--control",
        &control_url,
        "--data",
        &path("host"),
        "--cpu",
        "1",
        "--always-on",
    ]);
    let key = path("developer.key");
    assert_eq!(run(&["keygen", "--key", &key]).0, 0);
    let fog = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--control", &control_url, "--key", &key]);
        run(&all)
    };

    // Unique to this run, so finding it anywhere means it leaked from this run.
    let unique = format!(
        "{:x}{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        std::process::id()
    );
    let secret = format!("s3cret-{unique}");
    let visible = format!("KEEP=visible-{unique}");
    std::fs::write(path("token"), &secret).unwrap();
    let secret_arg = format!("TOKEN=@{}", path("token"));
    let (code, _, err) = fog(&[
        "publish",
        programs::API,
        "--name",
        "cfg",
        "--var",
        "GREETING=hello",
        "--var",
        &visible,
        "--secret",
        &secret_arg,
    ]);
    assert_eq!(code, 0, "{err}");

    let router_addr: std::net::SocketAddr =
        router_url.trim_start_matches("http://").parse().unwrap();
    let read = |key: &'static str, want: Option<String>| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = fog_tests::request(
                router_addr,
                "GET",
                &format!("/config/{key}"),
                &[("host", "cfg.localhost")],
                "",
            )
            .await;
            let got = match &reply {
                Ok(r) if r.status == 200 => Some(r.text()),
                _ => None,
            };
            let done = match (&want, &reply) {
                (Some(_), _) => got == want,
                (None, Ok(r)) => r.status == 404,
                (None, Err(_)) => false,
            };
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/config/{key}: wanted {want:?}, got {:?}",
                reply.map(|r| (r.status, r.text()))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    read("GREETING", Some("hello".into())).await;
    read("TOKEN", Some(secret.clone())).await;

    // A changed variable reaches the running replica, same version.
    let (code, _, err) = fog(&["config", "cfg", "set", "GREETING=bonjour"]);
    assert_eq!(code, 0, "{err}");
    read("GREETING", Some("bonjour".into())).await;
    let (code, out, err) = fog(&["config", "cfg", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("GREETING=bonjour"), "{out}");
    assert!(out.contains("TOKEN=(secret)"), "{out}");
    let (code, _, err) = fog(&["config", "cfg", "unset", "GREETING"]);
    assert_eq!(code, 0, "{err}");
    read("GREETING", None).await;

    // Bad input: a clear error, a non-zero exit, nothing changed.
    for (args, want, needle) in [
        (vec!["config", "cfg", "set", "NOVALUE"], 2, "is not K=V"),
        (vec!["config", "cfg", "set", "bad key=1"], 2, "config name"),
        (
            vec!["config", "cfg", "set-secret", "K=inline"],
            2,
            "K=@FILE",
        ),
        (
            vec!["config", "cfg", "set-secret", "K=@/nonexistent/file"],
            2,
            "cannot read",
        ),
        (
            vec!["config", "cfg", "unset", "MISSING"],
            1,
            "no variable or secret",
        ),
        (vec!["config", "nosuchapp", "list"], 1, "no app named"),
    ] {
        let (code, _, err) = fog(&args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (_, out, _) = fog(&["config", "cfg", "list", "--json"]);
    let listing: fog_proto::config::ConfigListing = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listing.vars.keys().collect::<Vec<_>>(),
        ["KEEP"],
        "{listing:?}"
    );
    assert_eq!(listing.secrets, ["TOKEN"]);

    // Where the secret must never appear.
    let (code, ps, _) = fog(&["ps", "--json"]);
    assert_eq!(code, 0);
    let info: Vec<fog_proto::api::AppInfo> = serde_json::from_str(&ps).unwrap();
    assert_eq!(info[0].version, 1, "a config change is no new version");
    let (_, logs, _) = fog(&["logs", "cfg", "--json"]);
    assert!(
        logs.contains("/config/TOKEN"),
        "the logs hold the requests: {logs}"
    );
    for (what, text) in [
        ("fog ps --json", ps),
        ("fog logs --json", logs),
        ("the control plane's output", control.text()),
        ("the router's output", router.text()),
        ("the host's output", host.text()),
    ] {
        assert!(!text.contains(&secret), "the secret appears in {what}");
    }
    let mut registry = Vec::new();
    all_bytes(&dir.path().join("control"), &mut registry);
    // A variable is stored in the clear: the search does find what is there.
    assert!(
        contains(&registry, &format!("visible-{unique}")),
        "the registry's files were not read"
    );
    assert!(
        !contains(&registry, &secret),
        "the secret is stored in the clear"
    );
}
