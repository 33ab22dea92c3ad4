//! Seals: the signature of the home member that wrote a version of a task record.
//!
//! Every change a primary makes to a record (its state, holder, epoch, attempts, outcome) is
//! sealed: the primary signs the new version, and the record travels and is stored with its
//! [`Seal`] as a [`SealedRecord`]. A member takes a record only if its seal verifies and names one
//! of the task's home members, so a peer cannot forge a result or a state for a task it has no role
//! in, and a record flipped on disk is refused when it is read back. Together with the task's
//! signed spec (which names the submitter, the client and the home set) a sealed record is a proof
//! anyone can check: who accepted the task, where it was placed and ran at which epochs, and who
//! recorded the result.
//!
//! Signing is the costly part, so the records changed in one input are sealed together: their
//! digests are the leaves of a Merkle tree, the signer signs the root once, and each record carries
//! the path from its leaf to the root. A receiver verifies a root's signature once per batch
//! ([`Verifier`] remembers recent roots) and each record's path with a few hashes.
//!
//! Owns the digest, the tree and the signature; who may seal which record is the scheduler's rule.

use std::collections::VecDeque;

use bincode::{Decode, Encode};
use sha2::{Digest, Sha256};

use crate::identity::{KeyCache, Keypair, PeerKey, Signature};
use crate::record::TaskRecord;
use crate::wire::{self, WireError};

/// Domain prefix of a record's digest.
const DIGEST_DOMAIN: &[u8] = b"taskswarm/record/v1";
/// Domain prefix of what a sealer signs: the tree's size and root.
const SEAL_DOMAIN: &[u8] = b"taskswarm/record-seal/v1";
/// The most records one seal may cover (a tree of 2²⁰ leaves; a path of 20 hashes).
const MAX_BATCH: u32 = 1 << 20;
/// How many verified roots a [`Verifier`] remembers.
const REMEMBERED_ROOTS: usize = 256;

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The signature over one version of a record, as part of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Seal {
    /// Who sealed it (a member of the task's home set).
    pub signer: PeerKey,
    /// How many records the batch sealed.
    pub count: u32,
    /// This record's place in the batch.
    pub index: u32,
    /// The sibling hashes from this record's leaf up to the root.
    pub path: Vec<Hash>,
    /// The signer's signature over the batch's size and root.
    pub signature: Signature,
}

/// A record with the seal of the member that wrote this version: how records travel and are
/// stored.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SealedRecord {
    /// The record.
    pub record: TaskRecord,
    /// Its seal.
    pub seal: Seal,
}

/// The digest of a record version: what a seal covers.
pub fn digest(record: &TaskRecord) -> Hash {
    digest_of_bytes(&wire::encode(record))
}

/// The digest of a record version from its encoding.
pub fn digest_of_bytes(record_bytes: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(DIGEST_DOMAIN);
    hasher.update(record_bytes);
    hasher.finalize().into()
}

fn leaf(digest: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(digest);
    hasher.finalize().into()
}

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

fn signing_input(count: u32, root: &Hash) -> Vec<u8> {
    let mut input = Vec::with_capacity(SEAL_DOMAIN.len() + 4 + 32);
    input.extend_from_slice(SEAL_DOMAIN);
    input.extend_from_slice(&count.to_le_bytes());
    input.extend_from_slice(root);
    input
}

/// Seals a batch of record digests with one signature: one [`Seal`] per digest, in order.
pub fn seal(key: &Keypair, digests: &[Hash]) -> Vec<Seal> {
    let count = digests.len().min(MAX_BATCH as usize);
    if count == 0 {
        return Vec::new();
    }
    let mut levels: Vec<Vec<Hash>> = vec![digests[..count].iter().map(leaf).collect()];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let above = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node(l, r),
                [only] => *only,
                _ => [0; 32],
            })
            .collect();
        levels.push(above);
    }
    let root = levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or([0; 32]);
    let count = count as u32;
    let signature = key.sign(&signing_input(count, &root));
    (0..count as usize)
        .map(|index| {
            let mut path = Vec::new();
            let mut at = index;
            for level in &levels[..levels.len() - 1] {
                if let Some(sibling) = level.get(at ^ 1) {
                    path.push(*sibling);
                }
                at /= 2;
            }
            Seal {
                signer: key.public(),
                count,
                index: index as u32,
                path,
                signature,
            }
        })
        .collect()
}

