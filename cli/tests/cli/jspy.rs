//! Apps in JavaScript and Python: the `counter-js` and `counter-py` examples built from source
//! with componentize-js (npm) and componentize-py (PyPI), published to a fog of separate
//! processes, and their count kept in `wasi:keyvalue` across requests and replicas; broken
//! projects and files that are no component refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fog_proto::api::{AppInfo, LogLine};

use crate::fog::run;
use crate::publish::Fog;

/// The pinned componentize-py, as `scripts/setup.sh` installs it.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// Panic with the reason when `tool` does not run: these tests need it and never skip.
pub fn require(tool: &str) {
    let runs = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "`{tool}` is not installed or does not run; scripts/setup.sh installs Node.js, npm and \
         componentize-py {COMPONENTIZE_PY}"
    );
}

/// `sh -c command` in `dir` → (success, stdout and stderr together).
pub fn shell(dir: &Path, command: &str) -> (bool, String) {
    let output = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running `{command}`: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Copy the file tree at `from` to `to`, leaving out build outputs and installed packages.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", "app.wasm", "__pycache__"].contains(&name.to_str().unwrap()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Copy `guest-examples/<example>` and the WIT beside it into `dest` (the repository's layout,
/// so the example's `../wit` resolves) and return the example's copy.
fn copy_example(example: &str, dest: &Path) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    copy_tree(&examples.join("wit"), &dest.join("wit"));
    copy_tree(&examples.join(example), &dest.join(example));
    dest.join(example)
}

/// Build `command` in `dir` and return the component it writes, `dir/app.wasm`.
fn build(dir: &Path, command: &str) -> PathBuf {
    let (ok, output) = shell(dir, command);
    assert!(ok, "`{command}` failed:\n{output}");
    let wasm = dir.join("app.wasm");
    assert!(wasm.is_file(), "`{command}` wrote no app.wasm:\n{output}");
    wasm
}

/// The JavaScript example built from source: `npm install && npm run build`.
pub fn build_js_example(dest: &Path) -> PathBuf {
    require("npm");
    let dir = copy_example("counter-js", dest);
    build(&dir, "npm install --no-audit --no-fund && npm run build")
}

/// The Python example built from source with componentize-py.
pub fn build_py_example(dest: &Path) -> PathBuf {
    require("componentize-py");
    let dir = copy_example("counter-py", dest);
    build(
        &dir,
        "componentize-py -d ../wit -w http-app componentize app -o app.wasm",
    )
}

