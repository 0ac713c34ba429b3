//! The rewards ledger: fuel burnt per app, closed into periods that turn fuel into credits at the
//! device's price and are signed with the device key, so the control plane can verify them.
//! Closed periods are kept in sled until the control plane has them.

use std::collections::BTreeMap;

use fog_proto::api::{LedgerEntry, LedgerPeriod, SignedPeriod};
use fog_proto::auth::{self, Identity};

/// Why a period is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The signature does not match the period or the key.
    #[error("ledger period {start_ms}: {reason}")]
    Invalid {
        /// The period's start.
        start_ms: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Verify a signed period against the device's public key (hex): the signature and the
/// arithmetic.
pub fn verify(period: &SignedPeriod, public_hex: &str) -> Result<(), LedgerError> {
    let invalid = |reason: String| LedgerError::Invalid {
        start_ms: period.period.start_ms,
        reason,
    };
    auth::verify_bytes(public_hex, &period.period.signed_bytes(), &period.signature)
        .map_err(|e| invalid(e.to_string()))?;
    period.period.check_arithmetic().map_err(invalid)
}

/// A device's ledger.
pub struct Ledger {
    tree: sled::Tree,
    identity: Identity,
    device: String,
    price_cpu_hour: f64,
    open: BTreeMap<String, u64>,
    start_ms: u64,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("device", &self.device)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger kept in `tree`, signing with `identity`, at `price_cpu_hour`.
    pub fn new(tree: sled::Tree, identity: Identity, price_cpu_hour: f64, now_ms: u64) -> Ledger {
        let device = auth::device_id(&identity.public_hex());
        Ledger {
            tree,
            identity,
            device,
            price_cpu_hour,
            open: BTreeMap::new(),
            start_ms: now_ms,
        }
    }

    /// Count `fuel` burnt by `app` in the open period.
    pub fn record(&mut self, app: &str, fuel: u64) {
        *self.open.entry(app.to_string()).or_default() += fuel;
    }

    /// Close the open period at `now_ms`, sign it and keep it until [`Ledger::acknowledge`].
    pub fn close(&mut self, now_ms: u64) -> Result<SignedPeriod, sled::Error> {
        let entries: Vec<LedgerEntry> = std::mem::take(&mut self.open)
            .into_iter()
            .map(|(app, fuel)| LedgerEntry {
                credits: LedgerPeriod::credits(fuel, self.price_cpu_hour),
                app,
                fuel,
            })
            .collect();
        let period = LedgerPeriod {
            device: self.device.clone(),
            start_ms: self.start_ms,
            end_ms: now_ms,
            price_cpu_hour: self.price_cpu_hour,
            total_credits: entries.iter().map(|e| e.credits).sum(),
            entries,
        };
        let signed = SignedPeriod {
            signature: self.identity.sign_bytes(&period.signed_bytes()),
            period,
        };
        self.tree.insert(
            self.start_ms.to_be_bytes(),
            serde_json::to_vec(&signed).expect("serialises"),
        )?;
        self.start_ms = now_ms;
        Ok(signed)
    }

    /// Closed periods not yet acknowledged by the control plane, oldest first.
    pub fn pending(&self, limit: usize) -> Vec<SignedPeriod> {
        self.tree
            .iter()
            .values()
            .filter_map(|v| v.ok().and_then(|v| serde_json::from_slice(&v).ok()))
            .take(limit)
            .collect()
    }

    /// Forget closed periods up to and including `start_ms` (the control plane has them).
    pub fn acknowledge(&self, start_ms: u64) {
        for key in self.tree.range(..=start_ms.to_be_bytes()).keys().flatten() {
            let _ = self.tree.remove(key);
        }
    }

    /// Fuel burnt so far in the open period, per app.
    pub fn open_fuel(&self) -> &BTreeMap<String, u64> {
        &self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::api::FUEL_PER_CPU_HOUR;

    #[test]
    fn credits_follow_fuel_and_price_and_tampering_is_caught() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let identity = Identity::generate();
        let public = identity.public_hex();
        let mut ledger = Ledger::new(db.open_tree("ledger").unwrap(), identity, 0.15, 1_000);
        ledger.record("counter", 3_000_000_000);
        ledger.record("hello", 7_200_000_000_000);
        ledger.record("counter", 1_000_000_000);
        let period = ledger.close(61_000).unwrap();
        assert_eq!(period.period.entries.len(), 2);
        let counter = &period.period.entries[0];
        assert_eq!(
            (counter.app.as_str(), counter.fuel),
            ("counter", 4_000_000_000)
        );
        assert!((counter.credits - 4e9 / FUEL_PER_CPU_HOUR * 0.15).abs() < 1e-15);
        let hello = &period.period.entries[1];
        assert!(
            (hello.credits - 0.15).abs() < 1e-12,
            "one CPU-hour of fuel earns the price"
        );
        assert_eq!(verify(&period, &public), Ok(()));

        let mut inflated = period.clone();
        inflated.period.entries[1].credits *= 2.0;
        inflated.period.total_credits = inflated.period.entries.iter().map(|e| e.credits).sum();
        assert!(
            verify(&inflated, &public)
                .unwrap_err()
                .to_string()
                .contains("signature")
        );
        let mut more_fuel = period.clone();
        more_fuel.period.entries[0].fuel += 1;
        assert!(verify(&more_fuel, &public).is_err());
        assert!(
            verify(&period, &Identity::generate().public_hex()).is_err(),
            "another device's key"
        );

        assert_eq!(ledger.pending(10), vec![period.clone()]);
        ledger.acknowledge(period.period.start_ms);
        assert!(ledger.pending(10).is_empty());
    }
}
