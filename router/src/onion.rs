//! The onion front: one arti onion service per app whose onion lease this router holds, each
//! serving HTTP/1.1 on port 80 through the gateway (the same routing, retries and errors as the
//! plain front).
//!
//! Leases: the control plane decides which one router publishes each app's service (see
//! `fog_control::onion`). Every [`LEASE_RENEW`] (and whenever an app is published or removed)
//! the router asks for its leases (`POST /v1/onion-leases`, signed with the router's key); the
//! answer renews what it holds, may grant it more, and carries the keys of exactly those apps.
//! A service runs only while its lease does: it is stopped when the answer no longer lists the
//! app, and when the lease's time runs out unrenewed (counted from when the request was sent,
//! so the router stops no later than the control plane's record says the lease ends, whatever
//! the clocks) — a router cut off from every control plane stops publishing rather than risk
//! publishing beside the router that took over.
//!
//! Keys: the control plane derives each app's onion key from its master secret, the owner and
//! the name (so an app keeps its `.onion` address across publishes, routers and restarts). The
//! router gives each key to arti for that service only, in a keystore that lives in a fresh
//! directory per run: nothing stale survives a restart, and nothing is lost either, since the
//! key comes from the control plane again. Developers never hold onion keys; a router holds
//! only those of the apps it publishes (and, until it restarts, of apps it published before).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arti_client::config::onion_service::OnionServiceConfigBuilder;
use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{TorClient, TorClientConfig};
use fog_proto::api::OnionLease;
use fog_proto::auth::Identity;
use futures::StreamExt;
use safelog::DisplayRedacted;
use tor_cell::relaycell::msg::{Connected, End};
use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};
use tor_hsservice::{HsNickname, RunningOnionService, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;
use tor_rtcompat::PreferredRuntime;

use crate::Gateway;
use crate::error::OnionError;

/// How often the router asks for its onion leases, renewing those it holds: a few times per
/// lease (the control plane's default lease is 10 s), so one lost answer costs nothing.
pub const LEASE_RENEW: Duration = Duration::from_secs(3);

/// Where the onion front's arti keeps its files, and which network it joins.
#[derive(Debug, Clone)]
pub struct OnionConfig {
    /// The network part of an arti configuration (TOML; e.g. `fog testnet`'s `arti.toml`).
    /// `None`: the public Tor network with arti's defaults.
    pub network: Option<PathBuf>,
    /// arti's cache (directory documents), kept between runs.
    pub cache_dir: PathBuf,
    /// arti's state and keystore; made fresh each run.
    pub state_dir: PathBuf,
}

/// An arti client configuration: the network from `network` (or the public network), storage in
/// the given directories.
pub fn client_config(
    network: Option<&std::path::Path>,
    cache_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<TorClientConfig, OnionError> {
    let mut builder: TorClientConfigBuilder = match network {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| OnionError::ReadNetwork {
                path: path.to_path_buf(),
                source,
            })?;
            toml::from_str(&text).map_err(|e| OnionError::Config {
                path: Some(path.to_path_buf()),
                reason: e.to_string(),
            })?
        }
        None => TorClientConfigBuilder::default(),
    };
    builder
        .storage()
        .cache_dir(CfgPath::new_literal(cache_dir))
        .state_dir(CfgPath::new_literal(state_dir));
    builder.build().map_err(|e| OnionError::Config {
        path: None,
        reason: e.to_string(),
    })
}

/// Create `dir` readable by its owner only, as arti requires of its state and cache.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The `.onion` address of a 32-byte ed25519 seed, as arti computes it.
pub fn address_of(secret: &[u8; 32]) -> String {
    let keypair = keypair(secret);
    let public = HsIdKey::from(&keypair);
    format!(
        "{}",
        tor_hscrypto::pk::HsId::from(public).display_unredacted()
    )
}

fn keypair(secret: &[u8; 32]) -> HsIdKeypair {
    let signing = tor_llcrypto::pk::ed25519::Keypair::from_bytes(secret);
    HsIdKeypair::from(tor_llcrypto::pk::ed25519::ExpandedKeypair::from(&signing))
}

