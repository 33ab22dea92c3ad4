//! # taskswarm-tests
//!
//! Cross-crate tests of taskswarm. This library holds the in-memory multi-peer harness
//! ([`Sim`]): N protocol [`Scheduler`]s stepped on a virtual clock, joined by a simulated network
//! with seeded delays, a simulated executor whose tasks take the time their spec says, and a
//! simulated disk per peer (what the scheduler asked to write), so peers can crash and restart
//! with what they stored. It runs exactly the code the node runs, without sockets, processes or
//! real time, so a run is fully determined by its seed. The [`invariants`] of the design are
//! checked after every step.
//!
//! The tests under `tests/` use it (`sim_*.rs`) and also start real `taskswarm` peer processes on
//! loopback (`peers_*.rs`).

#![allow(clippy::expect_used)]

pub mod invariants;

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Capabilities, Config, Keypair, Message, Millis, Outcome, PeerKey, RetryPolicy,
    Scheduler, Signed, SignedSpec, Table, TaskId, TaskKind, TaskSpec, wire,
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
        message: Message,
    },
    Delivered {
        from: usize,
        incarnation: u32,
        message: Message,
    },
    Undelivered {
        from: usize,
        to: usize,
        incarnation: u32,
        message: Message,
    },
    Gossip {
        to: usize,
        bytes: Vec<u8>,
    },
    Finish {
        peer: usize,
        incarnation: u32,
        task: TaskId,
        epoch: u64,
        outcome: Outcome,
    },
    Tick,
}

/// One simulated peer.
#[derive(Debug)]
pub struct SimPeer {
    /// Its scheduler, or `None` while it is crashed.
    pub scheduler: Option<Scheduler>,
    /// Its key (kept across restarts).
    pub key: Keypair,
    /// What it stored, by table and task: survives crashes.
    pub disk: BTreeMap<(Table, TaskId), Vec<u8>>,
    /// Every attempt it started, in order, with the epoch it ran under.
    pub executed: Vec<(TaskId, u64)>,
    /// Bumped at every restart, so events of an earlier life are ignored.
    pub incarnation: u32,
    config: Config,
}

impl SimPeer {
    /// Whether it is up.
    pub fn is_up(&self) -> bool {
        self.scheduler.is_some()
    }

