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
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Batch, Capabilities, Config, Keypair, MemoryArchive, Message, Millis, Outcome, PeerKey,
    RetryPolicy, Scheduler, Submission, Table, TaskId, TaskKind, TaskSpec, lease, wire,
};

/// The wall time the simulation starts at (ms since the Unix epoch), before each peer's skew.
const WALL_EPOCH_MS: i64 = 1_800_000_000_000;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The seeds a simulation test runs: `SEED=n` runs that one, `SEEDS=n` the first n, else
/// `default`.
pub fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    if let Some(seed) = std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    match std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()) {
        Some(n) => (0..n).collect(),
        None => default.collect(),
    }
}

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
    /// Chance in a thousand that a message or gossip is lost.
    pub loss_permille: u32,
    /// Chance in a thousand that a message or gossip arrives twice.
    pub duplicate_permille: u32,
    /// Chance in a thousand that a message is held back by up to [`Self::reorder_max_ms`] more,
    /// so that later ones overtake it.
    pub reorder_permille: u32,
    /// The longest hold-back.
    pub reorder_max_ms: Millis,
    /// Each peer's clock runs fast or slow by up to this many parts in a thousand.
    pub clock_drift_permille: u32,
    /// Each peer's wall clock is off by up to this much either way.
    pub wall_skew_ms: Millis,
    /// How long after sending a lost or cut-off message its sender learns it was not delivered.
    pub send_timeout_ms: Millis,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 5,
            tick_ms: 10,
            loss_permille: 0,
            duplicate_permille: 0,
            reorder_permille: 0,
            reorder_max_ms: 0,
            clock_drift_permille: 0,
            wall_skew_ms: 0,
            send_timeout_ms: 1_000,
        }
    }
}