/// One app's running service.
struct Service {
    address: String,
    _service: Arc<RunningOnionService>,
    task: tokio::task::JoinHandle<()>,
    /// When its lease runs out unless renewed.
    deadline: Instant,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run the onion front until `shutdown` resolves: bootstrap arti, then keep one onion service
/// per app whose lease this router holds, stopping each when its lease is lost or runs out.
pub async fn run(
    gateway: Arc<Gateway>,
    identity: Identity,
    config: OnionConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let _ = std::fs::remove_dir_all(&config.state_dir);
    for dir in [&config.cache_dir, &config.state_dir] {
        if let Err(err) = private_dir(dir) {
            tracing::error!("onion front: cannot create {}: {err}", dir.display());
            return;
        }
    }
    let tor_config = match client_config(
        config.network.as_deref(),
        &config.cache_dir,
        &config.state_dir,
    ) {
        Ok(tor_config) => tor_config,
        Err(err) => {
            tracing::error!("onion front disabled: {err}");
            return;
        }
    };
    let client = loop {
        let bootstrap = TorClient::create_bootstrapped(tor_config.clone());
        tokio::select! {
            () = &mut shutdown => return,
            client = bootstrap => match client {
                Ok(client) => break client,
                Err(err) => {
                    tracing::warn!("onion front: cannot bootstrap Tor yet: {err}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            },
        }
    };
    tracing::info!("onion front: connected to the Tor network");
    let mut services: HashMap<String, Service> = HashMap::new();
    let mut warned = false;
    let mut apps_changed = gateway.apps_changed();
    loop {
        apps_changed.borrow_and_update();
        let sent = Instant::now();
        let call = gateway.post_json::<Vec<OnionLease>>("/v1/onion-leases", &identity);
        tokio::pin!(call);
        // A slow answer must not keep a service running past its lease.
        let answer = loop {
            tokio::select! {
                () = &mut shutdown => return,
                answer = &mut call => break answer,
                () = tokio::time::sleep_until(earliest(&services)) => expire(&mut services),
            }
        };
        match answer {
            Ok(leases) => {
                warned = false;
                reconcile(&client, &gateway, &mut services, leases, sent);
            }
            Err(err) => {
                if !warned {
                    tracing::warn!("onion front: cannot renew onion leases: {err}");
                }
                warned = true;
            }
        }
        let next = tokio::time::Instant::now() + LEASE_RENEW;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = apps_changed.changed() => break,
                () = tokio::time::sleep_until(next) => break,
                () = tokio::time::sleep_until(earliest(&services)) => expire(&mut services),
            }
        }
    }
}

/// The earliest lease deadline among `services` (an hour away if none).
fn earliest(services: &HashMap<String, Service>) -> tokio::time::Instant {
    let earliest = services
        .values()
        .map(|s| s.deadline)
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
    tokio::time::Instant::from_std(earliest)
}

/// Stop every service whose lease ran out unrenewed.
fn expire(services: &mut HashMap<String, Service>) {
    let now = Instant::now();
    services.retain(|app, service| {
        let keep = service.deadline > now;
        if !keep {
            tracing::warn!(
                app,
                address = service.address,
                "onion lease ran out unrenewed: service stopped"
            );
        }
        keep
    });
}

/// Run exactly the services of `leases` (granted to a request sent at `sent`).
fn reconcile(
    client: &Arc<TorClient<PreferredRuntime>>,
    gateway: &Arc<Gateway>,
    services: &mut HashMap<String, Service>,
    leases: Vec<OnionLease>,
    sent: Instant,
) {
    let wanted: HashMap<&str, &OnionLease> = leases.iter().map(|k| (k.app.as_str(), k)).collect();
    services.retain(|app, service| {
        let keep = wanted
            .get(app.as_str())
            .is_some_and(|k| k.address == service.address);
        if !keep {
            tracing::info!(app, address = service.address, "onion service withdrawn");
        }
        keep
    });
    for (app, lease) in wanted {
        let deadline = sent + Duration::from_millis(lease.ttl_ms);
        if deadline <= Instant::now() {
            continue;
        }
        if let Some(service) = services.get_mut(app) {
            service.deadline = deadline;
            continue;
        }
        match launch(client, gateway, lease, deadline) {
            Ok(service) => {
                tracing::info!(
                    app,
                    address = service.address,
                    "onion lease held: service started"
                );
                services.insert(app.to_string(), service);
            }
            Err(err) => tracing::warn!(app, "cannot start the onion service: {err}"),
        }
    }
    expire(services);
}

fn launch(
    client: &Arc<TorClient<PreferredRuntime>>,
    gateway: &Arc<Gateway>,
    key: &OnionLease,
    deadline: Instant,
) -> Result<Service, OnionError> {
    let secret: [u8; 32] = hex::decode(&key.secret)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| OnionError::BadKey {
            app: key.app.clone(),
        })?;
    let address = address_of(&secret);
    if address != key.address {
        return Err(OnionError::AddressMismatch {
            claimed: key.address.clone(),
            actual: address,
        });
    }
    let launch_error = |reason: String| OnionError::Launch {
        app: key.app.clone(),
        reason,
    };
    let nickname: HsNickname = format!("fog-{}", key.app)
        .parse()
        .map_err(|e| launch_error(format!("nickname: {e}")))?;
    let service_config = OnionServiceConfigBuilder::default()
        .nickname(nickname)
        .build()
        .map_err(|e| launch_error(e.to_string()))?;
    let (service, requests) = client
        .launch_onion_service_with_hsid(service_config, keypair(&secret))
        .map_err(|e| launch_error(e.to_string()))?
        .ok_or_else(|| launch_error("the onion service is disabled in the configuration".into()))?;
    let (gateway, app) = (gateway.clone(), key.app.clone());
    let status = service.status_events();
    let watched = (app.clone(), address.clone());
    let task = tokio::spawn(async move {
        let watcher = async move {
            let (app, address) = watched;
            let mut status = status;
            let mut reachable = false;
            while let Some(event) = status.next().await {
                if event.state().is_fully_reachable() && !reachable {
                    reachable = true;
                    tracing::info!(app, address, "onion service reachable");
                }
            }
        };
        let serve = async move {
            let mut streams = std::pin::pin!(tor_hsservice::handle_rend_requests(requests));
            while let Some(request) = streams.next().await {
                tokio::spawn(serve_stream(gateway.clone(), app.clone(), request));
            }
        };
        tokio::join!(watcher, serve);
    });
    Ok(Service {
        address,
        _service: service,
        task,
        deadline,
    })
}

/// Port 80 gets HTTP/1.1 through the gateway; anything else is refused as every onion service
/// refuses it (END, reason DONE).
async fn serve_stream(gateway: Arc<Gateway>, app: String, request: StreamRequest) {
    let port = match request.request() {
        IncomingStreamRequest::Begin(begin) => begin.port(),
        _ => 0,
    };
    if port != 80 {
        let _ = request
            .reject(End::new_with_reason(
                tor_cell::relaycell::msg::EndReason::DONE,
            ))
            .await;
        return;
    }
    match request.accept(Connected::new_empty()).await {
        // Onion visitors have no address to limit by.
        Ok(stream) => gateway.serve_app(stream, app, None).await,
        Err(err) => tracing::debug!(app, "onion stream not accepted: {err}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_control_planes_onion_addresses_are_artis() {
        for seed in [[7u8; 32], [0u8; 32], [0xff; 32]] {
            let address = super::address_of(&seed);
            assert_eq!(address.len(), 62, "{address}");
            let public = fog_proto::auth::Identity::from_secret(&seed).public_bytes();
            assert_eq!(fog_htx::names::onion_address(&public), address);
        }
    }
}
