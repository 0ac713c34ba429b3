//! `fog new rust|static NAME`: write a project that builds with one printed command and
//! publishes with `fog publish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What kind of project to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    /// A Rust component (wasm32-wasip2), built with cargo.
    Rust,
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
