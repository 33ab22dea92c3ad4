//! # taskswarm-tests
//!
//! Cross-crate tests of taskswarm. This library holds the in-memory multi-peer harness
//! ([`Sim`]): N protocol [`Scheduler`]s stepped on a virtual clock, joined by a simulated network
//! with seeded delays, and a simulated executor whose tasks take the time their spec says. It runs
//! exactly the code the node runs, without sockets, processes or real time, so a run is fully
//! determined by its seed.
//!
//! The tests under `tests/` use it (`sim_*.rs`) and also start real `taskswarm` peer processes on
//! loopback (`peers_*.rs`).

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Capabilities, Config, Keypair, Millis, Outcome, PeerKey, Scheduler, Signed, SignedSpec,
    TaskId, TaskKind, TaskSpec, wire,
};

/// The handler name the simulated executor understands: its input is the run time in
/// milliseconds, as a little-endian u64.
pub const SLEEP: &str = "sleep";

/// Settings of a simulated network.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Shortest one-way delay.
    pub min_delay_ms: Millis,
    /// Longest one-way delay.
    pub max_delay_ms: Millis,
    /// How often every peer's scheduler is ticked.
    pub tick_ms: Millis,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 5,
            tick_ms: 10,
        }
    }
}

/// Something that happens at a simulated time.
#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Gossip {
        to: usize,
        bytes: Vec<u8>,
    },
    Finish {
        peer: usize,
        task: TaskId,
        epoch: u64,
        outcome: Outcome,
    },
    Tick,
}

/// One simulated peer.
#[derive(Debug)]
pub struct SimPeer {
    /// Its scheduler, as the node would run it.
    pub scheduler: Scheduler,
    /// Every task it started, in order, with the epoch it ran under.
    pub executed: Vec<(TaskId, u64)>,
}

/// A deterministic simulation of N peers.
#[derive(Debug)]
pub struct Sim {
    /// The virtual clock, in milliseconds.
    pub now: Millis,
    /// The peers, by index.
    pub peers: Vec<SimPeer>,
    /// The seed the run was made from.
    pub seed: u64,
    net: NetConfig,
    rng: ChaCha8Rng,
    index: BTreeMap<PeerKey, usize>,
    events: BTreeMap<(Millis, u64), Event>,
    next_seq: u64,
    nonce: u64,
}

