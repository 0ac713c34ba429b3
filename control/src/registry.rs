//! Registry reads: typed views of the store's tables, the master secret and the keys and
//! names derived from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLockReadGuard};

use fog_proto::auth;

use crate::error::ApiError;
use crate::store::{
    AppRecord, AppSettings, Change, DeviceRecord, Drained, PlacementRecord, StoreError, Table,
    decode,
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

    /// Every app, in name order, from the plan index (kept up to date from the store's feed
    /// of changes, not read from the table).
    pub(crate) fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        Ok(self.plan_index()?.apps.values().cloned().collect())
    }

    /// Every app's placement, from the plan index.
    pub(crate) fn placements(&self) -> Result<BTreeMap<String, PlacementRecord>, StoreError> {
        Ok(self.plan_index()?.placements.clone())
    }

    /// Every app, read from the table.
    fn read_apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.store
            .list(Table::Apps)?
            .iter()
            .map(|(k, v)| decode(Table::Apps, k, v))
            .collect()
    }

    /// Every registered device, in id order, from the device index.
    pub(crate) fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.device_index(|index| index.devices.values().cloned().collect())
    }

    /// Use the registered devices and admitted keys, brought up to date with the changes the
    /// store has fed since the last use (or read whole when it may have missed some, and every
    /// time from a store that cannot feed them). On etcd each reconcile listed both tables
    /// over gRPC: 10,000 devices and as many keys a tick.
    pub(crate) fn device_index<T>(
        &self,
        use_it: impl FnOnce(&mut DeviceIndex) -> T,
    ) -> Result<T, StoreError> {
        let Some(feed) = &self.device_feed else {
            return Ok(use_it(&mut self.read_device_index()?));
        };
        let mut index = self.device_index.lock().expect("device index lock");
        match feed.drain() {
            Drained::Changes(changes) => {
                for change in &changes {
                    if let Err(err) = index.apply(change) {
                        // Unreadable: the next use reads the tables again.
                        feed.lose();
                        return Err(err);
                    }
                }
            }
            Drained::Lost => match self.read_device_index() {
                Ok(fresh) => *index = fresh,
                Err(err) => {
                    feed.lose();
                    return Err(err);
                }
            },
        }
        Ok(use_it(&mut index))
    }

    /// The device index read whole from its tables.
    fn read_device_index(&self) -> Result<DeviceIndex, StoreError> {
        let devices = self
            .store
            .list(Table::Devices)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Devices, k, v)?)))
            .collect::<Result<_, StoreError>>()?;
        let admitted = self
            .store
            .list(Table::Admitted)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        Ok(DeviceIndex {
            devices,
            admitted,
            admitted_devices: None,
        })
    }

    /// Every placement, read from the table.
    fn read_placements(&self) -> Result<BTreeMap<String, PlacementRecord>, StoreError> {
        self.store
            .list(Table::Placements)?
            .iter()
            .map(|(k, v)| Ok((k.clone(), decode(Table::Placements, k, v)?)))
            .collect()
    }
}

/// The tables the device index is built from.
pub(crate) const DEVICE_TABLES: [Table; 2] = [Table::Devices, Table::Admitted];

/// Registered devices and admitted keys, kept up to date key by key from the store's feed of
/// [`DEVICE_TABLES`] (see [`Control::device_index`]).
#[derive(Debug, Default)]
pub(crate) struct DeviceIndex {
    /// Device id → its registration.
    pub(crate) devices: BTreeMap<String, DeviceRecord>,
    /// Admitted public keys (hex).
    pub(crate) admitted: std::collections::HashSet<String>,
    /// The admitted devices in id order, made at the first use after a change.
    admitted_devices: Option<Arc<Vec<DeviceRecord>>>,
}