impl Seal {
    /// The root this seal's path leads to from `digest`, if the path fits the batch's shape.
    fn root(&self, digest: &Hash) -> Result<Hash, WireError> {
        if self.count == 0 || self.count > MAX_BATCH || self.index >= self.count {
            return Err(WireError::BadSeal("its place in the batch is impossible"));
        }
        let mut hash = leaf(digest);
        let mut path = self.path.iter();
        let (mut at, mut width) = (self.index as usize, self.count as usize);
        while width > 1 {
            if (at ^ 1) < width {
                let sibling = path
                    .next()
                    .ok_or(WireError::BadSeal("its path is too short"))?;
                hash = if at % 2 == 0 {
                    node(&hash, sibling)
                } else {
                    node(sibling, &hash)
                };
            }
            at /= 2;
            width = width.div_ceil(2);
        }
        if path.next().is_some() {
            return Err(WireError::BadSeal("its path is too long"));
        }
        Ok(hash)
    }
}

impl SealedRecord {
    /// Checks that the seal covers this exact record version and that its signer signed it
    /// (without remembering anything: see [`Verifier`] for many records).
    pub fn verify(&self) -> Result<(), WireError> {
        Verifier::default().verify(self)
    }

    /// Checks everything a reader of this record can check on its own: the task's spec (its
    /// submitter's signature, that the id is its hash, that the home set is the signed one or a
    /// repair of it) and the seal (it covers this version, and a member of the record's home set
    /// signed it). Returns the decoded spec.
    pub fn check(&self) -> Result<crate::task::TaskSpec, WireError> {
        let spec = crate::task::Task::from_envelope(self.record.envelope.clone())?.spec;
        if !self.record.home().contains(&self.seal.signer) {
            return Err(WireError::BadSeal("sealed by a peer outside the home set"));
        }
        self.verify()?;
        Ok(spec)
    }

    /// The stored form.
    pub fn to_bytes(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Reads a stored or received sealed record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        wire::decode(bytes)
    }
}

/// Verifies seals, remembering the roots whose signatures it has checked recently, so that a
/// batch of records sealed together costs one signature verification.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    verified: VecDeque<(PeerKey, u32, Hash, Signature)>,
    keys: KeyCache,
}

impl Verifier {
    /// The public keys this verifier keeps decompressed, for other signatures to use.
    pub fn keys(&mut self) -> &mut KeyCache {
        &mut self.keys
    }

    /// Checks that `sealed`'s seal covers its record and was signed by the signer it names.
    pub fn verify(&mut self, sealed: &SealedRecord) -> Result<(), WireError> {
        self.verify_digest(&digest(&sealed.record), &sealed.seal)
    }

    /// Checks a seal against a record digest.
    pub fn verify_digest(&mut self, digest: &Hash, seal: &Seal) -> Result<(), WireError> {
        let root = seal.root(digest)?;
        let known = (seal.signer, seal.count, root, seal.signature);
        if self.verified.contains(&known) {
            return Ok(());
        }
        self.keys
            .verify(
                &seal.signer,
                &signing_input(seal.count, &root),
                &seal.signature,
            )
            .map_err(|_| WireError::BadSeal("its signature does not verify"))?;
        if self.verified.len() >= REMEMBERED_ROOTS {
            self.verified.pop_front();
        }
        self.verified.push_back(known);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(n: u8) -> Vec<Hash> {
        (0..n).map(|i| [i; 32]).collect()
    }

    #[test]
    fn every_record_of_a_batch_of_any_size_verifies_with_one_signature() {
        let key = Keypair::from_secret([3; 32]);
        for n in [1u8, 2, 3, 5, 8, 13, 64] {
            let seals = seal(&key, &digests(n));
            assert_eq!(seals.len(), n as usize);
            let mut verifier = Verifier::default();
            for (d, s) in digests(n).iter().zip(&seals) {
                verifier.verify_digest(d, s).unwrap();
            }
            assert_eq!(verifier.verified.len(), 1, "one root per batch");
        }
    }

    #[test]
    fn a_changed_record_a_moved_seal_or_another_signer_fails() {
        let key = Keypair::from_secret([3; 32]);
        let seals = seal(&key, &digests(5));
        let mut v = Verifier::default();
        assert!(
            v.verify_digest(&[9; 32], &seals[0]).is_err(),
            "another record"
        );
        assert!(
            v.verify_digest(&[1; 32], &seals[0]).is_err(),
            "another's seal"
        );
        let mut forged = seals[2].clone();
        forged.signer = Keypair::from_secret([4; 32]).public();
        assert!(
            v.verify_digest(&[2; 32], &forged).is_err(),
            "another signer"
        );
        let mut short = seals[2].clone();
        short.path.pop();
        assert!(v.verify_digest(&[2; 32], &short).is_err(), "a cut path");
        let mut moved = seals[2].clone();
        moved.index = 9;
        assert!(
            v.verify_digest(&[2; 32], &moved).is_err(),
            "outside the batch"
        );
        v.verify_digest(&[2; 32], &seals[2]).unwrap();
    }
}
