//! Leases: signed statements that a peer holds a task at an epoch.
//!
//! A [`Lease`] names the task, its epoch (a fencing token that only grows), the holder, the peer
//! that granted it and its time to live. An epoch has two parts, written `major.minor` and packed
//! into one number (`major · 2³² + minor`) so that it compares as a pair: the task's primary
//! raises the major part whenever it grants a lease (placement, retry, re-claim), a victim raises
//! the minor part when it hands the task to a thief. So a primary that re-claims a task from a
//! holder it believes dead never grants an epoch that a steal it has not heard of already used. Leases travel in a [`Grant`], one signature over a batch
//! (signing is the costly part, so a steal of 50 tasks is signed once). The TTL is relative: each
//! observer measures it on its own monotonic clock from when it last heard the holder, so no two
//! wall clocks are ever compared. This module checks grants; who may grant what is the
//! scheduler's rule.

use bincode::{Decode, Encode};

use crate::identity::PeerKey;
use crate::signed::{Signable, Signed};
use crate::task::TaskId;
use crate::wire::WireError;

/// The epoch a primary grants after `epoch`: the next major epoch.
pub fn next_major(epoch: u64) -> u64 {
    ((epoch >> 32) + 1) << 32
}

/// The epoch a victim grants a thief after `epoch`: the next minor epoch.
pub fn next_minor(epoch: u64) -> u64 {
    epoch + 1
}

/// An epoch as people read it: `major.minor`.
pub fn show_epoch(epoch: u64) -> String {
    format!("{}.{}", epoch >> 32, epoch & 0xffff_ffff)
}

/// One task's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Lease {
    /// The task.
    pub task: TaskId,
    /// The fencing token: every hand-over gives the new holder a higher epoch.
    pub epoch: u64,
    /// Who holds (runs or queues) the task.
    pub holder: PeerKey,
    /// Who granted the lease and signed it.
    pub granted_by: PeerKey,
    /// How long the lease lives after the holder was last heard from, in milliseconds.
    pub ttl_ms: u32,
}

/// A batch of leases granted, and signed, by one peer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Grant {
    /// The granting peer; every lease in the batch names it.
    pub granted_by: PeerKey,
    /// The leases.
    pub leases: Vec<Lease>,
}

impl Signable for Grant {
    const DOMAIN: &'static [u8] = b"taskswarm/grant/v1";
    fn signer(&self) -> PeerKey {
        self.granted_by
    }
}

/// A grant as it travels.
pub type SignedGrant = Signed<Grant>;

impl SignedGrant {
    /// Verifies the signature and that every lease names the signer as its granter.
    pub fn verify(&self) -> Result<Grant, WireError> {
        self.verify_cached(&mut crate::identity::KeyCache::default())
    }

    /// As [`SignedGrant::verify`], with public keys kept decompressed in `keys`.
    pub fn verify_cached(&self, keys: &mut crate::identity::KeyCache) -> Result<Grant, WireError> {
        let grant = self.open_cached(keys)?;
        if grant
            .leases
            .iter()
            .any(|l| l.granted_by != grant.granted_by)
        {
            return Err(WireError::Unauthorized("lease names another granter"));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn epochs_order_as_major_then_minor() {
        let first = next_major(0);
        assert_eq!(show_epoch(first), "1.0");
        let stolen_twice = next_minor(next_minor(first));
        assert_eq!(show_epoch(stolen_twice), "1.2");
        let reclaimed = next_major(first);
        assert!(reclaimed > stolen_twice);
        assert_eq!(show_epoch(next_major(stolen_twice)), "2.0");
    }

    fn lease(granter: PeerKey, holder: PeerKey) -> Lease {
        Lease {
            task: TaskId::from_bytes([3; 32]),
            epoch: 2,
            holder,
            granted_by: granter,
            ttl_ms: 2000,
        }
    }

    #[test]
    fn a_signed_grant_verifies() {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let grant = Grant {
            granted_by: a.public(),
            leases: vec![lease(a.public(), b.public())],
        };
        assert_eq!(Signed::sign(&grant, &a).verify(), Ok(grant));
    }

    #[test]
    fn a_grant_with_a_bad_signature_is_rejected() {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let grant = Grant {
            granted_by: a.public(),
            leases: vec![lease(a.public(), b.public())],
        };
        let honest = Signed::sign(&grant, &a);
        let mut sig = honest.signature().to_bytes();
        sig[10] ^= 1;
        let tampered =
            SignedGrant::from_parts(honest.bytes().to_vec(), crate::Signature::from_bytes(sig));
        assert_eq!(tampered.verify(), Err(WireError::BadSignature));
    }

    #[test]
    fn a_lease_naming_another_granter_is_rejected() {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let grant = Grant {
            granted_by: a.public(),
            leases: vec![lease(b.public(), b.public())],
        };
        assert!(matches!(
            Signed::sign(&grant, &a).verify(),
            Err(WireError::Unauthorized(_))
        ));
    }
}
