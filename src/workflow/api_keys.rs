//! API keys: created with scopes and roles (the only copy of the secret goes to the caller,
//! the store keeps its hash), revoked, and authenticated with a short cache so that a busy
//! client costs no database read per request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{
    AUTH_CACHE_TTL, Actor, ApiKeyPrincipal, Scope, WorkflowError, WorkflowService, sha256_hex,
};
use crate::store::{ApiKeyRow, new_id, now_ms};

impl WorkflowService {
    /// Create an API key; returns it with the only copy of the secret key.
    pub async fn create_api_key(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[Scope],
        roles: &[String],
    ) -> Result<(ApiKeyPrincipal, String), WorkflowError> {
        actor.require(Scope::Admin)?;
        if name.trim().is_empty() {
            return Err(WorkflowError::invalid("name", "is empty"));
        }
        if scopes.is_empty() {
            return Err(WorkflowError::invalid("scopes", "name at least one scope"));
        }
        if let Some(role) = roles
            .iter()
            .find(|role| role.is_empty() || role.contains(char::is_whitespace))
        {
            return Err(WorkflowError::invalid(
                "roles",
                format!("{role:?} is not a role name"),
            ));
        }
        let secret: [u8; 32] = rand::random();
        let key = format!("sbk_{}", URL_SAFE_NO_PAD.encode(secret));
        let principal = ApiKeyPrincipal {
            id: new_id(),
            name: name.trim().to_string(),
            scopes: scopes.to_vec(),
            roles: roles.to_vec(),
        };
        self.store
            .insert_api_key(&ApiKeyRow {
                id: principal.id.clone(),
                name: principal.name.clone(),
                key_hash: sha256_hex(key.as_bytes()),
                scopes: scopes
                    .iter()
                    .map(|scope| scope.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                roles: roles.join(" "),
                created_at: now_ms(),
            })
            .await?;
        Ok((principal, key))
    }

    /// Revoke an API key (admin). This server stops honouring it at once; another process
    /// (a server beside the CLI) within [`AUTH_CACHE_TTL`].
    pub async fn revoke_api_key(&self, actor: &Actor, id: &str) -> Result<(), WorkflowError> {
        actor.require(Scope::Admin)?;
        if !self.store.revoke_api_key(id).await? {
            return Err(WorkflowError::not_found(
                "api_key_not_found",
                format!("active API key {id}"),
            ));
        }
        self.auth_cache.retain(|_, (cached, _)| {
            cached
                .api_key_principal()
                .is_none_or(|principal| principal.id != id)
        });
        tracing::info!(key = id, actor = %actor.label(), "API key revoked");
        Ok(())
    }

    /// The actor an API key stands for, or `None` if the key is unknown or revoked. Known keys
    /// are remembered for [`AUTH_CACHE_TTL`], so that a busy client costs no database read
    /// per request.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Actor>, WorkflowError> {
        let hash = sha256_hex(key.as_bytes());
        if let Some(cached) = self.auth_cache.get(&hash)
            && cached.1.elapsed() < AUTH_CACHE_TTL
        {
            return Ok(Some(cached.0.clone()));
        }
        let Some(row) = self.store.api_key_by_hash(&hash).await? else {
            self.auth_cache.remove(&hash);
            return Ok(None);
        };
        let actor = Actor::api_key(ApiKeyPrincipal {
            id: row.id,
            name: row.name,
            scopes: row
                .scopes
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
            roles: row.roles.split_whitespace().map(str::to_string).collect(),
        });
        self.auth_cache
            .insert(hash, (actor.clone(), std::time::Instant::now()));
        Ok(Some(actor))
    }
}
