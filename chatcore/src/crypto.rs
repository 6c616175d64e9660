//! Encryption at rest of provider API keys.
//!
//! AES-256-GCM with a fresh 96-bit random nonce per value; the tenant id is
//! the associated data, so a sealed value copied into another tenant's row
//! does not open. Every sealed value records the id of the master key that
//! sealed it (the first 8 bytes of the key's SHA-256, hex), so the keyring can
//! hold older keys for reading while new values are sealed with the current
//! one: rotation is "add a new current key, keep the old one until every
//! value has been re-sealed" ([`Keyring::reseal`]).

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::domain::{SealedKey, TenantId};

const NONCE_LEN: usize = 12;

/// Errors of the keyring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// A master key is not 32 bytes of base64.
    #[error("a master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    /// The value was sealed with a master key the keyring does not hold.
    #[error("sealed with unknown master key {0}")]
    UnknownKeyId(String),
    /// The value does not open: corrupted, or moved from another tenant.
    #[error("sealed value failed authentication")]
    Tampered,
}

/// The master keys: one current key that seals, any number that open.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
    /// Base of [`Keyring::derive_key`]: a hash of the current key, never
    /// the key itself.
    derive_base: [u8; 32],
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<_> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("key_ids", &ids)
            .finish()
    }
}

fn key_id(raw: &[u8]) -> String {
    hex::encode(&Sha256::digest(raw)[..8])
}

impl Keyring {
    /// A keyring from raw 32-byte keys: `current` seals, `older` only open.
    pub fn from_raw(current: [u8; 32], older: &[[u8; 32]]) -> Self {
        let mut keys = HashMap::new();
        let current_id = key_id(&current);
        keys.insert(current_id.clone(), Aes256Gcm::new(&current.into()));
        for k in older {
            keys.insert(key_id(k), Aes256Gcm::new(&(*k).into()));
        }
        let mut h = Sha256::new();
        h.update(b"chatcore key derivation v1\0");
        h.update(current);
        Self {
            current: current_id,
            keys,
            derive_base: h.finalize().into(),
        }
    }

    /// A 32-byte key for `purpose` (e.g. signing widget visitor tokens),
    /// derived from the current master key: HMAC-SHA256 over the purpose,
    /// keyed with a hash of the master key. A new master key derives new
    /// keys, so what they signed stops verifying.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.derive_base)
            .expect("HMAC takes a key of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A keyring from base64 keys, as configured (`CHATCORE_MASTER_KEY`
    /// and the comma-separated `CHATCORE_MASTER_KEYS_OLD`).
    pub fn from_base64(
        current: &SecretString,
        older: &[SecretString],
    ) -> Result<Self, CryptoError> {
        let decode = |s: &SecretString| -> Result<[u8; 32], CryptoError> {
            let v = STANDARD
                .decode(s.expose_secret().trim())
                .map_err(|_| CryptoError::BadMasterKey)?;
            v.try_into().map_err(|_| CryptoError::BadMasterKey)
        };
        let cur = decode(current)?;
        let old = older.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_raw(cur, &old))
    }

    /// A new random master key, base64-encoded (for first start and the CLI).
    pub fn generate_base64() -> SecretString {
        let mut k = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut k)
            .expect("the operating system's random number generator failed");
        SecretString::from(STANDARD.encode(k))
    }

    /// Id of the key that seals new values.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    /// Seals `plaintext` for `tenant`.
    pub fn seal(&self, tenant: TenantId, plaintext: &SecretString) -> SealedKey {
        let cipher = &self.keys[&self.current];
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .expect("the operating system's random number generator failed");
        let aad = tenant.0.as_bytes();
        let secret = plaintext.expose_secret();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad,
                },
            )
            .expect("AES-GCM encryption of a short value cannot fail");
        let mut ciphertext = nonce.to_vec();
        ciphertext.extend_from_slice(&ct);
        SealedKey {
            key_id: self.current.clone(),
            ciphertext,
            last4: shown_last4(secret),
        }
    }

    /// Opens a value sealed for `tenant`.
    pub fn open(&self, tenant: TenantId, sealed: &SealedKey) -> Result<SecretString, CryptoError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(sealed.key_id.clone()))?;
        if sealed.ciphertext.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Tampered);
        }
        let (nonce, ct) = sealed.ciphertext.split_at(NONCE_LEN);
        let pt = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: tenant.0.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Tampered)
    }

    /// Re-seals a value with the current key if an older key sealed it
    /// (None when it is already current).
    pub fn reseal(
        &self,
        tenant: TenantId,
        sealed: &SealedKey,
    ) -> Result<Option<SealedKey>, CryptoError> {
        if sealed.key_id == self.current {
            return Ok(None);
        }
        let plain = self.open(tenant, sealed)?;
        Ok(Some(self.seal(tenant, &plain)))
    }
}

