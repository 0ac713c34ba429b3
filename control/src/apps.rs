//! Apps: publish (with component validation), scale, wake, move, remove, and the tier-B
//! snapshots their primaries upload.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fog_proto::api::{self, PublishMeta, ScaleRequest};
use fog_proto::auth;

use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{AppRecord, AppSettings, AppTerms, StoreError, Table, decode, encode};
use crate::{Control, MAX_SNAPSHOT_BYTES, now_ms};

/// Check that `bytes` is a component exporting `wasi:http/incoming-handler@0.2.*`, with
/// wasmparser's validator (the control plane never runs wasmtime).
pub fn check_component(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly binary (no \\0asm header)".into());
    }
    if bytes[6..8] == [0, 0] {
        return Err("a core WebAssembly module, not a component: build for wasm32-wasip2".into());
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator
        .validate_all(bytes)
        .map_err(|e| format!("not a valid component: {e}"))?;
    let mut depth = 0i32;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid component: {e}"))? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| format!("not a valid component: {e}"))?;
                    if export.name.0.starts_with("wasi:http/incoming-handler@0.2.") {
                        return Ok(());
                    }
                }
            }
            _ => {}
        }
    }
    Err(
        "the component does not export wasi:http/incoming-handler@0.2: it is not an HTTP app"
            .into(),
    )
}

/// How often a read-modify-write of one app record is retried when other writers keep changing
/// it between the read and the write.
const UPDATE_ATTEMPTS: usize = 16;

/// `record` if `signer` owns it.
pub(crate) fn owned(
    name: &str,
    record: Option<AppRecord>,
    signer: &str,
) -> Result<AppRecord, ApiError> {
    match record {
        None => Err(ApiError::NotFound(format!("no app named {name:?}"))),
        Some(record) if record.owner != signer => Err(ApiError::Forbidden(format!(
            "app {name:?} belongs to another key"
        ))),
        Some(record) => Ok(record),
    }
}

impl Control {
    /// Read-modify-write of the app record `name`, safe against other control planes writing it
    /// meanwhile: `change` gets the current record (or `None`) and returns the one to write
    /// (`None`: write nothing); the write only happens if the record is still what `change`
    /// saw, else `change` runs again on the new record. Returns the record as it now stands.
    pub(crate) fn update_app(
        &self,
        name: &str,
        change: impl FnMut(Option<AppRecord>) -> Result<Option<AppRecord>, ApiError>,
    ) -> Result<AppRecord, ApiError> {
        self.update_record(Table::Apps, name, "app record", change)?
            .ok_or_else(|| ApiError::NotFound(format!("no app named {name:?}")))
    }

