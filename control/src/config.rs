//! Apps' config: `fog config` changes variables and secrets without a new version (held
//! heartbeats wake, hosts swap the config for new instances), and assignments carry the values,
//! secrets opened, to the hosts that run the app.

use std::sync::Arc;

use bytes::Bytes;
use fog_proto::api;
use fog_proto::config::{ConfigChange, ConfigListing, ConfigValues, MAX_CONFIG_ENTRIES, Secret};

use crate::Control;
use crate::api::{Answer, json};
use crate::error::ApiError;
use crate::store::{AppSettings, Table};

/// Refuse settings with more variables and secrets than an app may have.
pub(crate) fn check_count(settings: &AppSettings) -> Result<(), ApiError> {
    let count = settings.vars.len() + settings.secrets.len();
    if count > MAX_CONFIG_ENTRIES {
        return Err(ApiError::BadRequest(format!(
            "an app may have at most {MAX_CONFIG_ENTRIES} variables and secrets; this makes {count}"
        )));
    }
    Ok(())
}

fn listing(settings: &AppSettings) -> ConfigListing {
    ConfigListing {
        vars: settings.vars.clone(),
        secrets: settings.secrets.keys().cloned().collect(),
    }
}

impl Control {
    /// `GET /v1/apps/{name}/config` (signed by the owner): variables with their values, secrets
    /// by name only.
    pub(crate) async fn list_config<B>(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, _, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        self.owned_app(name, &signer)?;
        Ok(json(200, &listing(&self.settings(name)?)))
    }

    /// `POST /v1/apps/{name}/config` (signed by the owner): one [`ConfigChange`]. Running
    /// replicas get it with their next assignment; the app keeps its version.
    pub(crate) async fn change_config<B>(
        self: &Arc<Self>,
        name: &str,
        request: http::Request<B>,
    ) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (signer, body, _) = self.signed(request, api::MAX_JSON_BYTES).await?;
        // serde's message names a position, never the value.
        let change: ConfigChange = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed config change: {e}")))?;
        change.validate().map_err(ApiError::BadRequest)?;
        self.owned_app(name, &signer)?;
        let sealed = match &change {
            ConfigChange::SetSecret { key, value } => Some(
                self.secrets
                    .seal(name, key, value.expose())
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            _ => None,
        };
        let settings = self.update_settings(name, |settings| {
            match &change {
                ConfigChange::Set { key, value } => {
                    settings.secrets.remove(key);
                    settings.vars.insert(key.clone(), value.clone());
                }
                ConfigChange::SetSecret { key, .. } => {
                    settings.vars.remove(key);
                    settings
                        .secrets
                        .insert(key.clone(), sealed.clone().expect("sealed above"));
                }
                ConfigChange::Unset { key } => {
                    let had = settings.vars.remove(key).is_some()
                        | settings.secrets.remove(key).is_some();
                    if !had {
                        return Err(ApiError::NotFound(format!(
                            "{name:?} has no variable or secret named {key:?}"
                        )));
                    }
                }
            }
            check_count(settings)
        })?;
        self.store.flush()?;
        tracing::info!(app = name, key = change.key(), "config changed");
        // Held heartbeats compute their assignments again (the settings table's generation
        // moved, so the plan index is rebuilt).
        self.bump();
        Ok(json(200, &listing(&settings)))
    }

    /// Read-modify-write of `name`'s settings, safe against other control planes writing them
    /// meanwhile (compare-and-swap on the record's revision); `change` may refuse.
    fn update_settings(
        &self,
        name: &str,
        mut change: impl FnMut(&mut AppSettings) -> Result<(), ApiError>,
    ) -> Result<AppSettings, ApiError> {
        let settings = self.update_record(Table::Settings, name, "the config of", |current| {
            let mut settings: AppSettings = current.unwrap_or_default();
            change(&mut settings)?;
            Ok(Some(settings))
        })?;
        Ok(settings.expect("a settings record was just written"))
    }

    /// What `wasi:config/store` gives `app` on the hosts that run it: its variables and its
    /// secrets, opened. A secret that does not open (a control plane given another key) is
    /// left out and logged by name.
    pub(crate) fn config_values(&self, app: &str, settings: &AppSettings) -> ConfigValues {
        let mut values: ConfigValues = settings
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
            .collect();
        for (key, sealed) in &settings.secrets {
            match self.secrets.open(app, key, sealed) {
                Ok(value) => {
                    values.insert(key.clone(), Secret::new(value));
                }
                Err(err) => tracing::warn!(app, key, "{err}"),
            }
        }
        values
    }
}
