//! `fog new rust|js|python|static NAME`: write a project that builds with one printed command
//! and publishes with `fog publish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What kind of project to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// A Rust component (wasm32-wasip2), built with cargo.
    Rust,
    /// A JavaScript app, built into a component with componentize-js (npm).
    Js,
    /// A Python app, built into a component with componentize-py (PyPI).
    Python,
    /// A folder of HTML, CSS and other files; nothing to build.
    Static,
}

/// Start a new app in a new directory NAME.
#[derive(Debug, clap::Args)]
pub struct New {
    /// What to start.
    #[arg(value_enum)]
    kind: Kind,
    /// The app's name (also the directory made for it).
    name: String,
    /// Where to make the directory (default: here).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,
}

impl New {
    pub fn execute(self) -> anyhow::Result<()> {
        fog_host::validate_app_name(&self.name).map_err(anyhow::Error::msg)?;
        let root = self.dir.join(&self.name);
        if root.exists() {
            bail!("{} already exists", root.display());
        }
        let files = match self.kind {
            Kind::Rust => rust(&self.name),
            Kind::Js => js(&self.name),
            Kind::Python => python(&self.name),
            Kind::Static => site(&self.name),
        };
        for (path, contents) in &files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("files live in a directory"))
                .with_context(|| format!("cannot create {}", root.display()))?;
            std::fs::write(&path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let shown = root.display();
        let name = &self.name;
        println!("created {name} in {shown}");
        match self.kind {
            Kind::Rust => {
                let artifact = name.replace('-', "_");
                println!("build it (needs `rustup target add wasm32-wasip2`):");
                println!(
                    "  cargo build --manifest-path {} --target wasm32-wasip2 --release",
                    root.join("Cargo.toml").display()
                );
                println!("publish it:");
                println!(
                    "  fog publish {} --name {name}",
                    root.join(format!("target/wasm32-wasip2/release/{artifact}.wasm"))
                        .display()
                );
            }
            Kind::Js => {
                println!("build it (needs Node.js 18 or later and npm):");
                println!("  cd {shown} && npm install && npm run build",);
                println!("publish it:");
                println!(
                    "  fog publish {} --name {name}",
                    root.join("app.wasm").display()
                );
            }
            Kind::Python => {
                println!(
                    "build it (needs componentize-py {COMPONENTIZE_PY}: \
                     `pip install componentize-py=={COMPONENTIZE_PY}`):"
                );
                println!(
                    "  cd {shown} && componentize-py -d wit -w http-app componentize app -o app.wasm"
                );
                println!("publish it:");
                println!(
                    "  fog publish {} --name {name}",
                    root.join("app.wasm").display()
                );
            }
            Kind::Static => {
                println!(
                    "nothing to build; edit the files in {}, then publish:",
                    public(&root).display()
                );
                println!("  fog publish {} --name {name}", public(&root).display());
            }
        }
        Ok(())
    }
}

/// The componentize-js the JavaScript template pins (npm).
const COMPONENTIZE_JS: &str = "0.23.0";
/// The preview2-shim componentize-js 0.23 loads at build time without depending on it (npm).
const PREVIEW2_SHIM: &str = "0.25.0";
/// The componentize-py the Python template is built with (PyPI).
const COMPONENTIZE_PY: &str = "0.25.1";

/// The WIT of a JavaScript or Python app, from `guest-examples/wit`: the world (serve
/// `wasi:http`, keep state in `wasi:keyvalue`) and every package it names, so the project builds
/// with nothing fetched but the build tool.
const WIT: &[(&str, &str)] = &[
    (
        "world.wit",
        include_str!("../../../guest-examples/wit/world.wit"),
    ),
    (
        "deps/cli/package.wit",
        include_str!("../../../guest-examples/wit/deps/cli/package.wit"),
    ),
    (
        "deps/clocks/package.wit",
        include_str!("../../../guest-examples/wit/deps/clocks/package.wit"),
    ),
    (
        "deps/filesystem/package.wit",
        include_str!("../../../guest-examples/wit/deps/filesystem/package.wit"),
    ),
    (
        "deps/http/package.wit",
        include_str!("../../../guest-examples/wit/deps/http/package.wit"),
    ),
    (
        "deps/io/package.wit",
        include_str!("../../../guest-examples/wit/deps/io/package.wit"),
    ),
    (
        "deps/random/package.wit",
        include_str!("../../../guest-examples/wit/deps/random/package.wit"),
    ),
    (
        "deps/sockets/package.wit",
        include_str!("../../../guest-examples/wit/deps/sockets/package.wit"),
    ),
    (
        "deps/keyvalue/world.wit",
        include_str!("../../../guest-examples/wit/deps/keyvalue/world.wit"),
    ),
    (
        "deps/keyvalue/store.wit",
        include_str!("../../../guest-examples/wit/deps/keyvalue/store.wit"),
    ),
    (
        "deps/keyvalue/atomic.wit",
        include_str!("../../../guest-examples/wit/deps/keyvalue/atomic.wit"),
    ),
    (
        "deps/keyvalue/batch.wit",
        include_str!("../../../guest-examples/wit/deps/keyvalue/batch.wit"),
    ),
];

