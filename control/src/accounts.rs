//! Accounts: what devices earned and developers spent, derived on read from the verified ledger
//! periods in the store (nothing else is stored, so balances cannot drift from the ledger).
//!
//! Each entry of a verified period moves one amount from the app's developer (the owner key of
//! the app record) to the device that signed the period. The amount is the entry's credits:
//! `fuel / FUEL_PER_CPU_HOUR × price_cpu_hour`, the metered work at the price the device signed
//! for that period, whose arithmetic the control plane checked before storing it.

use std::collections::BTreeMap;

use fog_proto::api::{Balances, DeveloperBalance, DeviceBalance, SignedPeriod};

use crate::Control;
use crate::store::{StoreError, Table, decode};

/// Who pays for the canary's work (spot checks) in `fog balance`: the fog's operator.
pub const SPOT_CHECKS: &str = "fog operator (spot checks)";

impl Control {
    /// Every device's earnings and every developer's spending, from the stored ledger.
    pub(crate) fn balances(&self) -> Result<Balances, StoreError> {
        let owners: BTreeMap<String, String> = self
            .apps()?
            .into_iter()
            .map(|a| (a.name, a.owner))
            .collect();
        let mut devices: BTreeMap<String, DeviceBalance> = BTreeMap::new();
        let mut developers: BTreeMap<String, DeveloperBalance> = BTreeMap::new();
        let mut periods = 0;
        for (key, value) in self.store.list(Table::Ledger)? {
            let signed: SignedPeriod = decode(Table::Ledger, &key, &value)?;
            let period = signed.period;
            periods += 1;
            let device = devices
                .entry(period.device.clone())
                .or_insert_with(|| DeviceBalance {
                    device: period.device.clone(),
                    earned: 0.0,
                    fuel: 0,
                    periods: 0,
                });
            device.periods += 1;
            for entry in &period.entries {
                device.earned += entry.credits;
                device.fuel += entry.fuel;
                // Spot checks are the fog's own work: the operator pays the devices for them.
                // An app removed since: its owner is gone with its record, but its spending is
                // still counted, under the app's name.
                let owner = if entry.app == fog_proto::canary::APP {
                    SPOT_CHECKS.to_string()
                } else {
                    owners
                        .get(&entry.app)
                        .cloned()
                        .unwrap_or_else(|| format!("removed:{}", entry.app))
                };
                let developer =
                    developers
                        .entry(owner.clone())
                        .or_insert_with(|| DeveloperBalance {
                            owner,
                            spent: 0.0,
                            fuel: 0,
                            apps: Vec::new(),
                        });
                developer.spent += entry.credits;
                developer.fuel += entry.fuel;
                if !developer.apps.contains(&entry.app) {
                    developer.apps.push(entry.app.clone());
                }
            }
        }
        let devices: Vec<DeviceBalance> = devices.into_values().collect();
        let developers: Vec<DeveloperBalance> = developers.into_values().collect();
        Ok(Balances {
            earned: devices.iter().map(|d| d.earned).sum(),
            spent: developers.iter().map(|d| d.spent).sum(),
            devices,
            developers,
            periods,
        })
    }
}