    /// Compare-and-swap read-modify-write of the record `name` in `table` (what [`update_app`]
    /// and the config's settings use): `change` gets the current record (or `None`) and returns
    /// the one to write (`None`: write nothing); on a conflict it runs again on the new record.
    /// Returns the record as it now stands. `what` names the record in the 503 when it kept
    /// changing.
    ///
    /// [`update_app`]: Control::update_app
    pub(crate) fn update_record<T>(
        &self,
        table: Table,
        name: &str,
        what: &str,
        mut change: impl FnMut(Option<T>) -> Result<Option<T>, ApiError>,
    ) -> Result<Option<T>, ApiError>
    where
        T: Clone + serde::Serialize + serde::de::DeserializeOwned,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let read = self.store.get_versioned(table, name)?;
            let current = match &read.value {
                Some(bytes) => Some(decode::<T>(table, name, bytes)?),
                None => None,
            };
            let Some(record) = change(current.clone())? else {
                return Ok(current);
            };
            match self
                .store
                .put_if(table, name, &encode(&record), &read.revision)
            {
                Ok(()) => return Ok(Some(record)),
                Err(StoreError::Conflict { .. }) => {
                    tracing::debug!(app = name, what, "record changed under us: again");
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "{what} {name:?} kept changing under {UPDATE_ATTEMPTS} attempts to update it: retry"
        )))
    }

    /// `POST /v1/apps/{name}/move`: the owner asks for the primary to move to a device.
    pub(crate) async fn request_move<B>(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        let wanted: api::MoveRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        let record = self.owned_app(name, &signer)?;
        let live = self
            .live
            .lock()
            .expect("live lock")
            .get(&wanted.to)
            .map(|l| (self.is_alive(l), l.heartbeat.harvestable));
        match live {
            None => return Err(ApiError::NotFound(format!("no live device {}", wanted.to))),
            Some((false, _)) => {
                return Err(ApiError::Conflict(format!(
                    "device {} is not alive",
                    wanted.to
                )));
            }
            Some((true, false)) => {
                return Err(ApiError::Conflict(format!(
                    "device {} may not be harvested now",
                    wanted.to
                )));
            }
            Some((true, true)) => {}
        }
        let primary = self
            .placement_of(name)?
            .and_then(|p| p.devices.first().cloned());
        if primary.as_deref() == Some(wanted.to.as_str()) {
            return Err(ApiError::Conflict(format!(
                "{name:?} already has its primary on {}",
                wanted.to
            )));
        }
        // The store, not this control plane's memory: the leader may be another.
        if self.stored_handover(name)?.is_some() {
            return Err(ApiError::Conflict(format!("{name:?} is already moving")));
        }
        self.store.put(Table::Moves, name, wanted.to.as_bytes())?;
        self.changed.notify_one();
        Ok(json(202, &self.app_info(&record)?))
    }

    /// `POST /v1/apps/{name}/snapshot`: the app's primary uploads a snapshot (tier B).
    pub(crate) async fn store_snapshot<B>(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = std::time::Instant::now();
        let (signer, body, _) = self.signed(request, MAX_SNAPSHOT_BYTES).await?;
        let device = self.signing_device(&signer)?;
        // The whole body has arrived: a sample of the device's throughput.
        self.record_transfer(&device, body.len() as u64, started.elapsed());
        self.app(name)?;
        let primary = self
            .placement_of(name)?
            .and_then(|p| p.devices.first().cloned());
        if primary.as_deref() != Some(device.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "device {device} is not the primary of {name:?}"
            )));
        }
        self.store.put(Table::Snapshots, name, &body)?;
        Ok(json(200, &serde_json::json!({ "stored": body.len() })))
    }

    /// `POST /v1/apps/{name}/snapshot/latest`: a device the app is assigned to fetches the
    /// latest snapshot.
    pub(crate) async fn latest_snapshot<B>(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        let device = self.signing_device(&signer)?;
        let assigned = self
            .placement_of(name)?
            .is_some_and(|p| p.devices.contains(&device));
        if !assigned {
            return Err(ApiError::Forbidden(format!(
                "device {device} does not run {name:?}"
            )));
        }
        match self.store.get(Table::Snapshots, name)? {
            Some(bytes) => {
                Ok(self.timed_download(device, "application/octet-stream", bytes.into()))
            }
            None => Err(ApiError::NotFound(format!("no snapshot of {name:?} yet"))),
        }
    }

    pub(crate) async fn publish<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, meta) = self.signed(request, api::MAX_COMPONENT_BYTES).await?;
        let meta: PublishMeta = serde_json::from_str(&meta)
            .map_err(|e| ApiError::BadRequest(format!("malformed x-fog-meta JSON: {e}")))?;
        meta.validate().map_err(ApiError::BadRequest)?;
        if meta.name == fog_proto::canary::APP {
            return Err(ApiError::BadRequest(format!(
                "the name {:?} is reserved for Fog's spot checks",
                meta.name
            )));
        }
        // Checked (and secrets sealed) before anything is written.
        let settings = self.published_settings(&meta)?;
        let component = body.clone();
        tokio::task::spawn_blocking(move || check_component(&component))
            .await
            .map_err(|e| ApiError::Internal(format!("validation failed: {e}")))?
            .map_err(ApiError::BadRequest)?;
        let sha256 = auth::sha256_hex(&body);
        let taken = |existing: &Option<AppRecord>| match existing {
            Some(existing) if existing.owner != signer => Err(ApiError::Conflict(format!(
                "the name {:?} is taken by another key",
                meta.name
            ))),
            _ => Ok(()),
        };
        // Checked before the component is stored, so a refused publish leaves nothing.
        taken(&match self.store.get(Table::Apps, &meta.name)? {
            Some(bytes) => Some(decode::<AppRecord>(Table::Apps, &meta.name, &bytes)?),
            None => None,
        })?;
        self.store.put(Table::Blobs, &sha256, &body)?;
        // On a second control plane before the publish is acknowledged (when there is one).
        self.replicate_blob(&sha256).await?;
        if let Some(bundle) = &meta.bundle {
            // Uploaded through another control plane: pulled here before it is linked.
            self.blob(bundle).await?;
        }
        let info = {
            let _guard = self.writes.lock().expect("writes lock");
            self.link_site(&meta.name, meta.bundle.as_deref())?;
            // Written before the app record, so placement never sees the app without its terms.
            let terms = AppTerms {
                max_price: meta.max_price,
                bid: meta.bid.unwrap_or_default(),
            };
            self.store.put(Table::Terms, &meta.name, &encode(&terms))?;
            self.store
                .put(Table::Settings, &meta.name, &encode(&settings))?;
            let record = self.update_app(&meta.name, |existing| {
                // Again: another control plane may have taken the name since.
                taken(&existing)?;
                Ok(Some(AppRecord {
                    name: meta.name.clone(),
                    owner: signer.clone(),
                    version: existing.as_ref().map_or(1, |e| e.version + 1),
                    sha256: sha256.clone(),
                    size: body.len() as u64,
                    tier: meta.tier,
                    replicas: meta.replicas.unwrap_or_else(|| meta.tier.replicas()),
                    limits: meta.limits,
                    updated_ms: now_ms(),
                }))
            })?;
            self.store.flush()?;
            tracing::info!(
                app = record.name,
                version = record.version,
                sha256 = record.sha256,
                "published"
            );
            record
        };
        self.changed.notify_one();
        Ok(json(201, &self.app_info(&info)?))
    }

    /// What a publish makes of the app's settings: its outbound origins replaced, the
    /// variables and secrets it names set (sealed), the others the app had kept. Written before
    /// the app record, so no host ever runs a version without them.
    fn published_settings(&self, meta: &PublishMeta) -> Result<AppSettings, ApiError> {
        let mut settings = self.settings(&meta.name)?;
        settings.allow_outbound = meta.allow_outbound.clone();
        settings.durable = meta.durable;
        for (key, value) in &meta.vars {
            settings.secrets.remove(key);
            settings.vars.insert(key.clone(), value.clone());
        }
        for (key, value) in &meta.secrets {
            let sealed = self
                .secrets
                .seal(&meta.name, key, value.expose())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            settings.vars.remove(key);
            settings.secrets.insert(key.clone(), sealed);
        }
        crate::config::check_count(&settings)?;
        Ok(settings)
    }

    /// The settings of `name` (none written: the defaults, which grant nothing).
    pub(crate) fn settings(&self, name: &str) -> Result<AppSettings, StoreError> {
        match self.store.get(Table::Settings, name)? {
            Some(bytes) => decode(Table::Settings, name, &bytes),
            None => Ok(AppSettings::default()),
        }
    }

    pub(crate) async fn scale<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        let scale: ScaleRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        let record = {
            let _guard = self.writes.lock().expect("writes lock");
            let record = self.update_app(name, |record| {
                let mut record = owned(name, record, &signer)?;
                match (scale.replicas, &scale.autoscale) {
                    (Some(replicas), None) => {
                        if !(1..=api::MAX_REPLICAS).contains(&replicas) {
                            return Err(ApiError::BadRequest(format!(
                                "replicas must be between 1 and {}",
                                api::MAX_REPLICAS
                            )));
                        }
                        record.replicas = replicas;
                    }
                    (None, Some(settings)) => {
                        settings.validate().map_err(ApiError::BadRequest)?;
                        // Start inside the bounds (at least one replica until idle says
                        // otherwise).
                        record.replicas = record.replicas.clamp(settings.min.max(1), settings.max);
                    }
                    _ => {
                        return Err(ApiError::BadRequest(
                            "give either replicas or autoscale bounds".into(),
                        ));
                    }
                }
                Ok(Some(record))
            })?;
            match &scale.autoscale {
                Some(settings) => self.store.put(Table::Scaling, name, &encode(settings))?,
                None => {
                    self.store.delete(Table::Scaling, name)?;
                    self.loads.lock().expect("loads lock").remove(name);
                }
            }
            self.store.flush()?;
            record
        };
        self.changed.notify_one();
        Ok(json(200, &self.app_info(&record)?))
    }

    /// `POST /v1/apps/{name}/wake`: a router holds a request for an app parked at zero
    /// replicas. Anyone may ask; it only ever brings an autoscaled app back to its minimum.
    pub(crate) fn wake(self: &Arc<Self>, name: &str) -> Answer {
        let mut record = self.app(name)?;
        if record.replicas == 0 {
            let _guard = self.writes.lock().expect("writes lock");
            let settings: Option<api::Autoscale> = match self.store.get(Table::Scaling, name)? {
                Some(bytes) => Some(decode(Table::Scaling, name, &bytes)?),
                None => None,
            };
            let mut woken = false;
            record = self.update_app(name, |current| {
                let Some(mut current) = current else {
                    return Err(ApiError::NotFound(format!("no app named {name:?}")));
                };
                // Another control plane (or request) may have woken it already.
                woken = current.replicas == 0;
                if !woken {
                    return Ok(None);
                }
                current.replicas = settings.as_ref().map_or(1, |s| s.min.max(1));
                Ok(Some(current))
            })?;
            self.store.flush()?;
            if woken {
                if let Some(load) = self.loads.lock().expect("loads lock").get_mut(name) {
                    load.active = Instant::now();
                }
                self.record_event(
                    name,
                    format!("woken by a request: {} replica(s)", record.replicas),
                );
                self.changed.notify_one();
            }
        }
        Ok(json(
            200,
            &serde_json::json!({ "replicas": record.replicas }),
        ))
    }

    pub(crate) async fn remove<B>(self: &Arc<Self>, name: &str, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        {
            let _guard = self.writes.lock().expect("writes lock");
            let record = self.owned_app(name, &signer)?;
            self.store.delete(Table::Apps, name)?;
            self.store.delete(Table::Placements, name)?;
            self.store.delete(Table::Snapshots, name)?;
            self.store.delete(Table::Scaling, name)?;
            self.store.delete(Table::Terms, name)?;
            self.store.delete(Table::Settings, name)?;
            self.link_site(name, None)?;
            let still_used = self.store.list(Table::Apps)?.iter().any(|(k, v)| {
                decode::<AppRecord>(Table::Apps, k, v).is_ok_and(|a| a.sha256 == record.sha256)
            });
            if !still_used {
                self.store.delete(Table::Blobs, &record.sha256)?;
            }
            self.store.flush()?;
        }
        self.logs.forget(self.store.as_ref(), name)?;
        self.public_names
            .lock()
            .expect("names lock")
            .retain(|(_, app), _| app != name);
        self.forget_soft_state(name)?;
        self.store.delete(Table::Moves, name)?;
        self.loads.lock().expect("loads lock").remove(name);
        self.bump();
        self.changed.notify_one();
        Ok(json(200, &serde_json::json!({ "removed": name })))
    }
}
