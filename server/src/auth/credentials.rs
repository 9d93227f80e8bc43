//! API tokens as credentials: how one looks, how it is made and hashed, and
//! how a presented one is checked.
//!
//! A token is `ork_` followed by 43 characters of URL-safe base64: 256 bits
//! from the operating system's CSPRNG. The server stores only its SHA-256
//! (see `state::tokens` for why a fast hash is right here).
//!
//! Checks go through a small cache so that a busy client costs one database
//! read per [`CACHE_TTL`], not one per call. A revocation made through this
//! server drops the entry at once; one made through another replica takes
//! effect here within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};

use crate::state::tokens::{TokenRecord, TokenStore};

/// What every API token starts with; anything else presented as a bearer
/// is taken for an attempt's credential.
pub const PREFIX: &str = "ork_";
/// How long a checked token is trusted without reading it again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries the cache holds at most; it starts over when full.
const CACHE_MAX: usize = 10_000;

/// A fresh token: [`PREFIX`] and 256 random bits.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The stored form of a token: SHA-256, lowercase hex.
pub fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `bearer` has the shape of an API token.
pub fn is_api_token(bearer: &str) -> bool {
    bearer.starts_with(PREFIX)
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No such token (mistyped, from another server, or made up).
    Unknown,
    Expired {
        name: String,
        at: DateTime<Utc>,
    },
    Revoked {
        name: String,
    },
    /// The token store could not be read.
    Unavailable(String),
}

/// Checks presented tokens against the store.
pub struct Verifier {
    store: Arc<dyn TokenStore>,
    cache: Mutex<HashMap<String, (Arc<TokenRecord>, Instant)>>,
}

impl Verifier {
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The token's record when it may be used at `now`.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Arc<TokenRecord>, Rejected> {
        let hash = hash(token);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(record, _)| record.clone());
        let record = match cached {
            Some(record) => record,
            None => {
                let record = self
                    .store
                    .token_by_hash(&hash)
                    .await
                    .map_err(|e| Rejected::Unavailable(e.to_string()))?
                    .ok_or(Rejected::Unknown)?;
                let record = Arc::new(record);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(hash, (record.clone(), Instant::now()));
                record
            }
        };
        if record.revoked_at.is_some() {
            return Err(Rejected::Revoked {
                name: record.name.clone(),
            });
        }
        if let Some(at) = record.expires_at
            && at <= now
        {
            return Err(Rejected::Expired {
                name: record.name.clone(),
                at,
            });
        }
        Ok(record)
    }

    /// Drops what the cache knows of token `id` (after it was revoked here).
    pub fn forget(&self, id: &str) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, (record, _)| record.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a, b);
        assert!(is_api_token(&a));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert!(
            a[PREFIX.len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