impl NetConfig {
    /// A hostile network: 1-20 ms delays, 2 % loss, 1 % duplicates, 5 % held back up to 200 ms,
    /// clocks 1 % fast or slow and wall clocks up to 5 s apart.
    pub fn hostile() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 20,
            tick_ms: 10,
            loss_permille: 20,
            duplicate_permille: 10,
            reorder_permille: 50,
            reorder_max_ms: 200,
            clock_drift_permille: 10,
            wall_skew_ms: 5_000,
            send_timeout_ms: 1_000,
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
        /// A duplicate: delivered, but not acknowledged to the sender.
        copy: bool,
    },
    Delivered {
        from: usize,
        to: usize,
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
    /// The rows of [`Table::Ended`] in `disk`, as the scheduler reads them back.
    archive: Arc<MemoryArchive>,
    /// Every attempt it started, in order, with the epoch it ran under.
    pub executed: Vec<(TaskId, u64)>,
    /// Bumped at every restart, so events of an earlier life are ignored.
    pub incarnation: u32,
    /// Its clock's rate, in thousandths: 1000 keeps time.
    pub clock_rate: u64,
    /// Its wall clock's offset from the simulation's.
    pub wall_offset: i64,
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
    /// Records changed since the invariants were last checked: (peer, task).
    pub changed: Vec<(usize, TaskId)>,
    /// Tasks acknowledged, or whose stored record a peer deleted, since the last check.
    pub unstored: Vec<TaskId>,
    /// Attempts started since the last check: (peer, task, epoch).
    pub started: Vec<(usize, TaskId, u64)>,
    /// Every attempt any peer started, kept for the run: (when, peer, task, epoch).
    pub start_log: Vec<(Millis, usize, TaskId, u64)>,
    /// Tasks some peer has a final record of.
    pub finals: BTreeSet<TaskId>,
    /// Bytes of load reports delivered, over all peers.
    pub gossip_bytes: u64,
    /// Messages delivered, over all peers.
    pub messages: u64,
    /// What clients were answered (views, waits, cancels), by peer and number: the state of the
    /// task in the record the answer carried, or `None` if it said no live peer knows the task.
    pub answers: BTreeMap<(usize, u64), Option<taskswarm_protocol::TaskState>>,
    /// Swarm-wide lists that clients were answered, by peer and ticket.
    pub lists: BTreeMap<(usize, u64), taskswarm_protocol::listing::Page>,
    trace: u64,
    /// `SIM_TRACE_TASK`: a task id (or its start, as `TaskId(…)` prints it) whose every message,
    /// record change and start is printed to stderr, with crashes, restarts and cuts.
    traced: Option<String>,
    side: Vec<u32>,
    /// One-way cuts: nothing `from` sends reaches `to` (see [`Sim::cut_one_way`]).
    one_way: BTreeSet<(usize, usize)>,
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
                        offer: Default::default(),
                    },
                    ..config(i)
                };
                let key = Keypair::generate(&mut rng);
                let drift = u64::from(net.clock_drift_permille);
                let clock_rate = 1000 - drift + rng.random_range(0..=2 * drift);
                let skew = net.wall_skew_ms as i64;
                let wall_offset = WALL_EPOCH_MS + rng.random_range(-skew..=skew);
                let archive = Arc::new(MemoryArchive::default());
                let mut scheduler = Scheduler::new(key.clone(), config.clone());
                scheduler.set_wall_offset(wall_offset);
                scheduler.set_archive(archive.clone());
                SimPeer {
                    scheduler: Some(scheduler),
                    key,
                    disk: BTreeMap::new(),
                    archive,
                    executed: Vec::new(),
                    incarnation: 0,
                    clock_rate,
                    wall_offset,
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
            changed: Vec::new(),
            unstored: Vec::new(),
            started: Vec::new(),
            start_log: Vec::new(),
            finals: BTreeSet::new(),
            gossip_bytes: 0,
            messages: 0,
            answers: BTreeMap::new(),
            lists: BTreeMap::new(),
            trace: FNV_OFFSET,
            traced: std::env::var("SIM_TRACE_TASK").ok(),
            side: vec![0; n],
            one_way: BTreeSet::new(),
            net,
            rng,
            index,
            events: BTreeMap::new(),
            next_seq: 0,
            nonce: 0,
        };
        sim.schedule(0, Event::Tick);
        if sim.peers.iter().any(|p| p.config.report_fanout > 0) {
            sim.introduce_randomly(4);
        }
        sim
    }

    /// In fanout mode nobody hears of anybody by broadcast: tell each peer of `k` random others,
    /// as a node's bootstrap addresses do.
    fn introduce_randomly(&mut self, k: usize) {
        let n = self.peers.len();
        for i in 0..n {
            for _ in 0..k.min(n - 1) {
                let j = (i + self.rng.random_range(1..n)) % n;
                let key = self.peers[j].me();
                if let Some(s) = self.peers[i].scheduler.as_mut() {
                    s.introduce(key);
                }
            }
        }
    }

    /// Peer `i`'s clock: the simulation's, run at its own rate.
    pub fn clock(&self, i: usize) -> Millis {
        self.now * self.peers[i].clock_rate / 1000
    }

    /// The index of the peer with this key.
    pub fn index_of(&self, key: &PeerKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// A fingerprint of every event so far: the same seed gives the same hash.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    fn trace(&mut self, parts: &[u64]) {
        for part in parts {
            for byte in part.to_le_bytes() {
                self.trace ^= u64::from(byte);
                self.trace = self.trace.wrapping_mul(FNV_PRIME);
            }
        }
    }

    /// A record as the diagnostics show it: state, version, epoch, and its holder and home set
    /// by peer index.
    pub fn show_record(&self, r: &taskswarm_protocol::TaskRecord) -> String {
        let holder = r.holder.and_then(|h| self.index_of(&h));
        let home: Vec<_> = r.home().iter().filter_map(|m| self.index_of(m)).collect();
        format!(
            "{} v{} epoch {} holder {holder:?} home {home:?}",
            r.state.as_str(),
            r.version,
            lease::show_epoch(r.epoch)
        )
    }

    /// For `SIM_TRACE_TASK`: prints what happened now if `about` (a message, a task id: anything
    /// whose debug form shows the task's id) concerns the traced task, with its start; with no
    /// `about` (a crash, a cut), always.
    #[allow(clippy::print_stderr)] // a test's diagnostic output, asked for
    fn trace_task(&self, about: Option<&dyn std::fmt::Debug>, what: impl FnOnce() -> String) {
        let Some(task) = &self.traced else {
            return;
        };
        let about = about.map(|a| format!("{a:?}")).unwrap_or_default();
        if about.is_empty() || about.contains(task.as_str()) {
            let about: String = about.chars().take(400).collect();
            eprintln!("{} ms: {} {about}", self.now, what());
        }
    }

    /// Cuts the network between groups: peers in different groups reach each other no more
    /// (peers in no group form one more group).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        self.trace_task(None, || format!("partition into groups of {sizes:?} peers"));
        self.side = vec![0; self.peers.len()];
        for (g, group) in groups.iter().enumerate() {
            for &i in group {
                self.side[i] = g as u32 + 1;
            }
        }
    }

    /// Cuts the network one way: nothing a peer in `from` sends reaches a peer in `to`, while
    /// what `to` sends `from` arrives. As over TCP, where the acknowledgements of what arrives
    /// cannot come back, a peer of `to` that sends to one of `from` is told its message was not
    /// delivered (after the send timeout), though it was.
    pub fn cut_one_way(&mut self, from: &[usize], to: &[usize]) {
        let sizes = (from.len(), to.len());
        self.trace_task(None, || {
            format!("one-way cut from {} peers to {}", sizes.0, sizes.1)
        });
        for &i in from {
            for &j in to {
                self.one_way.insert((i, j));
            }
        }
    }

    /// Heals every cut.
    pub fn heal(&mut self) {
        self.side = vec![0; self.peers.len()];
        self.one_way.clear();
    }

    /// Whether what `i` sends reaches `j` (cuts aside from loss).
    fn reaches(&self, i: usize, j: usize) -> bool {
        self.side[i] == self.side[j] && !self.one_way.contains(&(i, j))
    }

    fn chance(&mut self, permille: u32) -> bool {
        permille > 0 && self.rng.random_range(0..1000) < permille
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

    /// A spec for a [`SLEEP`] task of `ms`, to submit through peer `by` (which completes and
    /// signs it).
    pub fn sleep_spec(&mut self, by: usize, ms: u64, retry: RetryPolicy) -> TaskSpec {
        self.nonce += 1;
        let kind = TaskKind::Handler {
            name: SLEEP.into(),
            input: ms.to_le_bytes().to_vec(),
        };
        TaskSpec {
            retry,
            ..TaskSpec::new(self.peers[by].me(), self.nonce, kind)
        }
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
    pub fn submit(&mut self, by: usize, specs: Vec<TaskSpec>) -> Vec<TaskId> {
        let now = self.clock(by);
        let Some(scheduler) = self.peers[by].scheduler.as_mut() else {
            return Vec::new();
        };
        let submissions = specs.into_iter().map(Submission::from).collect();
        let results = scheduler.submit(now, &mut self.rng, submissions);
        self.drain(by);
        results
            .into_iter()
            .map(|r| r.expect("a spec the harness signed verifies"))
            .collect()
    }

    /// A client of peer `by` waits for task `id` to end; returns the number its answer comes under
    /// (in [`Sim::answers`]).
    pub fn watch(&mut self, by: usize, id: TaskId) -> Option<u64> {
        let now = self.clock(by);
        let scheduler = self.peers[by].scheduler.as_mut()?;
        let ticket = scheduler.watch(now, &mut self.rng, id);
        self.drain(by);
        Some(ticket)
    }

    /// A client of peer `by` asks for a page of the swarm's tasks; returns the number the page
    /// comes under (in [`Sim::lists`]).
    pub fn list(
        &mut self,
        by: usize,
        filter: taskswarm_protocol::listing::ListFilter,
        limit: u32,
    ) -> Option<u64> {
        let now = self.clock(by);
        let scheduler = self.peers[by].scheduler.as_mut()?;
        let ticket = scheduler.list(now, &mut self.rng, filter, limit);
        self.drain(by);
        Some(ticket)
    }

    /// A client of peer `by`, named `client`, cancels task `id`; returns the number its answer
    /// comes under (in [`Sim::answers`]).
    pub fn cancel(&mut self, by: usize, id: TaskId, client: &str) -> Option<u64> {
        let now = self.clock(by);
        let scheduler = self.peers[by].scheduler.as_mut()?;
        let ticket = scheduler.cancel(now, &mut self.rng, id, Some(client.into()));
        self.drain(by);
        Some(ticket)
    }

    /// Crashes peer `i`: its memory is gone, its disk stays.
    pub fn crash(&mut self, i: usize) {
        // A killed process loses what still waited in its send queues: of the messages on their
        // way from it, every other one (by a hash of its place in the queue of events, so the
        // simulator's random stream is not disturbed) is lost.
        self.crash_losing(i, |seq, _| {
            seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 1
        });
    }

    /// Crashes peer `i` right after it placed tasks: of the messages on their way from it, only
    /// placements arrive. Its grants reach their holders; the replication of them reaches no
    /// other member, which then grants from the record it had.
    pub fn crash_after_placing(&mut self, i: usize) {
        self.crash_losing(i, |_, message| !matches!(message, Message::Place { .. }));
    }

    /// Whether a placement from peer `i` is on its way.
    pub fn placing(&self, i: usize) -> bool {
        self.events.values().any(|e| {
            matches!(e, Event::Deliver { from, message: Message::Place { .. }, .. } if *from == i)
        })
    }

    /// Crashes peer `i`, losing the messages on their way from it for which `lost` holds (given
    /// each one's place in the queue of events).
    fn crash_losing(&mut self, i: usize, lost: impl Fn(u64, &Message) -> bool) {
        self.trace_task(None, || format!("peer {i} crashes"));
        self.peers[i].scheduler = None;
        self.peers[i].incarnation += 1;
        let gone: Vec<(Millis, u64)> = self
            .events
            .iter()
            .filter(|((_, seq), e)| {
                matches!(e, Event::Deliver { from, message, .. } if *from == i && lost(*seq, message))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            self.events.remove(&key);
        }
    }

    /// Restarts peer `i` from its disk.
    pub fn restart(&mut self, i: usize) {
        self.trace_task(None, || format!("peer {i} restarts"));
        let peer = &mut self.peers[i];
        let mut scheduler = Scheduler::new(peer.key.clone(), peer.config.clone());
        scheduler.set_wall_offset(peer.wall_offset);
        scheduler.set_archive(peer.archive.clone());
        // Ended records are read back only when something names them, as a peer on disk does.
        for ((table, key), bytes) in peer.disk.iter().filter(|((t, _), _)| *t != Table::Ended) {
            // The simulated disk never corrupts a row: a refused one is a bug.
            if let Err(error) = scheduler.restore(*table, bytes) {
                panic!("peer {i} refused its own stored row {key:?} of {table:?}: {error}");
            }
        }
        let restored: Vec<TaskId> = scheduler.tasks().map(|r| r.id()).collect();
        peer.scheduler = Some(scheduler);
        peer.incarnation += 1;
        self.changed.extend(restored.into_iter().map(|id| (i, id)));
        if self.peers[i].config.report_fanout > 0 {
            for _ in 0..4 {
                let j = self.rng.random_range(0..self.peers.len());
                let key = self.peers[j].me();
                if let Some(s) = self.peers[i].scheduler.as_mut() {
                    s.introduce(key);
                }
            }
        }
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
        self.peers[i].archive.keep(&action);
        match action {
            Action::Send { to, message } => {
                if let Some(&j) = self.index.get(&to) {
                    self.send(i, j, message);
                }
            }
            Action::Broadcast { gossip } => {
                let bytes = wire::encode(&gossip);
                for j in (0..self.peers.len()).filter(|&j| j != i) {
                    if !self.reaches(i, j) || self.chance(self.net.loss_permille) {
                        continue;
                    }
                    let copies = if self.chance(self.net.duplicate_permille) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
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
            }
            Action::Execute {
                task, epoch, spec, ..
            } => {
                self.trace_task(Some(&task), || {
                    format!("peer {i} starts under {}:", lease::show_epoch(epoch))
                });
                self.peers[i].executed.push((task, epoch));
                self.started.push((i, task, epoch));
                self.start_log.push((self.now, i, task, epoch));
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
                let deleted = value.is_none();
                match value {
                    Some(bytes) => disk.insert((table, key), bytes),
                    None => disk.remove(&(table, key)),
                };
                if table == Table::Records || table == Table::Ended {
                    self.changed.push((i, key));
                    if deleted {
                        self.unstored.push(key);
                    }
                }
            }
            Action::Accepted { tasks } => {
                self.unstored.extend(tasks.iter().copied());
                self.accepted.extend(tasks);
            }
            Action::Changed { task } => {
                self.trace_task(Some(&task), || {
                    let record = self.peers[i].scheduler.as_ref().and_then(|s| s.task(&task));
                    let shown = record.map(|r| self.show_record(r));
                    format!("peer {i}'s record changed ({shown:?}):")
                });
                self.changed.push((i, task));
                if self.peers[i]
                    .scheduler
                    .as_ref()
                    .and_then(|s| s.task(&task))
                    .is_some_and(|r| r.state.is_final())
                {
                    self.finals.insert(task);
                }
            }
            Action::Answer { query, record } => {
                self.answers
                    .insert((i, query), record.map(|r| r.record.state));
            }
            Action::Listed { ticket, page } => {
                self.lists.insert((i, ticket), page);
            }
            Action::Abort { .. } | Action::PeerDiscovered { .. } => {}
            // The simulated disk never changes a row.
            Action::RowRefused { task, reason } => {
                panic!("peer {i} refused its own stored row of {task:?}: {reason}")
            }
        }
    }

    /// Sends a message from `i` to `j` through the faults of the network: it may be lost (or cut
    /// off by a partition; the sender hears so after the send timeout), held back, or doubled.
    fn send(&mut self, i: usize, j: usize, message: Message) {
        self.trace_task(Some(&message), || format!("peer {i} sends to {j}:"));
        let incarnation = self.peers[i].incarnation;
        if !self.reaches(i, j) || self.chance(self.net.loss_permille) {
            let at = self.now + self.net.send_timeout_ms;
            let to = j;
            self.schedule(
                at,
                Event::Undelivered {
                    from: i,
                    to,
                    incarnation,
                    message,
                },
            );
            return;
        }
        let mut at = self.now + self.delay();
        if self.chance(self.net.reorder_permille) {
            at += self.rng.random_range(0..=self.net.reorder_max_ms);
        }
        if self.chance(self.net.duplicate_permille) {
            let again = at + self.delay();
            self.schedule(
                again,
                Event::Deliver {
                    from: i,
                    to: j,
                    message: message.clone(),
                    copy: true,
                },
            );
        }
        self.schedule(
            at,
            Event::Deliver {
                from: i,
                to: j,
                message,
                copy: false,
            },
        );
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
        let Some(((at, seq), event)) = self.events.pop_first() else {
            return false;
        };
        self.now = at;
        self.trace(&[at, seq]);
        match event {
            Event::Deliver {
                from,
                to,
                message,
                copy,
            } => self.deliver(from, to, message, copy),
            Event::Delivered {
                from,
                to,
                incarnation,
                message,
            } => {
                let now = self.clock(from);
                let to = self.peers[to].me();
                if self.peers[from].incarnation == incarnation
                    && let Some(s) = self.peers[from].scheduler.as_mut()
                {
                    s.handle_delivered(now, &mut self.rng, to, &message);
                    self.drain(from);
                }
            }
            Event::Undelivered {
                from,
                to,
                incarnation,
                message,
            } => {
                let now = self.clock(from);
                let to = self.peers[to].me();
                if self.peers[from].incarnation == incarnation
                    && let Some(s) = self.peers[from].scheduler.as_mut()
                {
                    s.handle_send_failed(now, &mut self.rng, to, message);
                    self.drain(from);
                }
            }
            Event::Gossip { to, bytes } => {
                let now = self.clock(to);
                if self.peers[to].is_up() {
                    self.gossip_bytes += bytes.len() as u64;
                    self.trace(&[to as u64, bytes.len() as u64]);
                }
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
                let now = self.clock(peer);
                if self.peers[peer].incarnation == incarnation
                    && let Some(s) = self.peers[peer].scheduler.as_mut()
                {
                    s.handle_finished(now, &mut self.rng, task, epoch, outcome);
                    self.drain(peer);
                }
            }
            Event::Tick => {
                for i in 0..self.peers.len() {
                    let now = self.clock(i);
                    if let Some(s) = self.peers[i].scheduler.as_mut() {
                        s.tick(now, &mut self.rng);
                        self.drain(i);
                    }
                }
                let next = self.now + self.net.tick_ms;
                self.schedule(next, Event::Tick);
            }
        }
        true
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message, copy: bool) {
        let incarnation = self.peers[from].incarnation;
        if !self.peers[to].is_up() || !self.reaches(from, to) {
            if !copy {
                let at = self.now + self.net.send_timeout_ms;
                self.schedule(
                    at,
                    Event::Undelivered {
                        from,
                        to,
                        incarnation,
                        message,
                    },
                );
            }
            return;
        }
        self.trace_task(Some(&message), || {
            format!("peer {to} receives from {from}:")
        });
        let sender = self.peers[from].me();
        let batch = Batch {
            frames: vec![wire::encode(&message)],
        };
        let bytes = wire::encode(&batch);
        self.messages += 1;
        if matches!(message, Message::Load { .. }) {
            self.gossip_bytes += bytes.len() as u64;
        }
        self.trace(&[from as u64, to as u64, bytes.len() as u64]);
        let now = self.clock(to);
        if let Some(s) = self.peers[to].scheduler.as_mut() {
            s.handle_batch(now, &mut self.rng, sender, &bytes);
        }
        self.drain(to);
        if copy {
            return;
        }
        if !self.reaches(to, from) {
            // The acknowledgement cannot come back: the sender takes it as lost.
            let at = self.now + self.net.send_timeout_ms;
            self.schedule(
                at,
                Event::Undelivered {
                    from,
                    to,
                    incarnation,
                    message,
                },
            );
            return;
        }
        let back = self.now + self.delay();
        self.schedule(
            back,
            Event::Delivered {
                from,
                to,
                incarnation,
                message,
            },
        );
    }

    /// Steps until `done` holds or the virtual clock passes `deadline`, checking the safety
    /// invariants after every step; whether `done` held. Panics, naming the seed, if an
    /// invariant breaks.
    pub fn run_until(&mut self, deadline: Millis, mut done: impl FnMut(&Sim) -> bool) -> bool {
        while !done(self) {
            if self.now > deadline || !self.step() {
                return done(self);
            }
            if let Err(broken) = invariants::check_step(self) {
                panic!("seed {}: at t={} ms: {broken}", self.seed, self.now);
            }
        }
        true
    }

    /// The newest record of a task that a live peer keeps, in memory or (ended) on its disk.
    pub fn record(&self, id: &TaskId) -> Option<taskswarm_protocol::TaskRecord> {
        let in_memory = self
            .peers
            .iter()
            .filter_map(|p| p.scheduler.as_ref())
            .filter_map(|s| s.task(id))
            .cloned();
        let on_disk = self
            .peers
            .iter()
            .filter(|p| p.is_up())
            .filter_map(|p| p.disk.get(&(Table::Ended, *id)))
            .filter_map(|bytes| taskswarm_protocol::SealedRecord::from_bytes(bytes).ok())
            .map(|sealed| sealed.record);
        in_memory.chain(on_disk).max_by_key(|r| r.version)
    }

    /// For `SIM_DEBUG`: each listed task that has not ended everywhere, with when and where it started,
    /// every live peer's copy (state, version, epoch, holder, home set by peer index, history),
    /// and the peers that hold it.
    #[allow(clippy::print_stdout)] // a test's diagnostic output, shown when it fails
    pub fn print_unended(&self, ids: &[TaskId]) {
        let unended = |id: &TaskId| {
            !self.finals.contains(id)
                || self.peers.iter().any(|p| {
                    p.scheduler
                        .as_ref()
                        .and_then(|s| s.task(id))
                        .is_some_and(|r| !r.state.is_final())
                })
        };
        for id in ids.iter().filter(|id| unended(id)) {
            let starts: Vec<_> = self
                .start_log
                .iter()
                .filter(|(_, _, t, _)| t == id)
                .collect();
            println!("{id:?}: started {starts:?}; now {}", self.now);
            for (i, scheduler) in self
                .peers
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.scheduler.as_ref().map(|s| (i, s)))
            {
                let held: Vec<u64> = scheduler
                    .held()
                    .filter(|(t, _)| t == id)
                    .map(|(_, e)| e)
                    .collect();
                if !held.is_empty() {
                    println!("  held at peer {i} under {held:?}");
                }
                let Some(r) = scheduler.task(id) else {
                    continue;
                };
                let home: Vec<_> = r.home().iter().filter_map(|k| self.index_of(k)).collect();
                let history: Vec<String> = r
                    .history
                    .iter()
                    .map(|t| format!("{}:{}", t.state.as_str(), t.note))
                    .collect();
                println!(
                    "  peer {i}: {} v{} epoch {} holder {:?} home {home:?} {history:?}",
                    r.state.as_str(),
                    r.version,
                    r.epoch,
                    r.holder.and_then(|k| self.index_of(&k))
                );
            }
        }
    }

    /// Whether every listed task has had a final record at some peer.
    pub fn all_final(&self, ids: &[TaskId]) -> bool {
        ids.iter().all(|id| self.finals.contains(id))
    }
}
