//! Talking to the control plane from the CLI: the developer's key, signed requests, errors.

use fog_net::control_urls::{ControlUrls, Failover};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use fog_proto::api::ErrorBody;
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};

/// Where the control plane is, for every subcommand that talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// The control planes' base URLs, comma-separated: requests go to the one that answered
    /// last and fail over to the next on connection errors, timeouts, 503 and a control plane
    /// that stopped answering (its liveness check unanswered).
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    pub control: ControlUrls,
    /// The developer key (made by `fog keygen`).
    #[arg(long, env = "FOG_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
}

/// The default key file: `$XDG_CONFIG_HOME/fog/key` or `~/.config/fog/key`.
pub fn default_key_path() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("fog")
        .join("key")
}

/// A client for the control planes, signing with the developer's key when asked; each request
/// goes to the one that answered last and fails over to the others.
#[derive(Debug)]
pub struct Api {
    control: ControlUrls,
    key: PathBuf,
    /// A key held in memory (a relay's identity) instead of the key file.
    fixed: Option<Identity>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(args: &ControlArgs) -> anyhow::Result<Api> {
        Ok(Api {
            control: args.control.clone(),
            key: args.key.clone().unwrap_or_else(default_key_path),
            fixed: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .context("building the HTTP client")?,
        })
    }

    /// A client that signs with `identity` (a service's own key).
    pub fn with_identity(control: &ControlUrls, identity: Identity) -> anyhow::Result<Api> {
        let mut api = Api::new(&ControlArgs {
            control: control.clone(),
            key: None,
        })?;
        api.fixed = Some(identity);
        Ok(api)
    }

    /// POST `body` as JSON, signed; decodes the JSON answer.
    pub async fn post_json<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body)?;
        self.signed(reqwest::Method::POST, path, body, "").await
    }

    fn identity(&self) -> anyhow::Result<Identity> {
        if let Some(fixed) = &self.fixed {
            return Ok(Identity::from_secret(&fixed.secret_bytes()));
        }
        let text = std::fs::read_to_string(&self.key).with_context(|| {
            format!(
                "cannot read your key {} (make one with `fog keygen`)",
                self.key.display()
            )
        })?;
        Identity::from_text(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("bad key file {}", self.key.display()))
    }

    /// GET `path` and decode its JSON.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let answer = self
            .control
            .try_each(|base| {
                let request = self.http.get(format!("{base}{path}"));
                self.unless_hung(base, Sent::answer(request))
            })
            .await;
        decode(path, answer)
    }

    /// A signed request with `body` and `meta`; decodes the JSON answer.
    pub async fn signed<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        meta: &str,
    ) -> anyhow::Result<T> {
        let identity = self.identity()?;
        let header = identity.sign(
            method.as_str(),
            path,
            auth::now_s(),
            &auth::sha256_hex(&body),
            meta,
        );
        let body = bytes::Bytes::from(body);
        let answer = self
            .control
            .try_each(|base| {
                let request = self
                    .http
                    .request(method.clone(), format!("{base}{path}"))
                    .header(AUTH_HEADER, &header)
                    .header(META_HEADER, meta)
                    .body(body.clone());
                self.unless_hung(base, Sent::answer(request))
            })
            .await;
        decode(path, answer)
    }

    /// `answer`, unless the control plane at `base` stops answering first: while it has not
    /// answered, it is asked for its `/plane` (no store read) every [`PROBE_EVERY`], and one
    /// left unanswered for [`PROBE_WITHIN`] gives it up as hung (a process stopped, a machine
    /// frozen: the connection accepted, nothing ever answered) so the next one is asked. A
    /// control plane slow on this request but alive keeps it, however long it takes.
    async fn unless_hung<T>(
        &self,
        base: String,
        answer: impl Future<Output = Result<T, Sent>>,
    ) -> Result<T, Sent> {
        let probe = format!("{base}{}/plane", fog_proto::api::PREFIX);
        let hung = async {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let alive = self.http.get(&probe).timeout(PROBE_WITHIN).send().await;
                if alive.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            answer = answer => answer,
            () = hung => Err(Sent::Hung { url: base }),
        }
    }
}

/// How often a control plane that has not answered yet is asked whether it is alive.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How long a control plane asked whether it is alive has to answer.
const PROBE_WITHIN: Duration = Duration::from_secs(10);

/// A request to one control plane that another may answer instead.
#[derive(Debug)]
enum Sent {
    /// No answer: the connection failed or timed out.
    Unreachable { url: String, source: reqwest::Error },
    /// The control plane answered 503 (it cannot reach its store, or is stopping).
    Unavailable(bytes::Bytes),
    /// The control plane accepted the request and then stopped answering anything.
    Hung { url: String },
}

impl Failover for Sent {
    fn fail_over(&self) -> bool {
        true
    }
}

impl Sent {
    /// Send `request`: the status and body, unless the answer is one to fail over on.
    async fn answer(
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), Sent> {
        let url = |e: &reqwest::Error| e.url().map(|u| u.to_string()).unwrap_or_default();
        let response = request.send().await.map_err(|source| Sent::Unreachable {
            url: url(&source),
            source,
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| Sent::Unreachable {
            url: url(&source),
            source,
        })?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(Sent::Unavailable(bytes));
        }
        Ok((status, bytes))
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    path: &str,
    answer: Result<(reqwest::StatusCode, bytes::Bytes), Sent>,
) -> anyhow::Result<T> {
    let (status, bytes) = match answer {
        Ok(answer) => answer,
        Err(Sent::Unavailable(bytes)) => (reqwest::StatusCode::SERVICE_UNAVAILABLE, bytes),
        Err(Sent::Unreachable { url, source }) => {
            return Err(anyhow::Error::new(source).context(format!("cannot reach {url} ({path})")));
        }
        Err(Sent::Hung { url }) => {
            bail!(
                "the control plane at {url} stopped answering ({path}): it accepted the request, \
                 then left its liveness check unanswered for {PROBE_WITHIN:?}"
            );
        }
    };
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => bail!("{} ({})", body.error, status.as_u16()),
            Err(_) => bail!(
                "control plane answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    serde_json::from_slice(&bytes).context("the control plane's answer is not the expected JSON")
}

/// Print `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
