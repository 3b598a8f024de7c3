//! Key material and the primitives built on it: HMAC signing keys (links, state tokens),
//! AEAD encryption keys (tokens and secrets at rest), random tokens and hashes.
//!
//! Both key sets are ordered lists with key ids: the first key signs/encrypts, every key still
//! verifies/decrypts. That is the whole rotation story: prepend a new key, keep the old one until
//! nothing signed with it is alive.

use aes_gcm::aead::{Aead, KeyInit as _, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// A 256-bit key with its id. The bytes are a `SecretSlice`: never printed, zeroed on drop.
#[derive(Clone)]
pub struct KeyEntry {
    pub id: String,
    bytes: SecretSlice<u8>,
    /// HMAC state with the key already absorbed: signing clones it instead of hashing the key
    /// pads again for every link (two SHA-256 blocks saved on the hot path).
    hmac: HmacSha256,
    /// The AES-256-GCM cipher with its key schedule expanded once (every token request opens a
    /// sealed value; expanding the key each time was a third of that). It lives as long as the
    /// key itself, and no longer leaves a schedule behind on a stack at every seal and open.
    aead: Aes256Gcm,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key id {0:?} must be 1-16 characters of a-z, A-Z, 0-9")]
    BadId(String),
    #[error("key {0:?} must be 32 bytes encoded as base64 (as printed by `authlink keygen`)")]
    BadKey(String),
    #[error("key id {0:?} appears twice")]
    Duplicate(String),
    #[error("at least one key is required")]
    Empty,
}

impl KeyEntry {
    pub fn parse(id: &str, b64: &str) -> Result<Self, KeyError> {
        if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyError::BadId(id.to_owned()));
        }
        let bytes = STANDARD
            .decode(b64.trim())
            .or_else(|_| URL_SAFE_NO_PAD.decode(b64.trim()))
            .map_err(|_| KeyError::BadKey(id.to_owned()))?;
        if bytes.len() != 32 {
            return Err(KeyError::BadKey(id.to_owned()));
        }
        let hmac = <HmacSha256 as KeyInit>::new_from_slice(&bytes)
            .expect("HMAC accepts keys of any length");
        let aead = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes));
        Ok(Self {
            id: id.to_owned(),
            bytes: bytes.into(),
            hmac,
            aead,
        })
    }

    /// A fresh random key (keygen, and the ephemeral keys of an unconfigured dev run).
    pub fn generate() -> (String, String) {
        let id = format!("k{}", hex(&random_bytes::<3>()));
        (id, STANDARD.encode(random_bytes::<32>()))
    }

    fn secret(&self) -> &[u8] {
        self.bytes.expose_secret()
    }
}

fn check_list(keys: &[KeyEntry]) -> Result<(), KeyError> {
    if keys.is_empty() {
        return Err(KeyError::Empty);
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.id == k.id) {
            return Err(KeyError::Duplicate(k.id.clone()));
        }
    }
    Ok(())
}

/// HMAC keys for links and state tokens.
#[derive(Clone, Debug)]
pub struct SigningKeys(Vec<KeyEntry>);

impl SigningKeys {
    pub fn new(keys: Vec<KeyEntry>) -> Result<Self, KeyError> {
        check_list(&keys)?;
        Ok(Self(keys))
    }
    pub fn current(&self) -> &KeyEntry {
        &self.0[0]
    }
    pub fn find(&self, id: &str) -> Option<&KeyEntry> {
        self.0.iter().find(|k| k.id == id)
    }

    /// HMAC-SHA256 over `parts` with the key `kid`, truncated to `N` bytes.
    pub fn mac<const N: usize>(&self, key: &KeyEntry, domain: &str, parts: &[&[u8]]) -> [u8; N] {
        let mut mac = key.hmac.clone();
        // Domain separation: a link tag can never be replayed as anything else.
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        for p in parts {
            mac.update(p);
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; N];
        out.copy_from_slice(&full[..N]);
        out
    }

    /// Constant-time check of a truncated MAC.
    pub fn verify_mac<const N: usize>(
        &self,
        kid: &str,
        domain: &str,
        parts: &[&[u8]],
        tag: &[u8],
    ) -> bool {
        let Some(key) = self.find(kid) else {
            return false;
        };
        let expected: [u8; N] = self.mac(key, domain, parts);
        subtle::ConstantTimeEq::ct_eq(&expected[..], tag).into()
    }