impl DeviceIndex {
    /// Take in one change to a device or an admission.
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let key = change.key.as_str();
        match (change.table, &change.value) {
            (Table::Devices, Some(bytes)) => {
                self.devices
                    .insert(key.to_string(), decode(Table::Devices, key, bytes)?);
            }
            (Table::Devices, None) => {
                self.devices.remove(key);
            }
            (Table::Admitted, Some(_)) => {
                self.admitted.insert(key.to_string());
            }
            (Table::Admitted, None) => {
                self.admitted.remove(key);
            }
            _ => return Ok(()),
        }
        self.admitted_devices = None;
        Ok(())
    }

    /// Registered devices that are admitted, in id order.
    pub(crate) fn admitted_devices(&mut self) -> Arc<Vec<DeviceRecord>> {
        let (devices, admitted) = (&self.devices, &self.admitted);
        self.admitted_devices
            .get_or_insert_with(|| {
                Arc::new(
                    devices
                        .values()
                        .filter(|d| admitted.contains(&d.public_key))
                        .cloned()
                        .collect(),
                )
            })
            .clone()
    }
}

/// The tables the plan index is built from.
pub(crate) const PLAN_TABLES: [Table; 4] = [
    Table::Apps,
    Table::Placements,
    Table::Sites,
    Table::Settings,
];

/// Apps, their placements, site bundles and settings, indexed by device: what every heartbeat
/// needs to compute a device's assignments, and what `fog ps` answers from. Built whole from
/// the tables once (and again whenever the store says changes may have been missed), and
/// otherwise kept up to date key by key from the store's feed of changes
/// ([`crate::store::Store::follow`]): every control plane's index follows every other's
/// writes, and a registry change costs the records it touches, not a read of the registry.
#[derive(Debug, Default)]
pub(crate) struct PlanIndex {
    pub(crate) apps: BTreeMap<String, AppRecord>,
    pub(crate) placements: BTreeMap<String, PlacementRecord>,
    /// App name → site bundle sha256.
    pub(crate) sites: HashMap<String, String>,
    /// App name → what it may reach and is given (apps with none written are absent).
    pub(crate) settings: HashMap<String, AppSettings>,
    /// Device id → the apps placed on it, in app-name order.
    pub(crate) by_device: HashMap<String, BTreeSet<String>>,
    /// Times the index was built whole: every device's assignments may have changed then.
    rebuilds: u64,
    /// Device id → a count of the changes to its assignments' records since the index was
    /// made (see [`PlanIndex::epoch`]).
    epochs: HashMap<String, u64>,
}

impl PlanIndex {
    /// Build the index from the four tables' records.
    fn build(
        apps: BTreeMap<String, AppRecord>,
        placements: BTreeMap<String, PlacementRecord>,
        sites: HashMap<String, String>,
        settings: HashMap<String, AppSettings>,
    ) -> PlanIndex {
        let mut index = PlanIndex {
            apps,
            placements,
            sites,
            settings,
            ..PlanIndex::default()
        };
        let names: Vec<String> = index.apps.keys().cloned().collect();
        for name in names {
            for device in index.devices_of(&name) {
                index
                    .by_device
                    .entry(device)
                    .or_default()
                    .insert(name.clone());
            }
        }
        index
    }

    /// The devices `app` is placed on, as the index stands (none unless both its record and
    /// its placement exist).
    fn devices_of(&self, app: &str) -> BTreeSet<String> {
        match (self.apps.contains_key(app), self.placements.get(app)) {
            (true, Some(placement)) => placement.devices.iter().cloned().collect(),
            _ => BTreeSet::new(),
        }
    }

    /// A number that changes whenever a record behind `device`'s assignments changes: while
    /// it stays the same, so do the parts of its assignments read from the index.
    pub(crate) fn epoch(&self, device: &str) -> (u64, u64) {
        (self.rebuilds, self.epochs.get(device).copied().unwrap_or(0))
    }

