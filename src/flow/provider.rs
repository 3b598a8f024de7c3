//! Which OAuth app an integration uses: the operator's system app for its provider, or the
//! bot's custom authorization profile.

use super::AppState;
use crate::domain::bot::{Integration, ProfileRef};
use crate::domain::session::SessionSpec;
use crate::oauth::Provider;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The integration names an app that is not there (no system app configured, a deleted
    /// profile): a configuration problem the bot's admin must fix.
    #[error("{0}")]
    Misconfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The app an integration uses, system or custom.
pub async fn provider_for(
    state: &AppState,
    integration: &Integration,
) -> Result<Provider, ProviderError> {
    match &integration.profile {
        ProfileRef::System => Provider::resolve(&state.config, integration)
            .map_err(|e| ProviderError::Misconfigured(e.to_string())),
        ProfileRef::Custom(id) => {
            let profile = state
                .store
                .get_profile(&integration.bot, id)
                .await?
                .ok_or_else(|| {
                    ProviderError::Misconfigured(format!(
                        "authorization profile {id} does not exist"
                    ))
                })?;
            Provider::custom(&state.config, integration, &profile)
                .map_err(|e| ProviderError::Misconfigured(e.to_string()))
        }
    }
}

/// The name of the app an integration uses, checked as [`provider_for`] checks it (a missing app
/// is `Misconfigured`) but, for a system app, without building it: a token request only needs
/// the app's endpoints and secret when it refreshes.
pub async fn app_id(state: &AppState, integration: &Integration) -> Result<String, ProviderError> {
    match &integration.profile {
        ProfileRef::System => Provider::config_id(&state.config, integration)
            .map_err(|e| ProviderError::Misconfigured(e.to_string())),
        // A custom profile is only known to exist (and its secret to open) by reading it.
        ProfileRef::Custom(_) => Ok(provider_for(state, integration).await?.config_id),
    }
}

/// The app a session's attempts go to: its integration's, if that still uses the app the session
/// was created for (`None`: the integration is gone or now uses another app).
pub async fn session_provider(
    state: &AppState,
    spec: &SessionSpec,
) -> Result<Option<Provider>, StoreError> {
    let Some(integration) = state
        .store
        .get_integration(&spec.bot, &spec.integration)
        .await?
    else {
        return Ok(None);
    };
    Ok(provider_for(state, &integration)
        .await
        .ok()
        .filter(|p| p.config_id == spec.provider_config))
}
