//! Registry reads: typed views of the store's tables, the master secret and the keys and
//! names derived from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use fog_proto::auth;

use crate::error::ApiError;
use crate::store::{AppRecord, DeviceRecord, PlacementRecord, StoreError, Table, decode};
use crate::{Control, names};

impl Control {
    pub(crate) fn master(&self) -> Result<[u8; 32], StoreError> {
        let mut master = self.master.lock().expect("master lock");
        if let Some(secret) = *master {
            return Ok(secret);
        }
        let secret = names::master_secret(self.store.as_ref())?;
        *master = Some(secret);
        Ok(secret)
    }

    /// The key of `app`.
    pub(crate) fn app_identity(&self, app: &AppRecord) -> Result<auth::Identity, StoreError> {
        Ok(names::app_identity(&self.master()?, &app.owner, &app.name))
    }

    /// The public names of `app`, derived on first use.
    pub(crate) fn public_names(
        &self,
        app: &AppRecord,
    ) -> Result<Arc<names::PublicNames>, StoreError> {
        let key = (app.owner.clone(), app.name.clone());
        if let Some(known) = self.public_names.lock().expect("names lock").get(&key) {
            return Ok(known.clone());
        }
        let derived = Arc::new(names::PublicNames::derive(
            &self.master()?,
            &app.owner,
            &app.name,
        ));
        self.public_names
            .lock()
            .expect("names lock")
            .insert(key, derived.clone());
        Ok(derived)
    }

    pub(crate) fn app(&self, name: &str) -> Result<AppRecord, ApiError> {
        match self.store.get(Table::Apps, name)? {
            Some(bytes) => Ok(decode(Table::Apps, name, &bytes)?),
            None => Err(ApiError::NotFound(format!("no app named {name:?}"))),
        }
    }

    pub(crate) fn owned_app(&self, name: &str, signer: &str) -> Result<AppRecord, ApiError> {
        crate::apps::owned(name, Some(self.app(name)?), signer)
    }

    pub(crate) fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.store
            .list(Table::Apps)?
            .iter()
            .map(|(k, v)| decode(Table::Apps, k, v))
            .collect()
    }

    pub(crate) fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.store
            .list(Table::Devices)?
            .iter()
            .map(|(k, v)| decode(Table::Devices, k, v))
            .collect()
    }

    pub(crate) fn placements(&self) -> Result<BTreeMap<String, PlacementRecord>, StoreError> {
        self.store
            .list(Table::Placements)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Placements, k, v)?)))
            .collect()
    }
}