    /// Its public key.
    pub fn me(&self) -> PeerKey {
        self.key.public()
    }
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
    /// Tasks whose submission was acknowledged to the client.
    pub accepted: BTreeSet<TaskId>,
    /// The invariant checker's memory.
    pub watch: invariants::Watch,
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
        Self::with_config(seed, n, net, |_| Config {
            slots,
            ..Config::default()
        })
    }

    /// `n` peers configured by `config(i)` (their capabilities are set to run [`SLEEP`]).
    pub fn with_config(
        seed: u64,
        n: usize,
        net: NetConfig,
        config: impl Fn(usize) -> Config,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let peers: Vec<SimPeer> = (0..n)
            .map(|i| {
                let config = Config {
                    capabilities: Capabilities {
                        exec: false,
                        handlers: vec![SLEEP.to_string()],
                    },
                    ..config(i)
                };
                let key = Keypair::generate(&mut rng);
                SimPeer {
                    scheduler: Some(Scheduler::new(key.clone(), config.clone())),
                    key,
                    disk: BTreeMap::new(),
                    executed: Vec::new(),
                    incarnation: 0,
                    config,
                }
            })
            .collect();
        let index = peers.iter().enumerate().map(|(i, p)| (p.me(), i)).collect();
        let mut sim = Self {
            now: 0,
            peers,
            seed,
            accepted: BTreeSet::new(),
            watch: invariants::Watch::default(),
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

    /// The scheduler of a live peer.
    pub fn scheduler(&self, i: usize) -> Option<&Scheduler> {
        self.peers[i].scheduler.as_ref()
    }

    /// A signed spec for a [`SLEEP`] task of `ms`, submitted by peer `by`.
    pub fn sleep_spec(&mut self, by: usize, ms: u64, retry: RetryPolicy) -> SignedSpec {
        self.nonce += 1;
        let spec = TaskSpec {
            submitter: self.peers[by].me(),
            nonce: self.nonce,
            kind: TaskKind::Handler {
                name: SLEEP.into(),
                input: ms.to_le_bytes().to_vec(),
            },
            timeout_ms: None,
            retry,
        };
        Signed::sign(&spec, &self.peers[by].key)
    }

    /// Submits `count` sleep tasks of `ms` each to peer `by`; returns their ids (acknowledged
    /// later, see [`Sim::accepted`]).
    pub fn submit_sleeps(&mut self, by: usize, count: usize, ms: u64) -> Vec<TaskId> {
        let specs = (0..count)
            .map(|_| self.sleep_spec(by, ms, RetryPolicy::default()))
            .collect();
        self.submit(by, specs)
    }

    /// Submits specs to peer `by`.
    pub fn submit(&mut self, by: usize, specs: Vec<SignedSpec>) -> Vec<TaskId> {
        let now = self.now;
        let Some(scheduler) = self.peers[by].scheduler.as_mut() else {
            return Vec::new();
        };
        let results = scheduler.submit(now, &mut self.rng, specs);
        self.drain(by);
        results
            .into_iter()
            .map(|r| r.expect("a spec the harness signed verifies"))
            .collect()
    }

    /// Crashes peer `i`: its memory is gone, its disk stays.
    pub fn crash(&mut self, i: usize) {
        self.peers[i].scheduler = None;
        self.peers[i].incarnation += 1;
    }

    /// Restarts peer `i` from its disk.
    pub fn restart(&mut self, i: usize) {
        let peer = &mut self.peers[i];
        let mut scheduler = Scheduler::new(peer.key.clone(), peer.config.clone());
        for ((table, _), bytes) in &peer.disk {
            scheduler.restore(*table, bytes);
        }
        peer.scheduler = Some(scheduler);
        peer.incarnation += 1;
    }

    /// Carries out every action peer `i` emitted.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.peers[i]
            .scheduler
            .as_mut()
            .and_then(Scheduler::poll_action)
        {
            self.carry_out(i, action);
        }
    }

    fn carry_out(&mut self, i: usize, action: Action) {
        match action {
            Action::Send { to, message } => {
                if let Some(&j) = self.index.get(&to) {
                    let at = self.now + self.delay();
                    self.schedule(
                        at,
                        Event::Deliver {
                            from: i,
                            to: j,
                            message,
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
                let incarnation = self.peers[i].incarnation;
                self.schedule(
                    at,
                    Event::Finish {
                        peer: i,
                        incarnation,
                        task,
                        epoch,
                        outcome,
                    },
                );
            }
            Action::Write { table, key, value } => {
                let disk = &mut self.peers[i].disk;
                match value {
                    Some(bytes) => disk.insert((table, key), bytes),
                    None => disk.remove(&(table, key)),
                };
            }
            Action::Accepted { tasks } => self.accepted.extend(tasks),
            Action::Abort { .. }
            | Action::Changed { .. }
            | Action::Answer { .. }
            | Action::PeerDiscovered { .. } => {}
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
            Event::Deliver { from, to, message } => {
                let incarnation = self.peers[from].incarnation;
                let back = self.now + self.delay();
                if self.peers[to].is_up() {
                    let sender = self.peers[from].me();
                    let bytes = wire::encode(&message);
                    if let Some(s) = self.peers[to].scheduler.as_mut() {
                        s.handle_message(now, &mut self.rng, sender, &bytes);
                    }
                    self.drain(to);
                    self.schedule(
                        back,
                        Event::Delivered {
                            from,
                            incarnation,
                            message,
                        },
                    );
                } else {
                    self.schedule(
                        back,
                        Event::Undelivered {
                            from,
                            to,
                            incarnation,
                            message,
                        },
                    );
                }
            }
            Event::Delivered {
                from,
                incarnation,
                message,
            } => {
                if self.peers[from].incarnation == incarnation
                    && let Some(s) = self.peers[from].scheduler.as_mut()
                {
                    s.handle_delivered(now, &mut self.rng, &message);
                    self.drain(from);
                }
            }
            Event::Undelivered {
                from,
                to,
                incarnation,
                message,
            } => {
                let to = self.peers[to].me();
                if self.peers[from].incarnation == incarnation
                    && let Some(s) = self.peers[from].scheduler.as_mut()
                {
                    s.handle_send_failed(now, &mut self.rng, to, message);
                    self.drain(from);
                }
            }
            Event::Gossip { to, bytes } => {
                if let Some(s) = self.peers[to].scheduler.as_mut() {
                    s.handle_gossip(now, &mut self.rng, &bytes);
                    self.drain(to);
                }
            }
            Event::Finish {
                peer,
                incarnation,
                task,
                epoch,
                outcome,
            } => {
                if self.peers[peer].incarnation == incarnation
                    && let Some(s) = self.peers[peer].scheduler.as_mut()
                {
                    s.handle_finished(now, &mut self.rng, task, epoch, outcome);
                    self.drain(peer);
                }
            }
            Event::Tick => {
                for i in 0..self.peers.len() {
                    if let Some(s) = self.peers[i].scheduler.as_mut() {
                        s.tick(now, &mut self.rng);
                        self.drain(i);
                    }
                }
                let next = now + self.net.tick_ms;
                self.schedule(next, Event::Tick);
            }
        }
        true
    }

    /// Steps until `done` holds or the virtual clock passes `deadline`, checking the safety
    /// invariants after every step; whether `done` held. Panics, naming the seed, if an
    /// invariant breaks.
    pub fn run_until(&mut self, deadline: Millis, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while !done(self) {
            if self.now > deadline || !self.step() {
                return done(self);
            }
            if let Err(broken) = invariants::check_safety(self) {
                panic!("seed {}: at t={} ms: {broken}", self.seed, self.now);
            }
        }
        true
    }

    /// The record of a task as the first live peer that keeps it has it.
    pub fn record(&self, id: &TaskId) -> Option<&taskswarm_protocol::TaskRecord> {
        self.peers
            .iter()
            .filter_map(|p| p.scheduler.as_ref())
            .filter_map(|s| s.task(id))
            .max_by_key(|r| r.version)
    }

    /// Whether every listed task has a final record at some live peer.
    pub fn all_final(&self, ids: &[TaskId]) -> bool {
        ids.iter()
            .all(|id| self.record(id).is_some_and(|r| r.state.is_final()))
    }
}