/// `METHOD /apps/<app><path>` through the router.
async fn call(fog: &Fog, method: &str, app: &str, path: &str) -> fog_tests::Reply {
    let target = format!("/apps/{app}{path}");
    fog_tests::request(fog.router.addr, method, &target, &[], "")
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Publish `wasm` as `app` in tier S with two replicas and wait until both run.
fn publish_two_replicas(fog: &Fog, wasm: &Path, app: &str) {
    let (code, out, err) = fog.fog(&[
        "publish",
        wasm.to_str().unwrap(),
        "--name",
        app,
        "--tier",
        "S",
        "--replicas",
        "2",
        "--wait",
        "900",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let info: AppInfo = serde_json::from_str(&out).unwrap();
    assert_eq!(info.running.len(), 2, "{info:?}");
}

/// The counter contract of both examples: `GET /` says `hello`; each `POST /count` adds one
/// and returns the count; `GET /count` reads it, and both replicas read the same count.
async fn keeps_its_count_across_requests_and_replicas(fog: &Fog, app: &str, hello: &str) {
    let reply = call(fog, "GET", app, "/").await;
    assert_eq!((reply.status, reply.text().as_str()), (200, hello));
    for n in 1..=3 {
        let reply = call(fog, "POST", app, "/count").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), format!("count {n}\n"));
    }
    // The router sends each request to the least busy replica, so reads sent 8 at a time reach
    // both. A follower still restoring may lag: read until every replica has served a read and
    // a whole round answers `count 3` (the request log names who served each read).
    let assigned = fog.app(app).assigned;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let replies = reads(fog, app, 8).await;
        let (code, out, err) = fog.fog(&["logs", app, "--json"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<LogLine> = serde_json::from_str(&out).unwrap();
        let served: BTreeSet<&str> = lines
            .iter()
            .filter(|l| l.method == "GET" && l.path.ends_with("/count") && l.status == 200)
            .map(|l| l.device.as_str())
            .collect();
        let all_three = replies.iter().all(|r| r == "count 3\n");
        if served.len() == assigned.len() && all_three {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads came only from {served:?} of {assigned:?}; last round {replies:?}"
        );
    }
    // Every replica now holds all three writes.
    assert!(
        reads(fog, app, 8).await.iter().all(|r| r == "count 3\n"),
        "a replica lost a write"
    );
}

/// `n` concurrent `GET /count` of `app` through the router → their bodies, all status 200.
async fn reads(fog: &Fog, app: &str, n: usize) -> Vec<String> {
    let target = format!("/apps/{app}/count");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (router, target) = (fog.router.addr, target.clone());
            tokio::spawn(async move { fog_tests::request(router, "GET", &target, &[], "").await })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let reply = task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        bodies.push(reply.text());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_counter_keeps_its_count_across_requests_and_replicas() {
    let work = tempfile::tempdir().unwrap();
    let wasm = build_js_example(work.path());
    let fog = Fog::start(2);
    publish_two_replicas(&fog, &wasm, "counter-js");
    keeps_its_count_across_requests_and_replicas(
        &fog,
        "counter-js",
        "Hello from JavaScript on Fog\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_counter_keeps_its_count_across_requests_and_replicas() {
    let work = tempfile::tempdir().unwrap();
    let wasm = build_py_example(work.path());
    let fog = Fog::start(2);
    publish_two_replicas(&fog, &wasm, "counter-py");
    keeps_its_count_across_requests_and_replicas(&fog, "counter-py", "Hello from Python on Fog\n")
        .await;
}

/// `fog new KIND NAME --dir DIR` → what it printed, asserting success.
pub fn new_project(kind: &str, name: &str, dir: &Path) -> String {
    let (code, out, err) = run(&["new", kind, name, "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out
}

/// The line of `printed` that starts with `prefix`, trimmed.
pub fn printed_line<'a>(printed: &'a str, prefix: &str) -> &'a str {
    printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {printed:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_projects_and_files_that_are_no_component_are_refused_and_nothing_is_published() {
    require("npm");
    require("componentize-py");
    let fog = Fog::start(1);
    let home = tempfile::tempdir().unwrap();
    for (kind, name, source, broken, reason) in [
        (
            "js",
            "broken-js",
            "app.js",
            "addEventListener('fetch', (e) => {\n",
            "failed to parse JS source",
        ),
        (
            "python",
            "broken-py",
            "app.py",
            "def handle(:\n    pass\n",
            "SyntaxError",
        ),
    ] {
        let printed = new_project(kind, name, home.path());
        let root = home.path().join(name);
        std::fs::write(root.join(source), broken).unwrap();
        let (ok, output) = shell(home.path(), printed_line(&printed, "cd "));
        assert!(!ok, "{kind}: a broken project built:\n{output}");
        assert!(
            output.contains(reason),
            "{kind}: {reason:?} not in:\n{output}"
        );
        assert!(!root.join("app.wasm").exists(), "{kind}: app.wasm written");
        // The printed publish command then fails with the reason, and publishes nothing.
        let publish = printed_line(&printed, "fog publish ");
        let args: Vec<&str> = publish.split_whitespace().skip(1).collect();
        let (code, _, err) = fog.fog(&args);
        assert_eq!(code, 1, "{kind}: {err}");
        assert!(err.contains("cannot read"), "{kind}: {err}");
    }
    // A file that is not a component, and one over the size limit (sparse: the CLI refuses it
    // before reading it).
    let script = home.path().join("broken-js/app.js");
    let big = home.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(fog_proto::api::MAX_COMPONENT_BYTES + 1)
        .unwrap();
    for (file, reason) in [
        (&script, "not a WebAssembly binary"),
        (&big, "over the component size limit of 64 MiB"),
    ] {
        let (code, _, err) = fog.fog(&["publish", file.to_str().unwrap(), "--name", "bad"]);
        assert_eq!(code, 1, "{}: {err}", file.display());
        assert!(err.contains(reason), "{}: {err}", file.display());
    }
    let (code, out, err) = fog.fog(&["ps", "--json"]);
    assert_eq!(code, 0, "{err}");
    let apps: Vec<AppInfo> = serde_json::from_str(&out).unwrap();
    assert!(apps.is_empty(), "{apps:?}");
}
