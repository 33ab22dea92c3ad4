//! The scheduler's message input under attack. Three members (A leads the home set of three
//! tasks, B keeps copies, C runs them; one is running, one completed, one queued) take a stream of
//! inputs the fuzzer chooses: raw bytes, real messages of theirs with bytes flipped, gossip, and
//! the passing of time, each from one of five senders (the three members, M, a member outside the
//! home set, and X, a peer nobody knows). Whatever comes, no member panics, and after every input:
//! - a task's epoch never goes down at any member (epochs are fencing tokens);
//! - a task that ended stays ended with the same outcome (a result is recorded once);
//! - nothing X sends changes any record (it has no role in any task).
//! Ended records leave the members' memory as time passes and are read back from their archives
//! (the ended rows they wrote), as on a peer's disk; the checks see both.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Capabilities, Config, Gossip, Keypair, LoadReport, MemoryArchive, Outcome, PeerKey,
    ProcessSpec, Scheduler, SealedRecord, Signed, Submission, TaskId, TaskKind, TaskSpec,
    TaskState, wire,
};

const E1: u64 = 1 << 32;
const MEMBERS: usize = 3;

fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

/// The five senders: A, B, C, M, X (made once: deriving a public key is a scalar
/// multiplication).
fn sender(n: u8) -> &'static Keypair {
    static SENDERS: OnceLock<Vec<Keypair>> = OnceLock::new();
    let senders = SENDERS.get_or_init(|| [1, 2, 3, 9, 7].into_iter().map(key).collect());
    &senders[usize::from(n) % 5]
}

/// The members' public keys, A, B, C.
fn members() -> &'static [PeerKey] {
    static MEMBERS_KEYS: OnceLock<Vec<PeerKey>> = OnceLock::new();
    MEMBERS_KEYS.get_or_init(|| (1..=MEMBERS as u8).map(|n| key(n).public()).collect())
}

struct Swarm {
    peers: Vec<Scheduler>,
    /// Each member's ended records once they left its memory (what its disk would give back).
    archives: Vec<Arc<MemoryArchive>>,
    now: u64,
    /// Every message the members sent each other while the state was built: (to, bytes).
    captured: Vec<(usize, Vec<u8>)>,
}

/// A copy that shares nothing with the original: each run starts from the built state.
impl Clone for Swarm {
    fn clone(&self) -> Self {
        let archives: Vec<Arc<MemoryArchive>> = self
            .archives
            .iter()
            .map(|a| Arc::new(MemoryArchive::with_rows(a.rows())))
            .collect();
        let peers = self
            .peers
            .iter()
            .zip(&archives)
            .map(|(peer, archive)| {
                let mut peer = peer.clone();
                peer.set_archive(archive.clone());
                peer
            })
            .collect();
        Self {
            peers,
            archives,
            now: self.now,
            captured: self.captured.clone(),
        }
    }
}

fn report(from: &Keypair, exec: bool) -> Vec<u8> {
    let report = LoadReport {
        peer: from.public(),
        boot: 1,
        seq: 1,
        queued: 0,
        running: 0,
        slots: 2,
        capabilities: Capabilities {
            exec,
            handlers: vec![],
            offer: Default::default(),
        },
        addrs: vec![],
        leaving: false,
        draining: false,
        about: Default::default(),
    };
    wire::encode(&Gossip::Load(Signed::sign(&report, from)))
}

impl Swarm {
    fn index(key: &PeerKey) -> Option<usize> {
        members().iter().position(|m| m == key)
    }

    /// Carries what member `at` emitted, and what that causes, until nothing is left.
    fn pump(&mut self, at: usize, rng: &mut ChaCha8Rng, capture: bool) {
        let mut queue: VecDeque<(usize, Option<usize>, Vec<u8>)> = VecDeque::new();
        self.drain(at, &mut queue);
        let mut steps = 0;
        while let Some((from, to, bytes)) = queue.pop_front() {
            steps += 1;
            if steps > 10_000 {
                break;
            }
            let sender = self.peers[from].me();
            let now = self.now;
            match to {
                Some(to) => {
                    if capture {
                        self.captured.push((to, bytes.clone()));
                    }
                    self.peers[to].handle_message(now, rng, sender, &bytes);
                    self.drain(to, &mut queue);
                }
                None => {
                    for to in (0..MEMBERS).filter(|&i| i != from) {
                        self.peers[to].handle_gossip(now, rng, &bytes);
                        self.drain(to, &mut queue);
                    }
                }
            }
        }
    }

    fn drain(&mut self, at: usize, queue: &mut VecDeque<(usize, Option<usize>, Vec<u8>)>) {
        while let Some(action) = self.peers[at].poll_action() {
            self.archives[at].keep(&action);
            match action {
                Action::Send { to, message } => {
                    if let Some(to) = Self::index(&to) {
                        queue.push_back((at, Some(to), wire::encode(&message)));
                    }
                }
                Action::Broadcast { gossip } => queue.push_back((at, None, wire::encode(&gossip))),
                _ => {}
            }
        }
    }

