//! Build the guest examples (`guest-examples/`) as wasm32-wasip2 components and write their paths
//! as constants, so tests, benches and the demo find them without knowing where cargo put them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant name, crate artifact name) of every guest.
const GUESTS: &[(&str, &str)] = &[
    ("HELLO", "hello"),
    ("COUNTER", "counter"),
    ("API", "api"),
    ("FILESERVER", "fileserver"),
    ("CANARY", "canary"),
    ("UPLOAD", "upload"),
    ("INFINITE_LOOP", "hostile_infinite_loop"),
    ("MEMORY_BOMB", "hostile_memory_bomb"),
    ("STACK_OVERFLOW", "hostile_stack_overflow"),
    ("TRAP", "hostile_trap"),
    ("HUGE_RESPONSE", "hostile_huge_response"),
    ("SLOW_BODY", "hostile_slow_body"),
    ("OUTBOUND_HTTP", "hostile_outbound_http"),
    ("FILE_ACCESS", "hostile_file_access"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let guests = root.join("guest-examples");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: keep guest builds beside the
    // workspace's own so they are reused between runs.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("guests");

    for dir in ["guest-examples", "sdk/src", "sdk/wit", "sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not leak the outer build's settings (flags, wrappers such as clippy's, profiles) into
    // the guest build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "CARGO_MAKEFLAGS" | "CARGO_NET_OFFLINE"
        ) || key.starts_with("CARGO_REGISTRIES_")
            || key.starts_with("CARGO_HTTP_");
        let drop = (key.starts_with("CARGO_") && !keep)
            || matches!(
                key.as_str(),
                "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CLIPPY_ARGS"
                    | "RUSTDOCFLAGS"
            );
        if drop {
            command.env_remove(&key);
        }
    }
    let status = command
        .status()
        .expect("running cargo to build the guest examples");
    if !status.success() {
        panic!(
            "building guest-examples for wasm32-wasip2 failed ({status}); \
             if the target is missing, run `rustup target add wasm32-wasip2`"
        );
    }

    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut code = String::new();
    for (constant, artifact) in GUESTS {
        let path = release.join(format!("{artifact}.wasm"));
        assert!(
            path.exists(),
            "guest build did not produce {}",
            path.display()
        );
        code.push_str(&format!(
            "/// Path of the `{artifact}` component.\npub const {constant}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    code.push_str(
        "/// Every guest as (constant name, path).\npub const ALL: &[(&str, &str)] = &[\n",
    );
    for (constant, _) in GUESTS {
        code.push_str(&format!("    ({constant:?}, {constant}),\n"));
    }
    code.push_str("];\n");
    write_if_changed(&out_dir.join("guests.rs"), &code);

    // What the `fog` binary ships: the demo apps, the fileserver and the demo site, embedded.
    let mut shipped = String::new();
    for (constant, artifact) in SHIPPED {
        let path = release.join(format!("{artifact}.wasm"));
        shipped.push_str(&format!(
            "/// The `{artifact}` component.\npub static {constant}: &[u8] = include_bytes!({:?});\n",
            path.display().to_string()
        ));
    }
    let site = guests.join("site");
    let mut files = Vec::new();
    list_files(&site, &site, &mut files);
    files.sort();
    shipped.push_str("/// The demo site's files as (path, bytes).\npub static DEMO_SITE: &[(&str, &[u8])] = &[\n");
    for (rel, path) in files {
        shipped.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    shipped.push_str("];\n");
    write_if_changed(&out_dir.join("shipped.rs"), &shipped);
}

/// The components `fog` embeds (constant name, artifact name).
const SHIPPED: &[(&str, &str)] = &[
    ("HELLO", "hello"),
    ("COUNTER", "counter"),
    ("API", "api"),
    ("FILESERVER", "fileserver"),
    ("CANARY", "canary"),
    ("UPLOAD", "upload"),
];

fn list_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            list_files(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, path));
        }
    }
}

fn write_if_changed(path: &Path, code: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(code) {
        std::fs::write(path, code).unwrap();
    }
}
