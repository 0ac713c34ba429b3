//! `wasi:keyvalue` (the 0.2.0 draft) for guests, persisted in sled, one namespace per app.
//!
//! Each app owns one sled tree, `kv/<app>`; a guest's store only ever holds a handle to its own
//! app's tree, so apps cannot name, let alone read, each other's keys. Inside the tree a key is
//! stored as `bucket NUL key`. Numbers written by `increment` are decimal text, as in every other
//! `wasi:keyvalue` host, so `get` reads them back the same everywhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::error::LoadError;
use crate::replica::{Change, Replication, WriteError};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "fog:app/app-state",
        imports: { default: trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Longest bucket name accepted, in bytes.
pub const MAX_BUCKET_NAME_BYTES: usize = 255;
/// Largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 8 << 20;
/// Keys returned by one `list-keys` page.
const PAGE: usize = 1000;

/// One app's key-value state, its change log and its replication state (see
/// [`crate::replica`]).
///
/// The two sled trees are created on first use: an app that never touches its state (a static
/// site) costs the database nothing, however many such apps a host holds.
#[derive(Debug, Clone)]
pub struct Namespace {
    trees: Arc<Trees>,
    pub(crate) repl: Arc<Replication>,
    /// Whether the control planes vouch for this host's primaries (the host's one lease).
    pub(crate) lease: Arc<crate::replica::ControlLease>,
}

#[derive(Debug)]
struct Trees {
    db: sled::Db,
    app: String,
    /// The state (`kv/<app>`) and the change log (`log/<app>`), once opened.
    open: OnceLock<(sled::Tree, sled::Tree)>,
}

impl Namespace {
    /// Open (or create) the namespace of `app` in `db`.
    pub fn open(db: &sled::Db, app: &str) -> Result<Namespace, LoadError> {
        let error = |source| LoadError::State {
            app: app.to_string(),
            source,
        };
        let tree = db.open_tree(format!("kv/{app}")).map_err(error)?;
        let log = db.open_tree(format!("log/{app}")).map_err(error)?;
        let head = log
            .last()
            .map_err(error)?
            .and_then(|(key, _)| key.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        Ok(Namespace {
            trees: Arc::new(Trees {
                db: db.clone(),
                app: app.to_string(),
                open: OnceLock::from((tree, log)),
            }),
            repl: Arc::new(Replication::new(head)),
            lease: Arc::default(),
        })
    }

    /// The namespace of `app`, whose trees do not exist yet: they are created on first use.
    pub(crate) fn lazy(db: &sled::Db, app: &str) -> Namespace {
        Namespace {
            trees: Arc::new(Trees {
                db: db.clone(),
                app: app.to_string(),
                open: OnceLock::new(),
            }),
            repl: Arc::new(Replication::new(0)),
            lease: Arc::default(),
        }
    }

    fn trees(&self) -> Result<&(sled::Tree, sled::Tree), sled::Error> {
        if let Some(trees) = self.trees.open.get() {
            return Ok(trees);
        }
        // Two callers may both open: sled hands both the same trees.
        let app = &self.trees.app;
        let tree = self.trees.db.open_tree(format!("kv/{app}"))?;
        let log = self.trees.db.open_tree(format!("log/{app}"))?;
        Ok(self.trees.open.get_or_init(|| (tree, log)))
    }

    /// The app's state tree (created on first use).
    pub(crate) fn tree(&self) -> Result<&sled::Tree, sled::Error> {
        Ok(&self.trees()?.0)
    }

    /// The app's change log (created on first use).
    pub(crate) fn log(&self) -> Result<&sled::Tree, sled::Error> {
        Ok(&self.trees()?.1)
    }

    /// The value under `key` in `bucket`, read from the host side (for tests and tools).
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, sled::Error> {
        match self.trees.open.get() {
            Some((tree, _)) => Ok(tree.get(stored_key(bucket, key))?.map(|v| v.to_vec())),
            None => Ok(None),
        }
    }

    /// Number of keys across all buckets.
    pub fn len(&self) -> usize {
        self.trees.open.get().map_or(0, |(tree, _)| tree.len())
    }

    /// Whether the namespace holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the app's trees exist yet (something used its state).
    pub fn is_open(&self) -> bool {
        self.trees.open.get().is_some()
    }
}

/// An open bucket, as the guest's `bucket` resource.
#[derive(Debug)]
pub struct BucketHandle {
    prefix: Vec<u8>,
}

/// What the `wasi:keyvalue` host functions see of a request's store.
#[derive(Debug)]
pub struct KvView<'a> {
    /// The request's resource table (shared with WASI and wasi:http).
    pub table: &'a mut ResourceTable,
    /// The app's namespace.
    pub namespace: &'a Namespace,
    /// The highest sequence number this request wrote (0: none).
    pub written: &'a AtomicU64,
}

/// Marker for [`HasData`] so the generated `add_to_linker` can borrow a [`KvView`].
#[derive(Debug)]
pub struct FogKv;

impl HasData for FogKv {
    type Data<'a> = KvView<'a>;
}

/// Add the `wasi:keyvalue` interfaces to `linker`, reading the view through `get`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, FogKv>(linker, get)?;
    atomics::add_to_linker::<T, FogKv>(linker, get)?;
    batch::add_to_linker::<T, FogKv>(linker, get)?;
    Ok(())
}

