//! Admission: which device and relay keys may be given work or listed, so nobody can fill the
//! fog with sybil devices or relays by running `fog host` or `fog relay` many times.
//!
//! A key is admitted either by registering with the fog's admission token (made by the first
//! `fog control` on a store, kept in the store's secrets table so every control plane sharing
//! it accepts the same one; `fog admit token` prints it), or by an operator holding the token
//! who admits the key itself (`fog admit KEY`). Admitted keys live in [`Table::Admitted`].
//! A device or relay that registers without the token is recorded but pending: placement never
//! sees it, and relay lists never name it. A wrong token is refused (403) before anything is
//! written.

use std::sync::Arc;

use bytes::Bytes;
use fog_proto::api::{self, AdmitRequest, Admitted, PendingKey};
use fog_proto::auth;
use serde::{Deserialize, Serialize};

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{DeviceRecord, Store, StoreError, Table, decode, encode};
use crate::{Control, now_ms};

/// The admission token's key in [`Table::Secrets`].
const TOKEN_KEY: &str = "admission-token";

/// Shortest admission token a control plane accepts from its operator, bytes: a token is a
/// password to the whole fog.
pub const MIN_TOKEN_LEN: usize = 16;

/// The default of [`crate::ControlConfig::max_pending_devices`].
pub const MAX_PENDING_DEVICES: usize = 1024;

/// How a key was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmittedBy {
    /// It registered with the admission token.
    Token,
    /// An operator admitted it by key (`fog admit KEY`).
    Operator,
}

/// One admitted key (in [`Table::Admitted`], by public key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionRecord {
    /// Unix ms it was admitted.
    pub admitted_ms: u64,
    /// How.
    pub by: AdmittedBy,
}

#[derive(Serialize, Deserialize)]
struct TokenRecord {
    token: String,
}

/// The fog's admission token in `store`, made (32 random bytes, hex) on first use. Control
/// planes starting at once on a shared store all end up with the first one written.
pub fn token(store: &dyn Store) -> Result<String, StoreError> {
    loop {
        let read = store.get_versioned(Table::Secrets, TOKEN_KEY)?;
        if let Some(bytes) = read.value {
            let record: TokenRecord = decode(Table::Secrets, TOKEN_KEY, &bytes)?;
            return Ok(record.token);
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Backend(e.to_string()))?;
        let token = hex::encode(secret);
        let record = encode(&TokenRecord {
            token: token.clone(),
        });
        match store.put_if(Table::Secrets, TOKEN_KEY, &record, &read.revision) {
            Ok(()) => {
                store.flush()?;
                return Ok(token);
            }
            // Another control plane made it first: use theirs.
            Err(StoreError::Conflict { .. }) => {}
            Err(err) => return Err(err),
        }
    }
}

/// Make `token` the fog's admission token (the operator chose it, or rotates it): tokens
/// given out before stop working; keys already admitted stay admitted.
pub fn set_token(store: &dyn Store, token: &str) -> Result<(), StoreError> {
    store.put(
        Table::Secrets,
        TOKEN_KEY,
        &encode(&TokenRecord {
            token: token.to_string(),
        }),
    )?;
    store.flush()
}

/// Check an operator-chosen token: long enough, printable, no spaces.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "an admission token must be at least {MIN_TOKEN_LEN} characters"
        ));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) || token.len() > 256 {
        return Err("an admission token is at most 256 printable ASCII characters".into());
    }
    Ok(())
}

impl Control {
    /// The fog's admission token (made on first use).
    pub fn admission_token(&self) -> Result<String, StoreError> {
        token(self.store.as_ref())
    }