/// `files` plus the WIT under `wit/`.
fn with_wit(mut files: Vec<(String, String)>) -> Vec<(String, String)> {
    files.extend(
        WIT.iter()
            .map(|(path, text)| (format!("wit/{path}"), text.to_string())),
    );
    files
}

/// The JavaScript template: the `counter-js` example under the app's name.
fn js(name: &str) -> Vec<(String, String)> {
    let app = include_str!("../../../guest-examples/counter-js/app.js")
        .replace("counter-js", name)
        .replace("JavaScript on Fog", name);
    let manifest = format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js app.js --wit wit --world-name http-app --out app.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM}"
  }}
}}
"#
    );
    with_wit(vec![
        ("package.json".into(), manifest),
        ("app.js".into(), app),
        (".gitignore".into(), "/node_modules\n/app.wasm\n".into()),
    ])
}

/// The Python template: the `counter-py` example under the app's name.
fn python(name: &str) -> Vec<(String, String)> {
    let app = include_str!("../../../guest-examples/counter-py/app.py")
        .replace("counter-py", name)
        .replace("Python on Fog", name);
    with_wit(vec![
        ("app.py".into(), app),
        (".gitignore".into(), "/app.wasm\n/__pycache__\n".into()),
    ])
}

fn public(root: &Path) -> PathBuf {
    root.join("public")
}

fn site(name: &str) -> Vec<(String, String)> {
    vec![
        (
            "public/index.html".into(),
            format!(
                "<!doctype html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>{name}</title>\n  <link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n  <h1>Hello from {name}</h1>\n  <p>Edit public/index.html and publish again.</p>\n</body>\n</html>\n"
            ),
        ),
        (
            "public/404.html".into(),
            "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Not found</title></head>\n<body><h1>Not found</h1><p><a href=\"/\">Start page</a></p></body>\n</html>\n".into(),
        ),
        (
            "public/style.css".into(),
            "body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; }\n"
                .into(),
        ),
    ]
}

fn rust(name: &str) -> Vec<(String, String)> {
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wasip2 = "2.0.1"

[profile.release]
opt-level = "s"
strip = true
lto = true
codegen-units = 1
panic = "abort"

# A project of its own, even inside another cargo workspace.
[workspace]
"#
    );
    let lib = format!(
        r#"//! {name}: an HTTP app for Fog (a wasi:http component).

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::types::{{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam}};

struct App;

impl Guest for App {{
    fn handle(request: IncomingRequest, out: ResponseOutparam) {{
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match path.as_str() {{
            "/" => (200, "Hello from {name}\n".to_string()),
            other => (404, format!("nothing at {{other}}\n")),
        }};
        let headers = Fields::from_list(&[(
            "content-type".to_string(),
            b"text/plain; charset=utf-8".to_vec(),
        )])
        .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("a valid status");
        let outgoing = response.body().expect("the body, once");
        ResponseOutparam::set(out, Ok(response));
        let stream = outgoing.write().expect("the stream, once");
        stream
            .blocking_write_and_flush(body.as_bytes())
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(outgoing, None).expect("finishing the body");
    }}
}}

wasip2::http::proxy::export!(App);
"#
    );
    vec![
        ("Cargo.toml".into(), manifest),
        ("src/lib.rs".into(), lib),
        (".gitignore".into(), "/target\n".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template builds with the tool versions the example is tested with.
    #[test]
    fn the_js_template_pins_the_packages_the_example_pins() {
        let deps = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text).unwrap()["devDependencies"].clone()
        };
        let template = js("my-app");
        let manifest = &template
            .iter()
            .find(|(p, _)| p == "package.json")
            .unwrap()
            .1;
        let example = include_str!("../../../guest-examples/counter-js/package.json");
        assert_eq!(deps(manifest), deps(example));
    }

    /// Every file of `guest-examples/wit` is in the templates (a new one needs adding to `WIT`).
    #[test]
    fn the_templates_carry_all_of_the_wit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/wit");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    on_disk.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = WIT.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }
}