fn stored_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 1 + key.len());
    out.extend_from_slice(bucket.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

fn other(reason: impl std::fmt::Display) -> store::Error {
    store::Error::Other(reason.to_string())
}

fn check_key(key: &str) -> Result<(), store::Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(other(format!("key longer than {MAX_KEY_BYTES} bytes")));
    }
    Ok(())
}

impl KvView<'_> {
    fn key(
        &self,
        bucket: &Resource<BucketHandle>,
        key: &str,
    ) -> wasmtime::Result<Result<Vec<u8>, store::Error>> {
        let handle = self.table.get(bucket)?;
        if let Err(err) = check_key(key) {
            return Ok(Err(err));
        }
        let mut full = handle.prefix.clone();
        full.extend_from_slice(key.as_bytes());
        Ok(Ok(full))
    }

    /// Make a write through the namespace's log; a replica that takes no writes stops the
    /// guest (the host answers for it and routers retry on the primary).
    fn write<T>(
        &self,
        compute: impl FnOnce(&sled::Tree) -> Result<(Vec<Change>, T), String>,
    ) -> KvResult<T> {
        match self.namespace.write(compute) {
            Ok((value, seq)) => {
                self.written.fetch_max(seq, Ordering::AcqRel);
                Ok(Ok(value))
            }
            Err(WriteError::Refused(refused)) => Err(wasmtime::Error::new(refused)),
            Err(WriteError::Store(reason)) => Ok(Err(other(reason))),
        }
    }

    fn set_one(&self, full: Vec<u8>, value: Vec<u8>) -> KvResult<()> {
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(other(format!(
                "value larger than {MAX_VALUE_BYTES} bytes"
            ))));
        }
        self.write(|_| Ok((vec![Change::Set { key: full, value }], ())))
    }
}

impl store::Host for KvView<'_> {
    fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        if identifier.len() > MAX_BUCKET_NAME_BYTES || identifier.contains('\0') {
            return Ok(Err(other(format!(
                "bucket names have at most {MAX_BUCKET_NAME_BYTES} bytes and no NUL"
            ))));
        }
        let handle = BucketHandle {
            prefix: stored_key(&identifier, ""),
        };
        Ok(Ok(self.table.push(handle)?))
    }
}

