//! `fog run app.wasm`: serve one component over HTTP/1.1 on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use fog_host::server::{self, AppTable};
use fog_host::{LimitArgs, Manifest, Runtime, RuntimeConfig};

/// Serve one app component over HTTP/1.1 (no control plane, no router).
#[derive(Debug, clap::Args)]
pub struct Run {
    /// The component to serve (built for wasm32-wasip2, exporting wasi:http/incoming-handler).
    app: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for compiled components and the app's key-value state (kept across runs).
    /// Without it, state lives in a temporary directory and is lost at exit.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The app's name (its key-value namespace); defaults to the file's stem.
    #[arg(long)]
    name: Option<String>,
    /// Answer a request only once its key-value writes are on disk, so that killing `fog run`
    /// (even with `kill -9`) never loses a write it acknowledged. Costs a disk flush per
    /// request (shared by concurrent requests).
    #[arg(long, requires = "data")]
    durable: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

impl Run {
    pub fn execute(self) -> anyhow::Result<()> {
        let name = match &self.name {
            Some(name) => name.clone(),
            None => default_name(&self.app),
        };
        let manifest = Manifest {
            limits: self.limits.limits(),
            durable: self.durable,
            ..Manifest::new(name)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(self.serve(manifest))
    }

    async fn serve(self, manifest: Manifest) -> anyhow::Result<()> {
        let host = Runtime::new(RuntimeConfig {
            data_dir: self.data.clone(),
            ..RuntimeConfig::default()
        })?;
        let app = Arc::new(host.load_file(manifest, &self.app)?);
        let apps = AppTable::new();
        apps.set_default(Some(app.name().to_string()));
        apps.insert(app.clone());
        let listener = server::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(
            app = app.name(),
            sha256 = app.sha256(),
            pooling = host.uses_pooling(),
            "serving"
        );
        // The one line scripts wait for.
        println!("fog: serving {} on http://{addr}/", app.name());
        server::serve(listener, apps, shutdown_signal()).await;
        let meter = app.meter();
        tracing::info!(
            requests = meter.requests,
            failures = meter.failures,
            fuel = meter.fuel,
            "stopped"
        );
        host.flush().context("saving app state")?;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM, so both stop the server cleanly and save state.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// A valid app name from a file name: `my_app.wasm` → `my-app`.
pub fn default_name(path: &std::path::Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
    let name: String = stem
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name = name.trim_matches('-');
    let name: String = name.chars().take(63).collect();
    if name.is_empty() {
        "app".into()
    } else {
        name.trim_end_matches('-').to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_names_are_valid() {
        for (path, want) in [
            ("x/hello.wasm", "hello"),
            ("my_App.wasm", "my-app"),
            ("__.wasm", "app"),
        ] {
            let name = super::default_name(std::path::Path::new(path));
            assert_eq!(name, want);
            assert!(fog_host::validate_app_name(&name).is_ok());
        }
    }
}