    fn build() -> Self {
        let config = |exec| Config {
            slots: 2,
            capabilities: Capabilities {
                exec,
                handlers: vec![],
                offer: Default::default(),
            },
            ..Config::default()
        };
        let archives: Vec<Arc<MemoryArchive>> = (0..MEMBERS).map(|_| Arc::default()).collect();
        let mut peers = vec![
            Scheduler::new(key(1), config(false)),
            Scheduler::new(key(2), config(false)),
            Scheduler::new(key(3), config(true)),
        ];
        for (peer, archive) in peers.iter_mut().zip(&archives) {
            peer.set_archive(archive.clone());
        }
        let mut swarm = Swarm {
            peers,
            archives,
            now: 0,
            captured: Vec::new(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (n, exec) in [(1u8, false), (2, false), (3, true), (9, true)] {
            for at in 0..MEMBERS {
                if usize::from(n) != at + 1 {
                    swarm.peers[at].handle_gossip(0, &mut rng, &report(&key(n), exec));
                    swarm.pump(at, &mut rng, true);
                }
            }
        }
        let kind = TaskKind::Process(ProcessSpec {
            program: "true".into(),
            args: vec![],
            env: vec![],
            stdin: vec![],
        });
        let specs: Vec<Submission> = (0..3)
            .map(|n| TaskSpec::new(key(1).public(), n, kind.clone()).into())
            .collect();
        let ids: Vec<TaskId> = swarm.peers[0]
            .submit(0, &mut rng, specs)
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        swarm.pump(0, &mut rng, true);
        swarm.now = 10;
        let done = Outcome::Exited {
            code: Some(0),
            stdout: b"done".to_vec(),
            stderr: vec![],
        };
        if let Some(id) = ids.get(1) {
            swarm.peers[2].handle_finished(10, &mut rng, *id, E1, done);
            swarm.pump(2, &mut rng, true);
        }
        swarm
    }

    /// Each member's records: epoch, whether ended, outcome, version.
    /// Each member's records, in memory or (ended) in its archive.
    fn records(&self) -> Vec<BTreeMap<TaskId, (u64, bool, Option<Outcome>, u64)>> {
        self.peers
            .iter()
            .zip(&self.archives)
            .map(|(p, archive)| {
                let archived: Vec<_> = archive
                    .rows()
                    .into_values()
                    .filter_map(|row| SealedRecord::from_bytes(&row).ok())
                    .map(|sealed| sealed.record)
                    .collect();
                let mut records: BTreeMap<TaskId, _> = BTreeMap::new();
                for r in archived.iter().chain(p.tasks()) {
                    let ended = r.state.is_final();
                    records.insert(r.id(), (r.epoch, ended, r.outcome.clone(), r.version));
                }
                records
            })
            .collect()
    }
}

fn built() -> &'static Swarm {
    static SWARM: OnceLock<Swarm> = OnceLock::new();
    SWARM.get_or_init(Swarm::build)
}

fuzz_target!(|data: &[u8]| {
    let mut swarm = built().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut input = data;
    let mut before = swarm.records();
    while input.len() >= 4 {
        let (op, from, to, len) = (
            input[0] % 4,
            input[1] % 5,
            usize::from(input[2]) % MEMBERS,
            usize::from(input[3]),
        );
        let payload = &input[4..(4 + len).min(input.len())];
        input = &input[(4 + len).min(input.len())..];
        let key = sender(from);
        let now = swarm.now;
        match op {
            0 => swarm.peers[to].handle_message(now, &mut rng, key.public(), payload),
            1 => {
                let captured = &built().captured;
                if captured.is_empty() || payload.is_empty() {
                    continue;
                }
                let (_, original) = &captured[usize::from(payload[0]) % captured.len()];
                let mut bytes = original.clone();
                let offset = usize::from(payload[0]) * 7;
                for (i, flip) in payload[1..].iter().enumerate() {
                    let at = (offset + i * 13) % bytes.len().max(1);
                    if let Some(b) = bytes.get_mut(at) {
                        *b ^= flip;
                    }
                }
                swarm.peers[to].handle_message(now, &mut rng, key.public(), &bytes);
            }
            2 => swarm.peers[to].handle_gossip(now, &mut rng, payload),
            _ => {
                swarm.now += u64::from(payload.first().copied().unwrap_or(1)) * 10;
                let now = swarm.now;
                for at in 0..MEMBERS {
                    swarm.peers[at].tick(now, &mut rng);
                    swarm.pump(at, &mut rng, false);
                }
            }
        }
        swarm.pump(to, &mut rng, false);
        let after = swarm.records();
        for (member, (was, is)) in before.iter().zip(&after).enumerate() {
            for (id, (epoch, ended, outcome, version)) in was {
                let Some((epoch2, ended2, outcome2, version2)) = is.get(id) else {
                    panic!("member {member} lost the record of {id:?}");
                };
                assert!(
                    epoch2 >= epoch,
                    "member {member}: the epoch of {id:?} went down"
                );
                if *ended {
                    assert!(*ended2, "member {member}: {id:?} ended, then did not");
                    assert_eq!(
                        outcome2, outcome,
                        "member {member}: {id:?} got a second result"
                    );
                }
                if op != 3 && from == 4 {
                    assert_eq!(version2, version, "member {member}: X changed {id:?}");
                }
            }
        }
        before = after;
    }
    // The states the records passed through are states a task can be in.
    for peer in &swarm.peers {
        for record in peer.tasks() {
            assert!(TaskState::ALL.contains(&record.state));
        }
    }
});