impl Sim {
    /// `n` peers with `slots` slots each, all able to run [`SLEEP`] tasks.
    pub fn new(seed: u64, n: usize, slots: u32, net: NetConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let peers: Vec<SimPeer> = (0..n)
            .map(|_| {
                let config = Config {
                    slots,
                    capabilities: Capabilities {
                        exec: false,
                        handlers: vec![SLEEP.to_string()],
                    },
                    ..Config::default()
                };
                SimPeer {
                    scheduler: Scheduler::new(Keypair::generate(&mut rng), config),
                    executed: Vec::new(),
                }
            })
            .collect();
        let index = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.scheduler.me(), i))
            .collect();
        let mut sim = Self {
            now: 0,
            peers,
            seed,
            net,
            rng,
            index,
            events: BTreeMap::new(),
            next_seq: 0,
            nonce: 0,
        };
        sim.schedule(0, Event::Tick);
        sim
    }

    fn schedule(&mut self, at: Millis, event: Event) {
        self.next_seq += 1;
        self.events.insert((at, self.next_seq), event);
    }

    fn delay(&mut self) -> Millis {
        self.rng
            .random_range(self.net.min_delay_ms..=self.net.max_delay_ms)
    }

    /// A signed spec for a [`SLEEP`] task of `ms`, submitted by peer `by`.
    pub fn sleep_spec(&mut self, by: usize, ms: u64) -> SignedSpec {
        self.nonce += 1;
        let key = self.peers[by].scheduler.me();
        let spec = TaskSpec {
            submitter: key,
            nonce: self.nonce,
            kind: TaskKind::Handler {
                name: SLEEP.into(),
                input: ms.to_le_bytes().to_vec(),
            },
            timeout_ms: None,
        };
        let keypair = self.keypair_of(by);
        Signed::sign(&spec, &keypair)
    }

    fn keypair_of(&self, peer: usize) -> Keypair {
        // Peers were generated from the same seeded RNG; rebuild that sequence.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut key = Keypair::generate(&mut rng);
        for _ in 0..peer {
            key = Keypair::generate(&mut rng);
        }
        key
    }

    /// Submits `count` sleep tasks of `ms` each to peer `by`; returns their ids.
    pub fn submit_sleeps(&mut self, by: usize, count: usize, ms: u64) -> Vec<TaskId> {
        let specs = (0..count).map(|_| self.sleep_spec(by, ms)).collect();
        let now = self.now;
        let results = self.peers[by].scheduler.submit(now, &mut self.rng, specs);
        self.drain(by);
        results
            .into_iter()
            .map(|r| r.expect("a spec the harness signed verifies"))
            .collect()
    }

    /// Carries out every action peer `i` emitted.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.peers[i].scheduler.poll_action() {
            match action {
                Action::Send { to, message } => {
                    if let Some(&j) = self.index.get(&to) {
                        let at = self.now + self.delay();
                        let bytes = wire::encode(&message);
                        self.schedule(
                            at,
                            Event::Deliver {
                                from: i,
                                to: j,
                                bytes,
                            },
                        );
                    }
                }
                Action::Broadcast { gossip } => {
                    let bytes = wire::encode(&gossip);
                    for j in (0..self.peers.len()).filter(|&j| j != i) {
                        let at = self.now + self.delay();
                        self.schedule(
                            at,
                            Event::Gossip {
                                to: j,
                                bytes: bytes.clone(),
                            },
                        );
                    }
                }
                Action::Execute { task, epoch, spec } => {
                    self.peers[i].executed.push((task, epoch));
                    let (at, outcome) = self.run(&spec);
                    self.schedule(
                        at,
                        Event::Finish {
                            peer: i,
                            task,
                            epoch,
                            outcome,
                        },
                    );
                }
                Action::Persist { .. } | Action::PeerDiscovered { .. } => {}
            }
        }
    }

    /// How the simulated executor runs a spec: when it ends and with what.
    fn run(&self, spec: &TaskSpec) -> (Millis, Outcome) {
        match &spec.kind {
            TaskKind::Handler { name, input } if name == SLEEP => {
                let ms = input
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes);
                (self.now + ms, Outcome::Returned { output: Vec::new() })
            }
            _ => (
                self.now,
                Outcome::Error {
                    message: "the simulator runs only sleep handlers".into(),
                },
            ),
        }
    }

    /// Processes the next event; false when none is left.
    pub fn step(&mut self) -> bool {
        let Some(((at, _), event)) = self.events.pop_first() else {
            return false;
        };
        self.now = at;
        let now = self.now;
        match event {
            Event::Deliver { from, to, bytes } => {
                let sender = self.peers[from].scheduler.me();
                self.peers[to]
                    .scheduler
                    .handle_message(now, &mut self.rng, sender, &bytes);
                self.drain(to);
            }
            Event::Gossip { to, bytes } => {
                self.peers[to]
                    .scheduler
                    .handle_gossip(now, &mut self.rng, &bytes);
                self.drain(to);
            }
            Event::Finish {
                peer,
                task,
                epoch,
                outcome,
            } => {
                self.peers[peer].scheduler.handle_finished(
                    now,
                    &mut self.rng,
                    task,
                    epoch,
                    outcome,
                );
                self.drain(peer);
            }
            Event::Tick => {
                for i in 0..self.peers.len() {
                    self.peers[i].scheduler.tick(now, &mut self.rng);
                    self.drain(i);
                }
                let next = now + self.net.tick_ms;
                self.schedule(next, Event::Tick);
            }
        }
        true
    }

    /// Steps until `done` holds or the virtual clock passes `deadline`; whether `done` held.
    pub fn run_until(&mut self, deadline: Millis, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while !done(self) {
            if self.now > deadline || !self.step() {
                return done(self);
            }
        }
        true
    }

    /// Whether every listed task has a final record at peer `origin`.
    pub fn all_final(&self, origin: usize, ids: &[TaskId]) -> bool {
        let scheduler = &self.peers[origin].scheduler;
        ids.iter()
            .all(|id| scheduler.task(id).is_some_and(|r| r.state.is_final()))
    }
}