impl store::HostBucket for KvView<'_> {
    fn get(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<Option<Vec<u8>>> {
        let full = match self.key(&bucket, &key)? {
            Ok(full) => full,
            Err(err) => return Ok(Err(err)),
        };
        Ok(self
            .namespace
            .tree()
            .and_then(|tree| tree.get(full))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(other))
    }

    fn set(&mut self, bucket: Resource<BucketHandle>, key: String, value: Vec<u8>) -> KvResult<()> {
        match self.key(&bucket, &key)? {
            Ok(full) => self.set_one(full, value),
            Err(err) => Ok(Err(err)),
        }
    }

    fn delete(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<()> {
        match self.key(&bucket, &key)? {
            Ok(full) => self.write(|_| Ok((vec![Change::Delete { key: full }], ()))),
            Err(err) => Ok(Err(err)),
        }
    }

    fn exists(&mut self, bucket: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        Ok(match self.key(&bucket, &key)? {
            Ok(full) => self
                .namespace
                .tree()
                .and_then(|tree| tree.contains_key(full))
                .map_err(other),
            Err(err) => Err(err),
        })
    }

    fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let prefix = self.table.get(&bucket)?.prefix.clone();
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        let mut more = false;
        let tree = match self.namespace.tree() {
            Ok(tree) => tree,
            Err(err) => return Ok(Err(other(err))),
        };
        for entry in tree.scan_prefix(&prefix).keys().skip(skip) {
            let key = match entry {
                Ok(key) => key,
                Err(err) => return Ok(Err(other(err))),
            };
            if keys.len() == PAGE {
                more = true;
                break;
            }
            keys.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        let cursor = more.then(|| (skip + keys.len()) as u64);
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let full = match self.key(&bucket, &key)? {
            Ok(full) => full,
            Err(err) => return Ok(Err(err)),
        };
        // Writes of one app are serialised, so read-add-write cannot race another request.
        self.write(|tree| {
            let current = tree.get(&full).map_err(|e| e.to_string())?;
            let old: u64 = match &current {
                None => 0,
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("value of {key:?} is not a decimal number"))?,
            };
            let new = old
                .checked_add(delta)
                .ok_or_else(|| format!("incrementing {key:?} overflows u64"))?;
            let change = Change::Set {
                key: full.clone(),
                value: new.to_string().into_bytes(),
            };
            Ok((vec![change], new))
        })
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let full = match self.key(&bucket, &key)? {
                Ok(full) => full,
                Err(err) => return Ok(Err(err)),
            };
            match self.namespace.tree().and_then(|tree| tree.get(full)) {
                Ok(value) => out.push(value.map(|v| (key, v.to_vec()))),
                Err(err) => return Ok(Err(other(err))),
            }
        }
        Ok(Ok(out))
    }

    fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let mut changes = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let full = match self.key(&bucket, &key)? {
                Ok(full) => full,
                Err(err) => return Ok(Err(err)),
            };
            if value.len() > MAX_VALUE_BYTES {
                return Ok(Err(other(format!(
                    "value larger than {MAX_VALUE_BYTES} bytes"
                ))));
            }
            changes.push(Change::Set { key: full, value });
        }
        self.write(|_| Ok((changes, ())))
    }

    fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> KvResult<()> {
        let mut changes = Vec::with_capacity(keys.len());
        for key in keys {
            match self.key(&bucket, &key)? {
                Ok(full) => changes.push(Change::Delete { key: full }),
                Err(err) => return Ok(Err(err)),
            }
        }
        self.write(|_| Ok((changes, ())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Host as _, HostBucket as _};

    static WRITTEN: AtomicU64 = AtomicU64::new(0);

    fn view_for<'a>(table: &'a mut ResourceTable, ns: &'a Namespace) -> KvView<'a> {
        KvView {
            table,
            namespace: ns,
            written: &WRITTEN,
        }
    }

    #[test]
    fn buckets_and_apps_are_isolated() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let a = Namespace::open(&db, "a").unwrap();
        let b = Namespace::open(&db, "b").unwrap();
        let mut table = ResourceTable::new();
        let mut kv = view_for(&mut table, &a);
        let default = kv.open(String::new()).unwrap().unwrap();
        let other_bucket = kv.open("other".into()).unwrap().unwrap();
        kv.set(
            Resource::new_borrow(default.rep()),
            "k".into(),
            b"1".to_vec(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            kv.get(Resource::new_borrow(other_bucket.rep()), "k".into())
                .unwrap()
                .unwrap(),
            None
        );
        assert_eq!(a.get("", "k").unwrap(), Some(b"1".to_vec()));
        assert_eq!(b.get("", "k").unwrap(), None);
        assert!(b.is_empty());
    }

    #[test]
    fn increment_counts_in_decimal_and_refuses_garbage() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let ns = Namespace::open(&db, "a").unwrap();
        let mut table = ResourceTable::new();
        let mut kv = view_for(&mut table, &ns);
        let bucket = kv.open(String::new()).unwrap().unwrap();
        let rep = bucket.rep();
        use atomics::Host as _;
        assert_eq!(
            kv.increment(Resource::new_borrow(rep), "n".into(), 5)
                .unwrap()
                .unwrap(),
            5
        );
        assert_eq!(
            kv.increment(Resource::new_borrow(rep), "n".into(), 2)
                .unwrap()
                .unwrap(),
            7
        );
        assert_eq!(ns.get("", "n").unwrap(), Some(b"7".to_vec()));
        kv.set(Resource::new_borrow(rep), "s".into(), b"text".to_vec())
            .unwrap()
            .unwrap();
        assert!(
            kv.increment(Resource::new_borrow(rep), "s".into(), 1)
                .unwrap()
                .is_err()
        );
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(kv.get(Resource::new_borrow(rep), long).unwrap().is_err());
    }

    #[test]
    fn list_keys_pages() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let ns = Namespace::open(&db, "a").unwrap();
        let mut table = ResourceTable::new();
        let mut kv = view_for(&mut table, &ns);
        let bucket = kv.open("b".into()).unwrap().unwrap();
        let rep = bucket.rep();
        for i in 0..(PAGE + 5) {
            kv.set(Resource::new_borrow(rep), format!("k{i:05}"), vec![1])
                .unwrap()
                .unwrap();
        }
        let first = kv
            .list_keys(Resource::new_borrow(rep), None)
            .unwrap()
            .unwrap();
        assert_eq!(first.keys.len(), PAGE);
        let second = kv
            .list_keys(Resource::new_borrow(rep), first.cursor)
            .unwrap()
            .unwrap();
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
    }
}
