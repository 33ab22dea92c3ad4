//! Membership: the peers this peer has heard from, with their last signed load report.
//!
//! A peer is a member while its load reports keep arriving; one silent for longer than the peer
//! timeout drops out of placement and stealing. Owns the per-peer load estimate, which starts from
//! the peer's own report and grows with every task placed on it until the next report, so a burst
//! of placements does not all land on the peer that looked idlest a moment ago.

use std::collections::BTreeMap;

use crate::Millis;
use crate::identity::PeerKey;
use crate::load::LoadReport;

/// What this peer knows of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Its last load report.
    pub report: LoadReport,
    /// When that report arrived, on this peer's clock.
    pub heard_at: Millis,
    /// Its queued plus running tasks as estimated here: the report, plus what was placed on it
    /// since.
    pub estimated_load: u32,
    /// Its queued tasks as estimated here: the report, less what was stolen from it since.
    pub estimated_queued: u32,
}

/// How a report changed the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A peer not known before.
    New,
    /// A newer report from a known peer.
    Updated,
    /// A report no newer than the one held; ignored.
    Stale,
}

/// The known peers.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    peers: BTreeMap<PeerKey, PeerView>,
}

impl Membership {
    /// Takes in a verified report heard at `now`.
    pub fn observe(&mut self, report: LoadReport, now: Millis) -> Observed {
        let view = PeerView {
            estimated_load: report.total(),
            estimated_queued: report.queued,
            report,
            heard_at: now,
        };
        match self.peers.get_mut(&view.report.peer) {
            // A peer that restarted numbers its reports from the start again: it is new, and
            // must be caught up.
            Some(known) if known.report.boot != view.report.boot => {
                *known = view;
                Observed::New
            }
            Some(known) if known.report.seq >= view.report.seq => Observed::Stale,
            Some(known) => {
                *known = view;
                Observed::Updated
            }
            None => {
                self.peers.insert(view.report.peer, view);
                Observed::New
            }
        }
    }

    /// Notes that a known peer was heard from directly (any message proves it alive).
    pub fn touch(&mut self, peer: &PeerKey, now: Millis) {
        if let Some(view) = self.peers.get_mut(peer) {
            view.heard_at = view.heard_at.max(now);
        }
    }

    /// Forgets peers not heard from for `timeout` and returns them.
    pub fn expire(&mut self, now: Millis, timeout: Millis) -> Vec<PeerKey> {
        let gone: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, v)| now.saturating_sub(v.heard_at) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for peer in &gone {
            self.peers.remove(peer);
        }
        gone
    }

    /// Forgets one peer (for example one that cannot be reached).
    pub fn remove(&mut self, peer: &PeerKey) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// The view of one peer.
    pub fn get(&self, peer: &PeerKey) -> Option<&PeerView> {
        self.peers.get(peer)
    }

    /// The view of one peer, to adjust its estimates.
    pub fn get_mut(&mut self, peer: &PeerKey) -> Option<&mut PeerView> {
        self.peers.get_mut(peer)
    }

    /// Every known peer, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerKey, &PeerView)> {
        self.peers.iter()
    }

    /// How many peers are known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}
