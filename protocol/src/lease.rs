//! Leases: signed statements that a peer holds a task at an epoch.
//!
//! A [`Lease`] names the task, its epoch (a fencing token that only grows), the holder, the peer
//! that granted it and its time to live. An epoch has three parts, packed into one number so that
//! it compares part by part: the **major** part (the high 32 bits), which the task's primary raises
//! whenever it grants a lease (placement, retry, re-claim); the **granter's rank** in the task's
//! home set (the next 8 bits); and the **steals** (the low 24 bits), which a victim raises when it
//! hands the task to a thief. So a primary that re-claims a task from a holder it believes dead
//! never grants an epoch that a steal it has not heard of already used; and two primaries never
//! grant the same epoch, not even when the first died before its grant reached anyone and the next
//! grants from the record it had: their ranks differ. (One primary never grants an epoch twice: it
//! writes the grant to its store before the lease leaves it.) Leases travel in a [`Grant`], one
//! signature over a batch (signing is the costly part, so a steal of 50 tasks is signed once). The
//! TTL is relative: each observer measures it on its own monotonic clock from when it last heard
//! the holder, so no two wall clocks are ever compared. This module checks grants; who may grant
//! what is the scheduler's rule.

use bincode::{Decode, Encode};

use crate::identity::PeerKey;
use crate::signed::{Signable, Signed};
use crate::task::TaskId;
use crate::wire::WireError;

/// Where the granter's rank sits in an epoch.
const RANK_SHIFT: u32 = 24;
/// The bits of an epoch that count steals.
const STEALS: u64 = (1 << RANK_SHIFT) - 1;

/// The epoch the member of rank `rank` in a task's home set grants, as its primary, after
/// `epoch`: the next major epoch, marked with its rank.
pub fn next_major(epoch: u64, rank: usize) -> u64 {
    let rank = u64::try_from(rank.min(255)).unwrap_or(255);
    (((epoch >> 32) + 1) << 32) | (rank << RANK_SHIFT)
}

/// The epoch a victim grants a thief after `epoch`: one more steal.
pub fn next_minor(epoch: u64) -> u64 {
    epoch + 1
}

/// The major part of an epoch: how many times a primary granted the task.
pub fn major(epoch: u64) -> u64 {
    epoch >> 32
}

/// An epoch as people read it: `major.steals`, with `/rank` when a member other than the first
/// of the home set granted it.
pub fn show_epoch(epoch: u64) -> String {
    let rank = (epoch >> RANK_SHIFT) & 0xff;
    let steals = epoch & STEALS;
    if rank == 0 {
        format!("{}.{steals}", epoch >> 32)
    } else {
        format!("{}.{steals}/{rank}", epoch >> 32)
    }
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
    fn epochs_order_as_major_then_granter_then_steals() {
        let first = next_major(0, 0);
        assert_eq!(show_epoch(first), "1.0");
        let stolen_twice = next_minor(next_minor(first));
        assert_eq!(show_epoch(stolen_twice), "1.2");
        let reclaimed = next_major(first, 0);
        assert!(reclaimed > stolen_twice);
        assert_eq!(show_epoch(next_major(stolen_twice, 0)), "2.0");
        assert_eq!(major(reclaimed), 2);
    }

    #[test]
    fn two_primaries_granting_from_the_same_record_grant_different_epochs() {
        // The first member granted 1.0 and died before anyone heard; the second grants from the
        // record it has (epoch 0), and its grant outranks every steal of the first's.
        let lost = next_major(0, 0);
        let next = next_major(0, 1);
        assert_ne!(lost, next);
        assert!(next > next_minor(next_minor(lost)));
        assert_eq!(show_epoch(next), "1.0/1");
        assert_eq!(next_major(next, 0), 2 << 32);
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
