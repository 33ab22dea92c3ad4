//! [`Signed`]: a value carried as the exact bytes its author signed, with the signature.
//!
//! Owns domain separation (each kind of signed value has its own prefix, so a signature over a lease
//! can never pass as a signature over a load report) and the rule that a signed value is verified
//! over the bytes that were received, which must be the value's canonical encoding.

use std::marker::PhantomData;

use bincode::{Decode, Encode};

use crate::identity::{KeyCache, Keypair, PeerKey, Signature};
use crate::wire::{self, WireError};

/// A value that is signed by one peer, named inside the value.
pub trait Signable: Encode + Decode<()> {
    /// The domain-separation prefix for this kind of value.
    const DOMAIN: &'static [u8];
    /// Who must have signed it.
    fn signer(&self) -> PeerKey;
}

/// A signed value: its canonical bytes and a signature over `DOMAIN || bytes`.
#[derive(Encode, Decode)]
pub struct Signed<T> {
    bytes: Vec<u8>,
    signature: Signature,
    _value: PhantomData<T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            signature: self.signature,
            _value: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("bytes", &self.bytes.len())
            .field("signature", &self.signature)
            .finish()
    }
}

fn signing_input(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + bytes.len());
    input.extend_from_slice(domain);
    input.extend_from_slice(bytes);
    input
}

impl<T: Signable> Signed<T> {
    /// Encodes and signs `value`. The key must be the value's signer.
    pub fn sign(value: &T, key: &Keypair) -> Self {
        debug_assert_eq!(value.signer(), key.public(), "signing for someone else");
        let bytes = wire::encode(value);
        let signature = key.sign(&signing_input(T::DOMAIN, &bytes));
        Self {
            bytes,
            signature,
            _value: PhantomData,
        }
    }

    /// Decodes the value and verifies the signature of its signer over the exact bytes carried.
    pub fn open(&self) -> Result<T, WireError> {
        let value: T = wire::decode_canonical(&self.bytes)?;
        value
            .signer()
            .verify(&signing_input(T::DOMAIN, &self.bytes), &self.signature)
            .map_err(|_| WireError::BadSignature)?;
        Ok(value)
    }

    /// Decodes the value without checking its signature: only for a value whose signature was
    /// checked when it came in (a record this peer keeps, or one in an answer the scheduler
    /// verified), to show it to people, or for one this peer signed itself (a grant of its own
    /// that could not be delivered). Never for a decision on bytes received.
    pub fn decode_verified_earlier(&self) -> Result<T, WireError> {
        wire::decode_canonical(&self.bytes)
    }

    /// As [`Signed::open`], with public keys kept decompressed in `keys` between calls.
    pub fn open_cached(&self, keys: &mut KeyCache) -> Result<T, WireError> {
        let value: T = wire::decode_canonical(&self.bytes)?;
        keys.verify(
            &value.signer(),
            &signing_input(T::DOMAIN, &self.bytes),
            &self.signature,
        )
        .map_err(|_| WireError::BadSignature)?;
        Ok(value)
    }

    /// Tells `keys` that this value was just signed here by `signer` (this peer's own key), so
    /// that opening it later skips the signature check. Only for values signed here.
    pub fn remember_own(&self, signer: &PeerKey, keys: &mut KeyCache) {
        keys.remember_own(
            signer,
            &signing_input(T::DOMAIN, &self.bytes),
            &self.signature,
        );
    }

    /// The signed bytes (the canonical encoding of the value).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Builds a signed value from parts as received or forged; only [`Signed::open`] says whether
    /// it is genuine. Tests use it to forge.
    pub fn from_parts(bytes: Vec<u8>, signature: Signature) -> Self {
        Self {
            bytes,
            signature,
            _value: PhantomData,
        }
    }

    /// The signature.
    pub fn signature(&self) -> Signature {
        self.signature
    }
}
