//! Betanet names, fronts and relays in the control plane.
//!
//! Every app has an ed25519 key derived from the control plane's master secret, the owner's key
//! and the app's name: `HKDF-SHA256(ikm = master, salt = "fog-app-key-v1", info = owner ‖ 0 ‖
//! name)`. Its self-certifying names (`betanet://<hex sha256(pk)>`, `bn1:…`) are therefore stable
//! across restarts and republishes by the same owner, and a different owner publishing the same
//! name after a removal gets a different address. The secret never leaves the control plane: it
//! signs short-lived [`NameDescriptor`]s listing the fronts (routers) that serve the app, and a
//! visitor checks the descriptor against the name alone.
//!
//! Fronts may only be registered by routers the control plane trusts; relays are open to anyone
//! (they only ever carry ciphertext). Both expire unless they register again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fog_htx::names::onion_address;
use fog_proto::api::{
    AttachInfo, AttachPoint, FrontInfo, NameDescriptor, REGISTRATION_TTL_MS, RelayInfo,
};
use fog_proto::auth::Identity;
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, Table, decode, encode};

/// How long a descriptor is valid.
pub const DESCRIPTOR_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Serialize, Deserialize)]
struct MasterRecord {
    secret: Vec<u8>,
}

/// Load the master secret, creating it on first use. Control planes sharing a registry may start
/// at once: only the first creation is written, and every one of them uses that one.
pub fn master_secret(store: &dyn Store) -> Result<[u8; 32], StoreError> {
    const KEY: &str = "app-keys-master";
    loop {
        let read = store.get_versioned(Table::Secrets, KEY)?;
        if let Some(bytes) = read.value {
            let record: MasterRecord = decode(Table::Secrets, KEY, &bytes)?;
            return record.secret.try_into().map_err(|_| StoreError::Decode {
                table: "secrets",
                key: KEY.into(),
                reason: "master secret is not 32 bytes".into(),
            });
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Backend(e.to_string()))?;
        let record = encode(&MasterRecord {
            secret: secret.to_vec(),
        });
        match store.put_if(Table::Secrets, KEY, &record, &read.revision) {
            Ok(()) => {
                store.flush()?;
                return Ok(secret);
            }
            // Another control plane created it first: read theirs.
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
}

/// The app's key.
pub fn app_identity(master: &[u8; 32], owner: &str, name: &str) -> Identity {
    let mut info = owner.as_bytes().to_vec();
    info.push(0);
    info.extend_from_slice(name.as_bytes());
    let mut secret = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"fog-app-key-v1"), master)
        .expand(&info, &mut secret)
        .expect("32 bytes is a valid HKDF output");
    Identity::from_secret(&secret)
}

/// The app's Betanet id: hex sha256 of its public key.
pub fn betanet_id(identity: &Identity) -> String {
    hex::encode(Sha256::digest(identity.public_bytes()))
}

/// Both names of the app.
pub fn names(identity: &Identity) -> Vec<String> {
    let public = identity.public_bytes();
    vec![
        fog_htx::names::betanet_url(&public),
        fog_htx::names::bn1(&public),
    ]
}

/// The app's onion-service identity: an ed25519 key from the same master secret, under another
/// label, so the app's `.onion` address is stable too.
pub fn onion_identity(master: &[u8; 32], owner: &str, name: &str) -> Identity {
    let mut info = owner.as_bytes().to_vec();
    info.push(0);
    info.extend_from_slice(name.as_bytes());
    let mut secret = [0u8; 32];
    Hkdf::<Sha256>::new(Some(b"fog-onion-key-v1"), master)
        .expand(&info, &mut secret)
        .expect("32 bytes is a valid HKDF output");
    Identity::from_secret(&secret)
}

/// What everyone may know of an app's keys: its Betanet key, names and `.onion` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicNames {
    /// The app's ed25519 public key (Betanet).
    pub app_key: [u8; 32],
    /// Hex sha256 of `app_key`: what `betanet://` names.
    pub betanet_id: String,
    /// `betanet://…` and `bn1:…`.
    pub names: Vec<String>,
    /// The `.onion` address.
    pub onion: String,
}

impl PublicNames {
    /// Derive them (two key derivations: worth caching).
    pub fn derive(master: &[u8; 32], owner: &str, name: &str) -> PublicNames {
        let identity = app_identity(master, owner, name);
        PublicNames {
            app_key: identity.public_bytes(),
            betanet_id: betanet_id(&identity),
            names: names(&identity),
            onion: onion_address(&onion_identity(master, owner, name).public_bytes()),
        }
    }
}

/// A signed descriptor for `app` served by `fronts`.
pub fn descriptor(
    identity: &Identity,
    app: &str,
    fronts: Vec<FrontInfo>,
    now_s: u64,
) -> NameDescriptor {
    let mut descriptor = NameDescriptor {
        app: app.to_string(),
        app_key: identity.public_hex(),
        fronts,
        expires_s: now_s + DESCRIPTOR_LIFETIME.as_secs(),
        signature: String::new(),
    };
    descriptor.signature = identity.sign_bytes(&descriptor.signed_bytes());
    descriptor
}

