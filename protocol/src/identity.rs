//! Peer identities: ed25519 key pairs, the public [`PeerKey`] that every message names, and
//! [`Signature`]s.
//!
//! Owns key generation (from an RNG it is handed), signing and strict verification. It never reads
//! OS randomness and never stores keys: the node decides where a key lives. A [`PeerKey`] is the raw
//! 32-byte ed25519 public key, which maps one-to-one to a libp2p peer id in the node.

use std::fmt;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::RngCore;

/// Length of an ed25519 public key, in bytes.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 secret key seed, in bytes.
pub const SECRET_KEY_LEN: usize = 32;

/// The public identity of a peer (or of a submitting client): an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PeerKey([u8; PUBLIC_KEY_LEN]);

impl PeerKey {
    /// Wraps raw public key bytes. Whether they are a valid curve point is checked on verify.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw public key bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// Verifies `signature` over `message` with this key, rejecting malleable signatures and
    /// weak keys (`verify_strict`).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), BadSignature> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature)
            .map_err(|_| BadSignature)
    }

    /// A short form for logs and tables: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({})", self.short())
    }
}

/// Public keys kept decompressed, so that checking many signatures of the same few peers does not
/// decompress each key again (that is a third of a verification's cost), and the signatures that
/// have verified already, so that a spec a peer meets again (as a home member, then as its
/// holder) is checked once. A signature is remembered by the SHA-256 digest of the key, the
/// signature and the signed message together, so a hit means exactly that triple verified before:
/// the answer is the one verifying again would give. Bounded: past [`KeyCache::CAPACITY`] keys it
/// starts afresh; the verified signatures are kept in two generations of
/// [`KeyCache::VERIFIED_GENERATION`] each, the older dropped when the newer fills.
#[derive(Clone, Debug, Default)]
pub struct KeyCache {
    keys: std::collections::BTreeMap<PeerKey, VerifyingKey>,
    verified: std::collections::BTreeSet<[u8; 32]>,
    verified_before: std::collections::BTreeSet<[u8; 32]>,
}

impl KeyCache {
    /// The most keys kept.
    pub const CAPACITY: usize = 4096;

    /// How many verified signatures one generation holds.
    pub const VERIFIED_GENERATION: usize = 32_768;

    /// Verifies `signature` over `message` by `key`, as [`PeerKey::verify`] does.
    pub fn verify(
        &mut self,
        key: &PeerKey,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), BadSignature> {
        let digest = verified_digest(key, message, signature);
        if self.verified.contains(&digest) || self.verified_before.contains(&digest) {
            return Ok(());
        }
        let verifying = match self.keys.get(key) {
            Some(verifying) => *verifying,
            None => {
                let verifying = VerifyingKey::from_bytes(&key.0).map_err(|_| BadSignature)?;
                if self.keys.len() >= Self::CAPACITY {
                    self.keys.clear();
                }
                self.keys.insert(*key, verifying);
                verifying
            }
        };
        let ed25519 = ed25519_dalek::Signature::from_bytes(&signature.0);
        verifying
            .verify_strict(message, &ed25519)
            .map_err(|_| BadSignature)?;
        self.remember(digest);
        Ok(())
    }

    /// Takes a signature this peer has just made with its own key as verified, so that checking
    /// it later costs nothing. Only for signatures made here: one from elsewhere must be
    /// [`verify`](Self::verify)'d.
    pub fn remember_own(&mut self, key: &PeerKey, message: &[u8], signature: &Signature) {
        self.remember(verified_digest(key, message, signature));
    }

    fn remember(&mut self, digest: [u8; 32]) {
        if self.verified.len() >= Self::VERIFIED_GENERATION {
            self.verified_before = std::mem::take(&mut self.verified);
        }
        self.verified.insert(digest);
    }
}

/// What [`KeyCache`] remembers of a verified signature.
fn verified_digest(key: &PeerKey, message: &[u8], signature: &Signature) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(key.0);
    hasher.update(signature.0);
    hasher.update(message);
    hasher.finalize().into()
}

/// A signature did not verify (or named a key that is not a valid ed25519 point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct BadSignature;

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct Signature([u8; 64]);

impl Signature {
    /// The raw signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// Wraps raw signature bytes.
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..4]))
    }
}

/// A peer's secret signing key with its public key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl Keypair {
    /// Generates a fresh key pair from the RNG it is handed (the node hands it OS randomness;
    /// tests hand it a seeded RNG).
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut seed = [0u8; SECRET_KEY_LEN];
        rng.fill_bytes(&mut seed);
        Self::from_secret(seed)
    }

    /// Rebuilds a key pair from its 32-byte secret seed.
    pub fn from_secret(seed: [u8; SECRET_KEY_LEN]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed, for the node to store (with care).
    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.signing.to_bytes()
    }

    /// The public identity of this key pair.
    pub fn public(&self) -> PeerKey {
        PeerKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &self.public())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let key = Keypair::generate(&mut rng);
        let sig = key.sign(b"hello");
        assert_eq!(key.public().verify(b"hello", &sig), Ok(()));
        assert_eq!(key.public().verify(b"hellp", &sig), Err(BadSignature));
        let other = Keypair::generate(&mut rng);
        assert_eq!(other.public().verify(b"hello", &sig), Err(BadSignature));
    }

    #[test]
    fn the_cache_answers_as_verifying_again_would() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let key = Keypair::generate(&mut rng);
        let other = Keypair::generate(&mut rng);
        let sig = key.sign(b"spec");
        let mut cache = KeyCache::default();
        assert_eq!(cache.verify(&key.public(), b"spec", &sig), Ok(()));
        // Remembered, and nothing near it passes: another message, key or signature.
        assert_eq!(cache.verify(&key.public(), b"spec", &sig), Ok(()));
        assert_eq!(
            cache.verify(&key.public(), b"spek", &sig),
            Err(BadSignature)
        );
        assert_eq!(
            cache.verify(&other.public(), b"spec", &sig),
            Err(BadSignature)
        );
        let mut forged = sig.to_bytes();
        forged[0] ^= 1;
        let forged = Signature::from_bytes(forged);
        assert_eq!(
            cache.verify(&key.public(), b"spec", &forged),
            Err(BadSignature)
        );
        // A failure is not remembered as a success.
        assert_eq!(
            cache.verify(&key.public(), b"spec", &forged),
            Err(BadSignature)
        );
    }

    #[test]
    fn remembered_signatures_are_bounded() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let key = Keypair::generate(&mut rng);
        let bogus = Signature::from_bytes([1; 64]);
        let mut cache = KeyCache::default();
        // Taken on trust, as a peer takes its own fresh signatures: the cache says so...
        cache.remember_own(&key.public(), b"own", &bogus);
        assert_eq!(cache.verify(&key.public(), b"own", &bogus), Ok(()));
        // ...until two generations of others have pushed it out; then it is checked, and fails.
        for i in 0..2 * KeyCache::VERIFIED_GENERATION {
            cache.remember_own(&key.public(), &(i as u64).to_le_bytes(), &bogus);
        }
        assert!(
            cache.verified.len() + cache.verified_before.len() <= 2 * KeyCache::VERIFIED_GENERATION
        );
        assert_eq!(
            cache.verify(&key.public(), b"own", &bogus),
            Err(BadSignature)
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let key = Keypair::from_secret([7; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn secret_round_trips() {
        let key = Keypair::from_secret([9; 32]);
        assert_eq!(
            Keypair::from_secret(key.secret_bytes()).public(),
            key.public()
        );
    }
}