/// Shortest secret whose last 4 characters are kept to be shown: of a
/// shorter one, 4 characters are too large a part.
pub const MIN_CHARS_TO_SHOW_LAST4: usize = 12;

/// What [`Keyring::seal`] keeps to show of a secret: its last 4 characters,
/// or nothing (an empty string) when it is shorter than
/// [`MIN_CHARS_TO_SHOW_LAST4`].
pub fn shown_last4(secret: &str) -> String {
    if secret.chars().count() < MIN_CHARS_TO_SHOW_LAST4 {
        String::new()
    } else {
        last4(secret)
    }
}

/// The last 4 characters of a secret.
pub fn last4(secret: &str) -> String {
    let n = secret.chars().count();
    secret.chars().skip(n.saturating_sub(4)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_raw([7u8; 32], &[])
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let r = ring();
        let t = TenantId::new();
        let s = SecretString::from("sk-test-abcdef123456".to_string());
        let a = r.seal(t, &s);
        let b = r.seal(t, &s);
        assert_ne!(a.ciphertext, b.ciphertext, "fresh nonce per value");
        assert_eq!(a.last4, "3456");
        assert_eq!(
            r.open(t, &a).unwrap().expose_secret(),
            "sk-test-abcdef123456"
        );
        assert!(!a.ciphertext.windows(6).any(|w| w == b"abcdef"));
    }

    #[test]
    fn another_tenant_or_a_flipped_bit_does_not_open() {
        let r = ring();
        let t = TenantId::new();
        let mut sealed = r.seal(t, &SecretString::from("secret-value".to_string()));
        assert_eq!(
            r.open(TenantId::new(), &sealed).unwrap_err(),
            CryptoError::Tampered
        );
        let last = sealed.ciphertext.len() - 1;
        sealed.ciphertext[last] ^= 1;
        assert_eq!(r.open(t, &sealed).unwrap_err(), CryptoError::Tampered);
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_reseals() {
        let t = TenantId::new();
        let old = Keyring::from_raw([1u8; 32], &[]);
        let sealed = old.seal(t, &SecretString::from("old-secret".to_string()));
        let rotated = Keyring::from_raw([2u8; 32], &[[1u8; 32]]);
        assert_eq!(
            rotated.open(t, &sealed).unwrap().expose_secret(),
            "old-secret"
        );
        let resealed = rotated.reseal(t, &sealed).unwrap().expect("needs reseal");
        assert_eq!(resealed.key_id, rotated.current_key_id());
        assert!(rotated.reseal(t, &resealed).unwrap().is_none());
        let only_new = Keyring::from_raw([2u8; 32], &[]);
        assert!(matches!(
            only_new.open(t, &sealed),
            Err(CryptoError::UnknownKeyId(_))
        ));
        assert_eq!(
            only_new.open(t, &resealed).unwrap().expose_secret(),
            "old-secret"
        );
    }

    #[test]
    fn base64_keys_and_debug() {
        let k = Keyring::generate_base64();
        let r = Keyring::from_base64(&k, &[]).unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains(k.expose_secret()));
        assert_eq!(
            Keyring::from_base64(&SecretString::from("c2hvcnQ=".to_string()), &[]).unwrap_err(),
            CryptoError::BadMasterKey
        );
    }

    #[test]
    fn last4_handles_short_and_unicode() {
        assert_eq!(last4("ab"), "ab");
        assert_eq!(shown_last4("short-key"), "", "under 12 characters: nothing");
        assert_eq!(shown_last4("sk-0123456789"), "6789");
        let r = ring();
        let t = TenantId::new();
        assert_eq!(r.seal(t, &SecretString::from("abcd".to_string())).last4, "");
        assert_eq!(last4("xxxxé☃ab"), "é☃ab");
    }
}