/// Registered fronts (by router key) and relays (by relay key), with when they registered.
#[derive(Debug, Default)]
pub struct Registrations {
    fronts: Mutex<HashMap<String, (FrontInfo, Instant)>>,
    relays: Mutex<HashMap<String, (RelayInfo, Instant)>>,
    /// Routers' attach endpoints, by router id.
    attach: Mutex<HashMap<String, (AttachPoint, Instant)>>,
}

/// Every registration one control plane holds, with when each was made (Unix ms): what it
/// announces to the other control planes, so a router or relay registered with one is known
/// to all (see `crate::planes`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SharedRegistrations {
    fronts: Vec<(String, FrontInfo, u64)>,
    relays: Vec<(String, RelayInfo, u64)>,
    attach: Vec<(String, AttachPoint, u64)>,
}

/// Entries of `table` registered within the TTL, with their Unix ms.
fn export<T: Clone>(
    table: &Mutex<HashMap<String, (T, Instant)>>,
    now_ms: u64,
) -> Vec<(String, T, u64)> {
    let ttl = Duration::from_millis(REGISTRATION_TTL_MS);
    table
        .lock()
        .expect("registrations lock")
        .iter()
        .filter(|(_, (_, at))| at.elapsed() < ttl)
        .map(|(k, (v, at))| {
            (
                k.clone(),
                v.clone(),
                now_ms.saturating_sub(at.elapsed().as_millis() as u64),
            )
        })
        .collect()
}

/// Take each entry of `from` registered later than ours (keeping when it was made, so an
/// entry passed on never looks fresher than it is); true if one was new or changed.
fn import<T: Clone + PartialEq>(
    table: &Mutex<HashMap<String, (T, Instant)>>,
    from: Vec<(String, T, u64)>,
    now_ms: u64,
) -> bool {
    let mut table = table.lock().expect("registrations lock");
    let mut changed = false;
    for (key, value, at_ms) in from {
        let Some(at) =
            Instant::now().checked_sub(Duration::from_millis(now_ms.saturating_sub(at_ms)))
        else {
            continue;
        };
        match table.get(&key) {
            Some((_, ours)) if *ours >= at => {}
            previous => {
                changed |= previous.is_none_or(|(old, _)| *old != value);
                table.insert(key, (value, at));
            }
        }
    }
    changed
}

impl Registrations {
    /// What this control plane announces of its registrations.
    pub(crate) fn export(&self, now_ms: u64) -> SharedRegistrations {
        SharedRegistrations {
            fronts: export(&self.fronts, now_ms),
            relays: export(&self.relays, now_ms),
            attach: export(&self.attach, now_ms),
        }
    }

    /// Take in another control plane's registrations; true if an attach endpoint is new or
    /// moved (hosts must be told).
    pub(crate) fn import(&self, shared: SharedRegistrations, now_ms: u64) -> bool {
        import(&self.fronts, shared.fronts, now_ms);
        import(&self.relays, shared.relays, now_ms);
        import(&self.attach, shared.attach, now_ms)
    }
}

fn fresh<T: Clone>(table: &Mutex<HashMap<String, (T, Instant)>>) -> Vec<T> {
    fresh_by_key(table).into_iter().map(|(_, v)| v).collect()
}

/// The registrations that are still fresh, with their keys, in key order.
fn fresh_by_key<T: Clone>(table: &Mutex<HashMap<String, (T, Instant)>>) -> Vec<(String, T)> {
    let ttl = Duration::from_millis(REGISTRATION_TTL_MS);
    let mut table = table.lock().expect("registrations lock");
    table.retain(|_, (_, at)| at.elapsed() < ttl);
    let mut fresh: Vec<(String, T)> = table
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    fresh.sort_by(|a, b| a.0.cmp(&b.0));
    fresh
}

fn check_key(hex_key: &str, what: &str) -> Result<(), String> {
    match hex::decode(hex_key) {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(format!("{what} must be 32 bytes of hex")),
    }
}

impl Registrations {
    /// Register (or refresh) `router`'s front.
    pub fn register_front(&self, router: &str, front: FrontInfo) -> Result<(), String> {
        check_key(&front.key, "key")?;
        check_key(&front.ticket_key, "ticket_key")?;
        check_addr(&front.addr)?;
        self.fronts
            .lock()
            .expect("registrations lock")
            .insert(router.to_string(), (front, Instant::now()));
        Ok(())
    }

