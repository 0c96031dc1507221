//! The apps' database passwords shared by every host of a cluster, without a
//! shared disk: sealed with the cluster key (AES-256-GCM, the key given to each
//! host as `cluster_key`, the role's name bound in as associated data) in
//! `alorig_cluster.secrets` of the `postgres_url` database. PostgreSQL holds
//! only ciphertext; a host given another key cannot open them and says so.

use crate::config::ClusterKey;
use aes_gcm::{
    Aes256Gcm, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use anyhow::{Result, anyhow};
use sqlx::{Executor as _, PgConnection};

const SCHEMA: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS alorig_cluster",
    "REVOKE ALL ON SCHEMA alorig_cluster FROM PUBLIC",
    "CREATE TABLE IF NOT EXISTS alorig_cluster.secrets (
        name text PRIMARY KEY,
        sealed bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now())",
];

/// Seals and opens secrets with the cluster key.
pub struct Sealer(Aes256Gcm);

impl Sealer {
    pub fn new(key: &ClusterKey) -> Self {
        Self(Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(
            &key.0,
        )))
    }

    /// `nonce (12 bytes) || ciphertext+tag`, bound to `name`.
    fn seal(&self, name: &str, secret: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow!("cannot get random bytes: {e}"))?;
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("cannot seal the secret {name}"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Result<String> {
        let refused = || {
            anyhow!(
                "alorig_cluster.secrets: cluster_key does not open {name} (the hosts were given different keys?)"
            )
        };
        if sealed.len() < 12 {
            return Err(refused());
        }
        let (nonce, body) = sealed.split_at(12);
        let plain = self
            .0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        String::from_utf8(plain).map_err(|_| refused())
    }
}

/// The secret `name` every host shares: the one already in PostgreSQL, or
/// else `proposed()` (this host's own, or a new one) put there. Two hosts
/// proposing at once both end with the one that landed first.
pub(super) async fn shared_secret(
    admin: &mut PgConnection,
    sealer: &Sealer,
    name: &str,
    proposed: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let mut tx = sqlx::Connection::begin(&mut *admin).await?;
    tx.execute("SELECT pg_advisory_xact_lock(7406519263)")
        .await?;
    tx.execute("SET LOCAL client_min_messages = warning")
        .await?;
    for statement in SCHEMA {
        tx.execute(*statement).await?;
    }
    let existing: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT sealed FROM alorig_cluster.secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    let secret = match existing {
        Some((sealed,)) => sealer.open(name, &sealed)?,
        None => {
            let secret = proposed()?;
            sqlx::query("INSERT INTO alorig_cluster.secrets (name, sealed) VALUES ($1, $2)")
                .bind(name)
                .bind(sealer.seal(name, &secret)?)
                .execute(&mut *tx)
                .await?;
            secret
        }
    };
    tx.commit().await?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_name() {
        let key = ClusterKey([7; 32]);
        let sealer = Sealer::new(&key);
        let sealed = sealer.seal("postgres:alorig_a", "s3cret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(sealer.open("postgres:alorig_a", &sealed).unwrap(), "s3cret");
        let err = sealer.open("postgres:alorig_b", &sealed).unwrap_err();
        assert!(
            err.to_string().contains("does not open postgres:alorig_b"),
            "{err}"
        );
        let other = Sealer::new(&ClusterKey([8; 32]));
        assert!(other.open("postgres:alorig_a", &sealed).is_err());
    }
}