    /// Refuse (403) a presented token that is not the fog's. Compared as SHA-256 digests, so
    /// the time the comparison takes says nothing about the token.
    pub(crate) fn check_admission_token(&self, presented: &str) -> Result<(), ApiError> {
        let token = self.admission_token()?;
        if auth::sha256_hex(presented.as_bytes()) == auth::sha256_hex(token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "wrong admission token: it is not this fog's (the operator prints it with \
                 `fog admit token` on the control plane); nothing was registered"
                    .into(),
            ))
        }
    }

    /// Whether `key` (hex) is admitted.
    pub(crate) fn is_admitted(&self, key: &str) -> Result<bool, StoreError> {
        self.device_index(|index| index.admitted.contains(key))
    }

    /// Every admitted key.
    pub(crate) fn admitted_keys(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        self.device_index(|index| index.admitted.clone())
    }

    /// Admit `key` (already admitted: left as it was).
    pub(crate) fn admit(&self, key: &str, by: AdmittedBy) -> Result<(), StoreError> {
        if self.is_admitted(key)? {
            return Ok(());
        }
        let record = AdmissionRecord {
            admitted_ms: now_ms(),
            by,
        };
        self.store.put(Table::Admitted, key, &encode(&record))?;
        self.store.flush()?;
        tracing::info!(key, ?by, "admitted");
        // Placement sees a new device; routers and visitors a new relay.
        self.changed.notify_one();
        self.bump();
        Ok(())
    }

    /// Withdraw `key`'s admission: its device leaves placement's fleet (its replicas are placed
    /// elsewhere) and routes; its relay leaves the lists.
    pub(crate) fn revoke(&self, key: &str) -> Result<(), StoreError> {
        self.store.delete(Table::Admitted, key)?;
        self.store.flush()?;
        tracing::info!(key, "admission revoked");
        self.changed.notify_one();
        self.bump();
        Ok(())
    }

    /// Registered devices that are admitted, in id order: the only ones placement is given.
    pub(crate) fn admitted_devices(&self) -> Result<std::sync::Arc<Vec<DeviceRecord>>, StoreError> {
        self.device_index(|index| index.admitted_devices())
    }

    /// Relays that registered recently and are admitted: the only ones routers and visitors
    /// build paths through.
    pub(crate) fn admitted_relays(&self) -> Result<Vec<api::RelayInfo>, StoreError> {
        let admitted = self.admitted_keys()?;
        Ok(self
            .registrations
            .relays_by_signer()
            .into_iter()
            .filter(|(signer, _)| admitted.contains(signer))
            .map(|(_, relay)| relay)
            .collect())
    }

    /// `POST /v1/admissions`: the operator (proved by the token) admits a key, or the key of a
    /// registered device named by its id, or revokes it.
    pub(crate) async fn admit_request<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (_, body, _) = self.signed(request, 64 << 10).await?;
        let wanted: AdmitRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed admission: {e}")))?;
        self.check_admission_token(&wanted.admission_token)?;
        let key = match self.store.get(Table::Devices, &wanted.key)? {
            Some(bytes) => decode::<DeviceRecord>(Table::Devices, &wanted.key, &bytes)?.public_key,
            None => wanted.key.clone(),
        };
        if key.len() != 64 || hex::decode(&key).is_err() {
            return Err(ApiError::BadRequest(format!(
                "{:?} is neither a public key (64 hex digits) nor a registered device's id",
                wanted.key
            )));
        }
        if wanted.revoke {
            self.revoke(&key)?;
        } else {
            self.admit(&key, AdmittedBy::Operator)?;
        }
        Ok(json(
            200,
            &Admitted {
                device_id: auth::device_id(&key),
                key,
                admitted: !wanted.revoke,
            },
        ))
    }

    /// `GET /v1/pending`: devices and recently registered relays whose keys are not admitted.
    pub(crate) fn pending(&self) -> Result<Vec<PendingKey>, StoreError> {
        let admitted = self.admitted_keys()?;
        let mut out: Vec<PendingKey> = self
            .devices()?
            .into_iter()
            .filter(|d| !admitted.contains(&d.public_key))
            .map(|d| PendingKey {
                kind: "device".into(),
                key: d.public_key,
                name: d.id,
                region: d.region,
            })
            .collect();
        out.extend(
            self.registrations
                .relays_by_signer()
                .into_iter()
                .filter(|(signer, _)| !admitted.contains(signer))
                .map(|(signer, relay)| PendingKey {
                    kind: "relay".into(),
                    key: signer,
                    name: relay.addr,
                    region: String::new(),
                }),
        );
        Ok(out)
    }
}
