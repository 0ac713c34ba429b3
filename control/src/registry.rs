//! Registry reads: typed views of the store's tables, the master secret and the keys and
//! names derived from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fog_proto::auth;

use crate::error::ApiError;
use crate::store::{
    AppRecord, AppSettings, DeviceRecord, PlacementRecord, StoreError, Table, decode,
};
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

/// Apps, their placements, site bundles and settings, indexed by device: what every heartbeat needs to
/// compute a device's assignments. Rebuilt only when one of the three tables changed (see
/// [`crate::store::Store::generation`]), so a heartbeat costs the device's own assignments, not
/// a read of the whole registry.
#[derive(Debug, Default)]
pub(crate) struct PlanIndex {
    /// The tables' generations this index was built from; `None` for a store that cannot say
    /// (the index is then rebuilt on every use).
    stamp: Option<[u64; 4]>,
    pub(crate) apps: BTreeMap<String, AppRecord>,
    pub(crate) placements: BTreeMap<String, PlacementRecord>,
    /// App name → site bundle sha256.
    pub(crate) sites: HashMap<String, String>,
    /// App name → what it may reach and is given (apps with none written are absent).
    pub(crate) settings: HashMap<String, AppSettings>,
    /// Device id → the apps placed on it, in app-name order.
    pub(crate) by_device: HashMap<String, Vec<String>>,
}

impl Control {
    /// The generations of the tables the plan index is built from; `None` for a store that
    /// cannot say.
    fn plan_stamp(&self) -> Option<[u64; 4]> {
        [
            Table::Apps,
            Table::Placements,
            Table::Sites,
            Table::Settings,
        ]
        .map(|table| self.store.generation(table))
        .iter()
        .copied()
        .collect::<Option<Vec<u64>>>()
        .map(|g| [g[0], g[1], g[2], g[3]])
    }

    /// The cached plan index, if the store says none of its tables changed since it was built.
    fn cached_plan_index(&self) -> Option<Arc<PlanIndex>> {
        let stamp = self.plan_stamp()?;
        let cached = self.plan_index.lock().expect("plan index lock").clone();
        cached.filter(|index| index.stamp == Some(stamp))
    }

    /// The registry's apps and placements indexed by device, from the cache while the store
    /// says nothing changed.
    pub(crate) fn plan_index(&self) -> Result<Arc<PlanIndex>, StoreError> {
        if let Some(index) = self.cached_plan_index() {
            return Ok(index);
        }
        // One rebuild at a time. Without this, every heartbeat arriving after a registry change
        // lists the four tables itself: harmless on sled (in-process reads), but on etcd a
        // thousand heartbeats a second each read every app and placement over gRPC (a stalled
        // run of 1,000 simulated devices and 1,000 apps on etcd spent its time listing and
        // decoding). Those that waited find the index rebuilt when they get the lock.
        let _rebuilding = self
            .plan_index_rebuild
            .lock()
            .expect("plan index rebuild lock");
        if let Some(index) = self.cached_plan_index() {
            return Ok(index);
        }
        // Read before the tables: a change while they are read leaves the index stale, rebuilt
        // on the next use.
        let stamp = self.plan_stamp();
        let apps: BTreeMap<String, AppRecord> = self
            .apps()?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let placements = self.placements()?;
        let sites = self
            .store
            .list(Table::Sites)?
            .into_iter()
            .map(|(app, sha)| (app, String::from_utf8_lossy(&sha).into_owned()))
            .collect();
        let settings = self
            .store
            .list(Table::Settings)?
            .iter()
            .map(|(app, bytes)| Ok((app.clone(), decode(Table::Settings, app, bytes)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut by_device: HashMap<String, Vec<String>> = HashMap::new();
        for name in apps.keys() {
            for device in placements.get(name).map(|p| &p.devices[..]).unwrap_or(&[]) {
                let on = by_device.entry(device.clone()).or_default();
                if on.last() != Some(name) {
                    on.push(name.clone());
                }
            }
        }
        let index = Arc::new(PlanIndex {
            stamp,
            apps,
            placements,
            sites,
            settings,
            by_device,
        });
        if stamp.is_some() {
            *self.plan_index.lock().expect("plan index lock") = Some(index.clone());
        }
        Ok(index)
    }
}
