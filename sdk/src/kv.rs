//! Key-value state through the standard `wasi:keyvalue` interfaces.
//!
//! On Fog every app has its own namespace: two apps never see each other's keys, and the state
//! survives restarts of the device. A bucket is opened by name; `""` names the default bucket.

use std::fmt;

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "fog:app/app-state",
        generate_all,
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// Why a key-value operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The host knows no store under this name.
    NoSuchStore,
    /// The host refused access.
    AccessDenied,
    /// Any other failure, as the host described it.
    Other(String),
    /// The stored value is not what the caller asked for (not UTF-8, not a number, not JSON).
    Decode(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::NoSuchStore => f.write_str("key-value store not found"),
            KvError::AccessDenied => f.write_str("key-value access denied"),
            KvError::Other(reason) => write!(f, "key-value error: {reason}"),
            KvError::Decode(reason) => write!(f, "stored value cannot be decoded: {reason}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<store::Error> for KvError {
    fn from(err: store::Error) -> Self {
        match err {
            store::Error::NoSuchStore => KvError::NoSuchStore,
            store::Error::AccessDenied => KvError::AccessDenied,
            store::Error::Other(reason) => KvError::Other(reason),
        }
    }
}

/// A named set of key-value pairs in the app's namespace.
#[derive(Debug)]
pub struct Bucket {
    inner: store::Bucket,
}

impl Bucket {
    /// Open the bucket `name` (`""` is the default bucket).
    pub fn open(name: &str) -> Result<Bucket, KvError> {
        Ok(Bucket {
            inner: store::open(name)?,
        })
    }

    /// The bytes stored under `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.inner.get(key)?)
    }

    /// Store `value` under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        Ok(self.inner.set(key, value)?)
    }

    /// Remove `key` (a missing key is not an error).
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        Ok(self.inner.delete(key)?)
    }

    /// Whether `key` holds a value.
    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.inner.exists(key)?)
    }

    /// Every key in the bucket, in the host's order.
    pub fn keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.inner.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Atomically add `delta` to the number stored under `key` (missing counts as 0) and return
    /// the new value. Numbers are stored as decimal text, as every `wasi:keyvalue` host does.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        Ok(atomics::increment(&self.inner, key, delta)?)
    }

    /// The number stored under `key` (written by [`Bucket::increment`] or as decimal text).
    pub fn get_number(&self, key: &str) -> Result<u64, KvError> {
        match self.get(key)? {
            None => Ok(0),
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| KvError::Decode(format!("{key:?} is not a decimal number"))),
        }
    }

    /// The value under `key` decoded from JSON.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| KvError::Decode(err.to_string())),
        }
    }

    /// Store `value` under `key` as JSON.
    pub fn set_json<T: serde::Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|err| KvError::Decode(err.to_string()))?;
        self.set(key, &bytes)
    }

    /// The values of many keys at once, in order.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let found = batch::get_many(&self.inner, keys)?;
        Ok(found
            .into_iter()
            .map(|pair| pair.map(|(_, value)| value))
            .collect())
    }

    /// Store many pairs at once.
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        Ok(batch::set_many(&self.inner, pairs)?)
    }
}
