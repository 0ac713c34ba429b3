//! The newcomer's path: in a temporary directory outside the repository, `fog new` for rust,
//! js, python and static, each built with the command the template printed, run as printed,
//! published with the printed `fog publish`, and answering through the router.

use std::path::Path;
use std::process::Command;

use fog_proto::api::AppInfo;

use crate::jspy::{new_project, printed_line, require, shell};
use crate::publish::Fog;

/// Run the `cargo build` line a Rust template printed as a newcomer's shell would: none of this
/// workspace's cargo settings (the shared target directory above all), and no network (the
/// crates are in the local cache).
fn cargo_as_printed(home: &Path, line: &str) -> (bool, String) {
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let mut command = Command::new("cargo");
    command.args(&args).current_dir(home);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUST") && key != "RUSTUP_HOME"
        {
            command.env_remove(&key);
        }
    }
    let output = command.env("CARGO_NET_OFFLINE", "true").output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// GET or POST `path` of `app` through the router → (status, body).
async fn call(fog: &Fog, method: &str, app: &str, path: &str) -> (u16, String) {
    let host = format!("{app}.localhost");
    let reply = fog_tests::request(fog.router.addr, method, path, &[("host", &host)], "")
        .await
        .unwrap_or_else(|e| panic!("{method} {path} of {app}: {e}"));
    (reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_builds_and_publishes_every_template_with_the_printed_commands() {
    require("npm");
    require("componentize-py");
    let fog = Fog::start(1);
    let home = tempfile::tempdir().unwrap();
    let kinds = ["rust", "js", "python", "static"];
    let printed: Vec<String> = kinds
        .iter()
        .map(|kind| new_project(kind, &format!("my-{kind}"), home.path()))
        .collect();

    // The three builds at once: each is mostly one process on one core.
    std::thread::scope(|scope| {
        let builds: Vec<_> = kinds
            .iter()
            .zip(&printed)
            .filter(|(kind, _)| **kind != "static")
            .map(|(kind, out)| {
                let home = home.path();
                scope.spawn(move || {
                    let (ok, output) = match *kind {
                        "rust" => cargo_as_printed(home, printed_line(out, "cargo build")),
                        _ => shell(home, printed_line(out, "cd ")),
                    };
                    assert!(ok, "building the {kind} template:\n{output}");
                })
            })
            .collect();
        for build in builds {
            build.join().unwrap();
        }
    });

    for (kind, out) in kinds.iter().zip(&printed) {
        let name = format!("my-{kind}");
        let mut args: Vec<&str> = printed_line(out, "fog publish ")
            .split_whitespace()
            .skip(1)
            .collect();
        // Compiling a JS or Python engine takes a debug-build host minutes on a busy machine:
        // wait longer for the replica than a person's default.
        args.extend(["--wait", "900", "--json"]);
        let (code, json, err) = fog.fog(&args);
        assert_eq!(code, 0, "publishing {kind}: {err}");
        let info: AppInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(info.name, name);

        let (status, body) = call(&fog, "GET", &name, "/").await;
        assert_eq!(status, 200, "{kind}: {body}");
        assert!(
            body.contains(&format!("Hello from {name}")),
            "{kind}: {body}"
        );
    }
    // The JavaScript and Python apps keep their count in the app's state.
    for name in ["my-js", "my-python"] {
        for n in 1..=2 {
            let (status, body) = call(&fog, "POST", name, "/count").await;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("count {n}\n").as_str())
            );
        }
        assert_eq!(
            call(&fog, "GET", name, "/count").await,
            (200, "count 2\n".to_string())
        );
    }
}