    /// Register (or refresh) a relay, keyed by its signer.
    pub fn register_relay(&self, signer: &str, relay: RelayInfo) -> Result<(), String> {
        check_key(&relay.key, "key")?;
        check_addr(&relay.addr)?;
        self.relays
            .lock()
            .expect("registrations lock")
            .insert(signer.to_string(), (relay, Instant::now()));
        Ok(())
    }

    /// Register (or refresh) the attach endpoint of the router with key `router`; true if
    /// hosts must be told (a new router, or one that moved).
    pub fn register_attach(&self, router: &str, info: AttachInfo) -> Result<bool, String> {
        check_key(&info.key, "key")?;
        check_addr(&info.addr)?;
        let point = AttachPoint {
            router: fog_proto::auth::device_id(router),
            addr: info.addr,
            key: info.key,
        };
        let ttl = Duration::from_millis(REGISTRATION_TTL_MS);
        let mut table = self.attach.lock().expect("registrations lock");
        let changed = table
            .get(&point.router)
            .is_none_or(|(old, at)| *old != point || at.elapsed() >= ttl);
        table.insert(point.router.clone(), (point, Instant::now()));
        Ok(changed)
    }

    /// Attach endpoints that registered recently, by router id.
    pub fn attach_points(&self) -> Vec<AttachPoint> {
        fresh(&self.attach)
    }

    /// Fronts that registered recently.
    pub fn fronts(&self) -> Vec<FrontInfo> {
        fresh(&self.fronts)
    }

    /// Relays that registered recently, admitted or not (lists given out are filtered by
    /// admission: see [`Registrations::relays_by_signer`]).
    pub fn relays(&self) -> Vec<RelayInfo> {
        fresh(&self.relays)
    }

    /// Relays that registered recently, with the key each signed with (the key admission is
    /// decided on).
    pub fn relays_by_signer(&self) -> Vec<(String, RelayInfo)> {
        fresh_by_key(&self.relays)
    }
}

fn check_addr(addr: &str) -> Result<(), String> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("address {addr:?} is not host:port with an IP"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn app_keys_are_stable_per_owner_and_name_and_descriptors_verify() {
        let store = SledStore::temporary().unwrap();
        let master = master_secret(&store).unwrap();
        assert_eq!(master_secret(&store).unwrap(), master, "created once");
        let a = app_identity(&master, "owner1", "hello");
        assert_eq!(
            a.public_hex(),
            app_identity(&master, "owner1", "hello").public_hex()
        );
        assert_ne!(
            a.public_hex(),
            app_identity(&master, "owner2", "hello").public_hex()
        );
        assert_ne!(
            a.public_hex(),
            app_identity(&master, "owner1", "hello2").public_hex()
        );
        let names = names(&a);
        assert!(names[0].ends_with(&betanet_id(&a)));
        assert!(fog_htx::names::names_key(&names[1], &a.public_bytes()));

        let front = FrontInfo {
            addr: "127.0.0.1:7443".into(),
            key: hex::encode([1u8; 32]),
            ticket_key: hex::encode([2u8; 32]),
            tls: false,
        };
        let signed = descriptor(&a, "hello", vec![front], 1000);
        assert_eq!(signed.verify(1000), Ok(()));
        assert!(signed.verify(1000 + 601).unwrap_err().contains("expired"));
        let mut forged = signed.clone();
        forged.fronts[0].addr = "10.0.0.1:7443".into();
        assert!(
            forged.verify(1000).is_err(),
            "a changed front breaks the signature"
        );
    }

    #[test]
    fn onion_addresses_follow_the_v3_format() {
        // (The router's tests check these addresses against arti's own.)
        let address = onion_address(&[0x42; 32]);
        assert_eq!(address.len(), 56 + ".onion".len());
        assert!(
            address.ends_with("d.onion"),
            "version 3 ends in 'd': {address}"
        );
        let master = [9u8; 32];
        let a = onion_identity(&master, "owner", "hello");
        assert_eq!(
            a.public_hex(),
            onion_identity(&master, "owner", "hello").public_hex()
        );
        assert_ne!(
            a.public_hex(),
            app_identity(&master, "owner", "hello").public_hex()
        );
    }

    #[test]
    fn registrations_check_their_fields() {
        let registrations = Registrations::default();
        let relay = RelayInfo {
            addr: "127.0.0.1:7600".into(),
            key: hex::encode([3u8; 32]),
        };
        registrations.register_relay("r1", relay.clone()).unwrap();
        registrations.register_relay("r1", relay.clone()).unwrap();
        assert_eq!(registrations.relays(), vec![relay]);
        let bad = RelayInfo {
            addr: "nowhere".into(),
            key: hex::encode([3u8; 32]),
        };
        assert!(registrations.register_relay("r2", bad).is_err());
        let bad_key = RelayInfo {
            addr: "127.0.0.1:1".into(),
            key: "00".into(),
        };
        assert!(registrations.register_relay("r2", bad_key).is_err());
        assert!(registrations.fronts().is_empty());
    }
}