    pub fn jwt_encoding_key(&self) -> (String, jsonwebtoken::EncodingKey) {
        let k = self.current();
        let key = jsonwebtoken::EncodingKey::from_secret(k.secret())
            .expect("keys are 32 bytes, never empty");
        (k.id.clone(), key)
    }
    pub fn jwt_decoding_key(&self, kid: &str) -> Option<jsonwebtoken::DecodingKey> {
        self.find(kid)
            .and_then(|k| jsonwebtoken::DecodingKey::from_secret(k.secret()).ok())
    }
}

/// AEAD keys for data at rest. Sealed values are `kid.base64url(nonce || ciphertext || tag)`;
/// the associated data names the record the value belongs to, so a sealed value copied to another
/// record does not decrypt.
#[derive(Clone, Debug)]
pub struct EncryptionKeys(Vec<KeyEntry>);

#[derive(Debug, thiserror::Error)]
#[error("sealed value cannot be opened (unknown key id, wrong record, or corrupted)")]
pub struct OpenError;

impl EncryptionKeys {
    pub fn new(keys: Vec<KeyEntry>) -> Result<Self, KeyError> {
        check_list(&keys)?;
        Ok(Self(keys))
    }

    /// The key that seals (the first).
    pub fn current(&self) -> &KeyEntry {
        &self.0[0]
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> String {
        let key = &self.0[0];
        let cipher = &key.aead;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = format!("{}|{}", key.id, aad);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of in-memory data cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{}.{}", key.id, URL_SAFE_NO_PAD.encode(blob))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let (kid, b64) = sealed.split_once('.').ok_or(OpenError)?;
        let key = self.0.iter().find(|k| k.id == kid).ok_or(OpenError)?;
        let blob = URL_SAFE_NO_PAD.decode(b64).map_err(|_| OpenError)?;
        if blob.len() < 12 + 16 {
            return Err(OpenError);
        }
        let (nonce, ct) = blob.split_at(12);
        let cipher = &key.aead;
        let aad = [kid.as_bytes(), b"|", aad.as_bytes()].concat();
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| OpenError)
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A random token of `N` bytes, base64url without padding.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Constant-time string comparison (codes, hashes).
pub fn ct_eq(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn keys(ids: &[&str]) -> Vec<KeyEntry> {
        ids.iter()
            .map(|id| KeyEntry::parse(id, &KeyEntry::generate().1).unwrap())
            .collect()
    }

    #[test]
    fn sealed_values_open_only_with_their_record_and_a_known_key() {
        let ks = keys(&["new", "old"]);
        let old_only = EncryptionKeys::new(vec![ks[1].clone()]).unwrap();
        let rotated = EncryptionKeys::new(ks.clone()).unwrap();
        let sealed = old_only.seal("grant:a", b"secret");
        assert!(!sealed.contains("secret"));
        assert_eq!(rotated.open("grant:a", &sealed).unwrap(), b"secret");
        assert!(rotated.open("grant:b", &sealed).is_err(), "other record");
        let new_only = EncryptionKeys::new(vec![ks[0].clone()]).unwrap();
        assert!(new_only.open("grant:a", &sealed).is_err(), "retired key");
        assert!(rotated.seal("x", b"y").starts_with("new."));
    }

    #[test]
    fn key_parsing_explains_problems() {
        assert_eq!(
            KeyEntry::parse("k1", "c2hvcnQ=").unwrap_err(),
            KeyError::BadKey("k1".into())
        );
        assert!(matches!(
            KeyEntry::parse("a.b", &KeyEntry::generate().1),
            Err(KeyError::BadId(_))
        ));
        assert!(matches!(
            SigningKeys::new(keys(&["a", "a"])),
            Err(KeyError::Duplicate(_))
        ));
    }

    #[test]
    fn truncated_macs_verify_with_any_listed_key() {
        let ks = SigningKeys::new(keys(&["k2", "k1"])).unwrap();
        let old = ks.find("k1").unwrap();
        let tag: [u8; 16] = ks.mac(old, "link", &[b"abc"]);
        assert!(ks.verify_mac::<16>("k1", "link", &[b"abc"], &tag));
        assert!(!ks.verify_mac::<16>("k1", "state", &[b"abc"], &tag));
        assert!(!ks.verify_mac::<16>("k2", "link", &[b"abc"], &tag));
        assert!(!ks.verify_mac::<16>("zz", "link", &[b"abc"], &tag));
    }
}
