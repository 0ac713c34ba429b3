//! Static sites: the bundles `fog publish DIR` uploads (stored by sha256 beside components), and
//! which app serves which bundle.

use std::sync::Arc;

use bytes::Bytes;
use fog_proto::auth;
use fog_proto::bundle::{self, MAX_BUNDLE_BYTES};

use crate::Control;
use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{AppRecord, StoreError, Table, decode};

impl Control {
    /// `POST /v1/bundles`: a developer uploads a site bundle; it is checked (manifest, paths,
    /// sizes) and stored by its sha256. Bundles over [`MAX_BUNDLE_BYTES`] get 413.
    pub(crate) async fn store_bundle<B>(self: &Arc<Self>, request: http::Request<B>) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (_signer, body, _) =
            self.signed(request, MAX_BUNDLE_BYTES)
                .await
                .map_err(|e| match e {
                    ApiError::TooLarge(_) => ApiError::TooLarge(format!(
                        "site bundle larger than the limit of {MAX_BUNDLE_BYTES} bytes"
                    )),
                    other => other,
                })?;
        let (manifest, _) = bundle::parse(&body).map_err(|e| match e {
            bundle::BundleError::TooLarge(_) => ApiError::TooLarge(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        })?;
        let sha256 = auth::sha256_hex(&body);
        self.store.put(Table::Blobs, &sha256, &body)?;
        self.store.flush()?;
        self.replicate_blob(&sha256).await?;
        tracing::info!(
            sha256,
            files = manifest.files.len(),
            bytes = body.len(),
            "site bundle stored"
        );
        Ok(json(
            201,
            &serde_json::json!({ "sha256": sha256, "size": body.len(), "files": manifest.files.len() }),
        ))
    }

    /// The bundle `app` serves, if it is a static site.
    pub(crate) fn site_bundle(&self, app: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(Table::Sites, app)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Record that `app` serves `bundle` (or nothing); refuses a bundle that was not uploaded.
    pub(crate) fn link_site(&self, app: &str, bundle: Option<&str>) -> Result<(), ApiError> {
        let previous = self.site_bundle(app)?;
        match bundle {
            Some(sha) => {
                if self.store.get(Table::Blobs, sha)?.is_none() {
                    return Err(ApiError::BadRequest(format!(
                        "no bundle {sha}: upload it to /v1/bundles first"
                    )));
                }
                self.store.put(Table::Sites, app, sha.as_bytes())?;
            }
            None => self.store.delete(Table::Sites, app)?,
        }
        if let Some(old) = previous
            && Some(old.as_str()) != bundle
        {
            self.drop_bundle_if_unused(&old)?;
        }
        Ok(())
    }

    /// Delete `sha` from the blobs unless an app still serves it (as bundle or component).
    pub(crate) fn drop_bundle_if_unused(&self, sha: &str) -> Result<(), ApiError> {
        let as_site = self
            .store
            .list(Table::Sites)?
            .iter()
            .any(|(_, v)| v.as_slice() == sha.as_bytes());
        let as_component =
            self.store.list(Table::Apps)?.iter().any(|(k, v)| {
                decode::<AppRecord>(Table::Apps, k, v).is_ok_and(|a| a.sha256 == sha)
            });
        if !as_site && !as_component {
            self.store.delete(Table::Blobs, sha)?;
        }
        Ok(())
    }
}