    /// Apply one change to the four tables' records.
    fn apply(&mut self, change: &Change) -> Result<(), StoreError> {
        let (table, app) = (change.table, change.key.as_str());
        let before = self.devices_of(app);
        match (table, &change.value) {
            (Table::Apps, Some(bytes)) => {
                self.apps
                    .insert(app.to_string(), decode(table, app, bytes)?);
            }
            (Table::Apps, None) => {
                self.apps.remove(app);
            }
            (Table::Placements, Some(bytes)) => {
                self.placements
                    .insert(app.to_string(), decode(table, app, bytes)?);
            }
            (Table::Placements, None) => {
                self.placements.remove(app);
            }
            (Table::Sites, Some(sha)) => {
                self.sites
                    .insert(app.to_string(), String::from_utf8_lossy(sha).into_owned());
            }
            (Table::Sites, None) => {
                self.sites.remove(app);
            }
            (Table::Settings, Some(bytes)) => {
                self.settings
                    .insert(app.to_string(), decode(table, app, bytes)?);
            }
            (Table::Settings, None) => {
                self.settings.remove(app);
            }
            // Not one of the plan's tables.
            _ => return Ok(()),
        }
        let after = self.devices_of(app);
        for gone in before.difference(&after) {
            if let Some(on) = self.by_device.get_mut(gone) {
                on.remove(app);
                if on.is_empty() {
                    self.by_device.remove(gone);
                }
            }
        }
        for added in after.difference(&before) {
            self.by_device
                .entry(added.clone())
                .or_default()
                .insert(app.to_string());
        }
        // Every device that had or has the app: its assignments may read what changed.
        for device in before.union(&after) {
            *self.epochs.entry(device.clone()).or_default() += 1;
        }
        Ok(())
    }

    /// Whether two indexes hold the same records (however they were made).
    #[cfg(test)]
    pub(crate) fn same_records(&self, other: &PlanIndex) -> bool {
        self.apps == other.apps
            && self.placements == other.placements
            && self.sites == other.sites
            && self.settings == other.settings
            && self.by_device == other.by_device
    }
}

impl Control {
    /// The plan index built whole from the four tables.
    pub(crate) fn read_plan_index(&self) -> Result<PlanIndex, StoreError> {
        let apps: BTreeMap<String, AppRecord> = self
            .read_apps()?
            .into_iter()
            .map(|a| (a.name.clone(), a))
            .collect();
        let placements = self.read_placements()?;
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
        Ok(PlanIndex::build(apps, placements, sites, settings))
    }

    /// The registry's apps and placements indexed by device, brought up to date with the
    /// changes the store has fed since the last use (or rebuilt whole when it may have missed
    /// some).
    pub(crate) fn plan_index(&self) -> Result<RwLockReadGuard<'_, PlanIndex>, StoreError> {
        let read = || self.plan_index.read().expect("plan index lock");
        let feed = match &self.plan_feed {
            Some(feed) if !feed.pending() => return Ok(read()),
            Some(feed) => feed,
            None => {
                // A store that cannot feed changes: read the tables every time.
                let fresh = self.read_plan_index()?;
                let mut index = self.plan_index.write().expect("plan index lock");
                let rebuilds = index.rebuilds + 1;
                *index = PlanIndex { rebuilds, ..fresh };
                drop(index);
                return Ok(read());
            }
        };
        // One update at a time. Without this, every heartbeat arriving after a registry change
        // would drain and rebuild itself; those that waited find the index up to date.
        let _updating = self
            .plan_index_update
            .lock()
            .expect("plan index update lock");
        match feed.drain() {
            Drained::Changes(changes) => {
                if !changes.is_empty() {
                    let mut index = self.plan_index.write().expect("plan index lock");
                    for change in &changes {
                        if let Err(err) = index.apply(change) {
                            // The record is unreadable; the next use reads the tables again
                            // (and fails the same way until the record is fixed).
                            self.plan_feed_lost();
                            return Err(err);
                        }
                    }
                }
            }
            Drained::Lost => {
                // Read without the lock: heartbeats answer from the old index meanwhile.
                let fresh = match self.read_plan_index() {
                    Ok(fresh) => fresh,
                    Err(err) => {
                        self.plan_feed_lost();
                        return Err(err);
                    }
                };
                let mut index = self.plan_index.write().expect("plan index lock");
                let (rebuilds, epochs) = (index.rebuilds + 1, std::mem::take(&mut index.epochs));
                *index = PlanIndex {
                    rebuilds,
                    epochs,
                    ..fresh
                };
            }
        }
        Ok(read())
    }

    /// The plan index must be read from the tables again at its next use.
    fn plan_feed_lost(&self) {
        if let Some(feed) = &self.plan_feed {
            feed.lose();
        }
    }
}
