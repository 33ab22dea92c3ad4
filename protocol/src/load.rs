//! Load reports: each peer's signed, periodic statement of its queue, its running tasks, its slots,
//! what it can run and where it listens. Gossiped to every peer; it is also the peer's heartbeat.
//!
//! Owns the report's shape and the capability check ("can this peer run this task?"). It never
//! decides placement: that is [`crate::placement`]'s job.

use bincode::{Decode, Encode};

use crate::identity::PeerKey;
use crate::resources::Offer;
use crate::signed::{Signable, Signed};
use crate::task::{TaskKind, TaskSpec};

/// What a peer runs: kinds of task, and the capacity and labels it offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Capabilities {
    /// Whether the peer runs process tasks (it was started with exec allowed).
    pub exec: bool,
    /// The names of the handlers it has registered, sorted.
    pub handlers: Vec<String>,
    /// Its capacity (CPU, memory, disk) and labels.
    pub offer: Offer,
}

impl Capabilities {
    /// Whether a peer with these capabilities can run the task: its kind, its labels, and its
    /// amounts within the peer's capacity.
    pub fn can_run(&self, spec: &TaskSpec) -> bool {
        self.can_run_kind(&spec.kind) && self.offer.fits(&spec.needs)
    }

    /// Whether a peer with these capabilities runs tasks of this kind.
    pub fn can_run_kind(&self, kind: &TaskKind) -> bool {
        match kind {
            TaskKind::Process(_) => self.exec,
            TaskKind::Handler { name, .. } => self
                .handlers
                .binary_search_by(|h| h.as_str().cmp(name))
                .is_ok(),
        }
    }
}

/// What a peer tells about itself for people to read (`taskswarm status`, the dashboard): never
/// used to decide anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct About {
    /// The version of the software it runs.
    pub version: String,
    /// Where its HTTP API listens, as it was configured (`host:port`), if it serves one.
    pub api: Option<String>,
    /// How long it has been running when it signed the report, in milliseconds.
    pub uptime_ms: u64,
}

/// A peer's load, as it reports it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct LoadReport {
    /// The reporting peer (and signer).
    pub peer: PeerKey,
    /// Drawn at random when the peer starts: a report with another `boot` than the last one held
    /// comes from a restarted peer, whose `seq` starts again.
    pub boot: u64,
    /// Grows with every report of one run of the peer, so an older report is never taken over a
    /// newer one.
    pub seq: u64,
    /// Tasks waiting in its ready queue.
    pub queued: u32,
    /// Tasks it is running.
    pub running: u32,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// What it can run.
    pub capabilities: Capabilities,
    /// Where it listens, as transport addresses the node understands (opaque to the protocol).
    pub addrs: Vec<Vec<u8>>,
    /// The peer is leaving (shutting down): it has stopped everything it held and will send
    /// nothing more in this run, so the others take it for dead now rather than after a TTL.
    pub leaving: bool,
    /// The peer is draining (`taskswarm drain`): it takes no new work and leads nothing; it
    /// finishes what it runs, then leaves. The others place nothing on it and lead the tasks it
    /// led.
    pub draining: bool,
    /// What it tells about itself for people to read.
    pub about: About,
}

impl LoadReport {
    /// Queued plus running, the load that placement and stealing compare.
    pub fn total(&self) -> u32 {
        self.queued.saturating_add(self.running)
    }
}

impl Signable for LoadReport {
    const DOMAIN: &'static [u8] = b"taskswarm/load/v1";
    fn signer(&self) -> PeerKey {
        self.peer
    }
}

/// A load report as it travels.
pub type SignedLoadReport = Signed<LoadReport>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ProcessSpec;

    fn spec(kind: TaskKind) -> TaskSpec {
        TaskSpec::new(PeerKey::from_bytes([0; 32]), 0, kind)
    }

    #[test]
    fn process_tasks_need_exec_and_handlers_need_their_name() {
        let caps = Capabilities {
            exec: false,
            handlers: vec!["echo".into(), "noop".into()],
            offer: Default::default(),
        };
        let process = spec(TaskKind::Process(ProcessSpec {
            program: "true".into(),
            args: vec![],
            env: vec![],
            stdin: vec![],
        }));
        assert!(!caps.can_run(&process));
        assert!(
            Capabilities {
                exec: true,
                ..caps.clone()
            }
            .can_run(&process)
        );
        let handler = |name: &str| {
            spec(TaskKind::Handler {
                name: name.into(),
                input: vec![],
            })
        };
        assert!(caps.can_run(&handler("noop")));
        assert!(!caps.can_run(&handler("sleep")));
    }
}
