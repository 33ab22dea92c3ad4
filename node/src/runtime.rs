//! The event loop: the one task that owns a peer's swarm, scheduler and store, and carries out the
//! scheduler's actions.
//!
//! Inputs (swarm events, client commands, finished attempts, the tick, the store's progress,
//! shutdown) arrive on one `select!`; after each (and the others ready with it), the loop drains
//! the scheduler's actions, hands their writes to the store's [`Committer`] as one batch, and
//! holds back every action that follows a write (messages, attempts started, clients answered)
//! until the committer reports that write durable; actions that claim nothing about the disk
//! (load reports, aborts) go at once. The loop never waits for the disk itself: while one group
//! of writes is fsync'd it handles the next inputs, whose writes then share the next commit.
//! Time for the scheduler is milliseconds since the loop started, on tokio's monotonic clock.
//! Every channel is bounded.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, Swarm, gossipsub, identify};
use rand::SeedableRng;
use rand::rngs::StdRng;
use taskswarm_protocol::{
    Action, Batch, Message, Millis, Outcome, PeerKey, Scheduler, SealedRecord, Submission, TaskId,
    TaskRecord, TaskSpec, TaskState, wire,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::client::Command;
use crate::executor::Executor;
use crate::keys;
use crate::network::{Behaviour, BehaviourEvent, LOAD_TOPIC};
use crate::store::{Committer, Store, StoreArchive, Write};
use crate::view::{ClusterView, CountersView, PeerInfo, TaskView};

/// How often the scheduler is ticked.
const TICK: Duration = Duration::from_millis(20);
/// How long a task submitted through this peer is remembered for its latency: one still running
/// after that (or whose record left this peer) is not measured.
const SUBMITTED_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How often the submissions older than [`SUBMITTED_KEPT`] are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the swarm's load is sampled for `GET /v1/cluster/load`.
const LOAD_SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How many load samples are kept: ten minutes' worth.
const LOAD_SAMPLES_KEPT: usize = 120;
/// How often bootstrap peers are dialled again while none is connected.
const REDIAL: Duration = Duration::from_secs(2);
/// How long a peer that is shutting down runs on after it said goodbye, so the goodbye leaves.
const LEAVE_GRACE: Duration = Duration::from_millis(300);

/// An attempt that ended.
#[derive(Debug)]
pub(crate) struct Finished {
    task: TaskId,
    epoch: u64,
    outcome: Outcome,
}

/// Everything the event loop owns.
pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) scheduler: Scheduler,
    pub(crate) committer: Committer,
    /// The store, read for the ended records clients list.
    pub(crate) store: Store,
    /// The scheduler's view of the ended records, told what is handed in and committed.
    pub(crate) archive: StoreArchive,
    pub(crate) executor: Executor,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) listen: watch::Sender<Vec<Multiaddr>>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The peers admitted, if the operator keeps an allowlist.
    pub(crate) allowlist: Option<std::collections::BTreeSet<libp2p::PeerId>>,
    /// How this peer admits others, for the cluster view.
    pub(crate) admission: crate::admission::AdmissionView,
    /// What it measures as things happen (shared with its task runs and its store's writer).
    pub(crate) metrics: crate::metrics::Metrics,
}

/// What a query to other peers is for.
enum Purpose {
    Proof(oneshot::Sender<Option<SealedRecord>>),
    Show(oneshot::Sender<Option<TaskView>>),
    Wait(oneshot::Sender<Option<TaskView>>),
    Cancel(oneshot::Sender<bool>),
}

/// A submission waiting for its tasks to be stored on their home sets.
struct PendingSubmit {
    ids: Vec<TaskId>,
    remaining: usize,
    reply: oneshot::Sender<Vec<TaskId>>,
}

/// At most this many requests are in flight to one peer; messages sent meanwhile wait and go
/// together in the next request. Small bursts go out at once; large ones are batched instead of
/// opening a stream per message.
const MAX_IN_FLIGHT_PER_PEER: usize = 4;
/// At most this many ended records (the most recent) are listed from disk.
const LIST_ENDED_MAX: usize = 10_000;
/// At most this many inputs share one store transaction.
const MAX_GROUP: usize = 256;
/// A batch is closed once it holds this many bytes.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Messages waiting to be sent to one peer, each with its encoding.
#[derive(Default)]
struct SendQueue {
    waiting: std::collections::VecDeque<(Message, Vec<u8>)>,
    in_flight: usize,
}

struct State {
    rng: StdRng,
    /// Set while draining: when the drain gives up on what still runs.
    drain_until: Option<tokio::time::Instant>,
    started: Instant,
    finished_tx: mpsc::Sender<Finished>,
    /// Requests sent and not yet answered: the peer and the messages they carry.
    in_flight: HashMap<OutboundRequestId, (PeerKey, Vec<Message>)>,
    /// Messages waiting to go, per peer.
    outgoing: HashMap<PeerKey, SendQueue>,
    submits: HashMap<u64, PendingSubmit>,
    submit_of: HashMap<TaskId, u64>,
    next_submit: u64,
    queries: HashMap<u64, Purpose>,
    /// The swarm's load, sampled every [`LOAD_SAMPLE_EVERY`], oldest first.
    load_history: VecDeque<crate::view::LoadSample>,
    /// Swarm-wide lists being gathered, by ticket.
    lists: HashMap<u64, oneshot::Sender<crate::api_client::TaskList>>,
    aborts: HashMap<(TaskId, u64), oneshot::Sender<()>>,
    topic: gossipsub::IdentTopic,
    nonce: u64,
    network: crate::view::NetworkView,
    /// Actions that follow a write, each with the number of the store batch it waits for, in
    /// the order the scheduler emitted them.
    held: VecDeque<(u64, Action)>,
    /// Clients waiting until this peer knows so many peers, itself included.
    peer_waits: Vec<(usize, oneshot::Sender<ClusterView>)>,
    /// When each task submitted through this peer and not yet ended was submitted (for its
    /// latency); entries older than [`SUBMITTED_KEPT`] are forgotten.
    submitted_at: HashMap<TaskId, Instant>,
}

/// The span of one task's events on this peer: its full id and the epoch (`major.minor`) they
/// concern. Every peer names a task the same way, so a task's life can be followed across their
/// logs (`--log-format json` puts the span in each line).
fn task_span(task: &TaskId, epoch: u64) -> tracing::Span {
    tracing::debug_span!("task", id = %task, epoch = %crate::view::show_epoch(epoch))
}

impl EventLoop {
    /// Runs until shutdown is signalled (or every handle to it is dropped), or until the store
    /// fails (a peer that cannot store must not acknowledge anything).
    pub(crate) async fn run(mut self) {
        let slots = self.scheduler.config().slots as usize;
        let (finished_tx, mut finished_rx) = mpsc::channel(slots + 1);
        let mut rng = StdRng::from_os_rng();
        let nonce = rand::Rng::random(&mut rng);
        let mut state = State {
            rng,
            started: Instant::now(),
            finished_tx,
            in_flight: HashMap::new(),
            outgoing: HashMap::new(),
            submits: HashMap::new(),
            submit_of: HashMap::new(),
            next_submit: 0,
            queries: HashMap::new(),
            lists: HashMap::new(),
            load_history: VecDeque::new(),
            aborts: HashMap::new(),
            topic: gossipsub::IdentTopic::new(LOAD_TOPIC),
            nonce,
            network: crate::view::NetworkView::default(),
            held: VecDeque::new(),
            drain_until: None,
            peer_waits: Vec::new(),
            submitted_at: HashMap::new(),
        };
        self.scheduler.set_wall_offset(wall_clock_ms() as i64);
        self.dial_bootstrap();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_redial = Instant::now();
        let mut last_prune = Instant::now();
        let mut last_sample: Option<Instant> = None;
        // Set when shutdown was asked for: the peer has left (see `leave`) and runs on until then.
        let mut leaving_until: Option<tokio::time::Instant> = None;
        let mut commands_open = true;
        loop {
            let grace_over = async move {
                match leaving_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(&mut state, event),
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(&mut state, command),
                    // Every handle to the peer is gone: it shuts down as if asked to.
                    None => {
                        commands_open = false;
                        if leaving_until.is_none() {
                            leaving_until = Some(self.leave(&mut state));
                        }
                    }
                },
                Some(done) = finished_rx.recv() => self.on_finished(&mut state, done),
                _ = tick.tick() => {
                    let now = state.now();
                    self.scheduler.tick(now, &mut state.rng);
                    self.forget_gone_waiters(&mut state);
                    if last_prune.elapsed() >= PRUNE_EVERY {
                        last_prune = Instant::now();
                        state.submitted_at.retain(|_, at| at.elapsed() < SUBMITTED_KEPT);
                    }
                    if last_sample.is_none_or(|at| at.elapsed() >= LOAD_SAMPLE_EVERY) {
                        last_sample = Some(Instant::now());
                        self.sample_load(&mut state);
                    }
                    if last_redial.elapsed() >= REDIAL && self.swarm.connected_peers().next().is_none() {
                        last_redial = Instant::now();
                        self.dial_bootstrap();
                    }
                }
                _ = self.committer.changed() => self.release_committed(&mut state),
                _ = self.shutdown.changed(), if leaving_until.is_none() => {
                    leaving_until = Some(self.leave(&mut state));
                }
                _ = grace_over => break,
            }
            self.take_ready(&mut state, &mut finished_rx);
            self.apply_actions(&mut state);
            self.answer_peer_waits(&mut state);
            // A drain ends when what this peer ran is done and reported, or at its deadline
            // (what still runs is then stopped and taken over at once, as on a plain leave).
            if let Some(until) = state.drain_until
                && leaving_until.is_none()
                && (self.scheduler.is_drained() || tokio::time::Instant::now() >= until)
            {
                if !self.scheduler.is_drained() {
                    tracing::warn!("drain deadline passed with tasks still running");
                }
                leaving_until = Some(self.leave(&mut state));
                self.apply_actions(&mut state);
            }
            if let Some(error) = self.committer.progress().failed {
                tracing::error!(%error, "the store failed; stopping this peer");
                break;
            }
        }
        for (_, abort) in state.aborts.drain() {
            let _ = abort.send(());
        }
        self.committer.close().await;
        tracing::info!("event loop stopped");
    }

    /// Leaves the swarm on shutdown: the scheduler stops what it holds and says goodbye in a
    /// signed load report, so the others take over its tasks now rather than after a lease TTL.
    /// Returns until when the loop runs on: long enough for the goodbye to leave (gossip does not
    /// confirm delivery; a lost goodbye costs the others a TTL, as a crash does).
    fn leave(&mut self, state: &mut State) -> tokio::time::Instant {
        let now = state.now();
        tracing::info!("leaving the swarm");
        self.scheduler.leave(now, &mut state.rng);
        tokio::time::Instant::now() + LEAVE_GRACE
    }

    fn dial_bootstrap(&mut self) {
        for addr in self.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
    }

    fn on_swarm_event(&mut self, state: &mut State, event: SwarmEvent<BehaviourEvent>) {
        let now = state.now();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen.send_modify(|addrs| addrs.push(address));
                let addrs = self.listen.borrow().iter().map(|a| a.to_vec()).collect();
                self.scheduler.set_addrs(addrs);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                state.network.connections += 1;
                tracing::debug!(%peer_id, "connected");
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                state.network.connections = state.network.connections.saturating_sub(1);
                tracing::debug!(%peer_id, ?cause, "disconnected");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                state.network.dials_failed += 1;
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                // A stranger without the swarm key fails here, in the private-network or noise
                // handshake; so does a peer the allowlist or the limits refuse.
                state.network.incoming_refused += 1;
                tracing::debug!(%send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                // A member may relay a report from a peer this one does not admit: drop it, so
                // the stranger is never placed on or stolen from.
                self.metrics.report_received(message.data.len());
                let admitted = match (&self.allowlist, message.source) {
                    (None, _) => true,
                    (Some(list), Some(source)) => list.contains(&source),
                    (Some(_), None) => false,
                };
                if admitted {
                    self.scheduler
                        .handle_gossip(now, &mut state.rng, &message.data);
                } else {
                    state.network.reports_from_strangers += 1;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.add_peer_address(peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Messages(event)) => {
                self.on_message_event(state, event);
            }
            _ => {}
        }
    }

    fn on_finished(&mut self, state: &mut State, done: Finished) {
        let now = state.now();
        state.aborts.remove(&(done.task, done.epoch));
        self.scheduler
            .handle_finished(now, &mut state.rng, done.task, done.epoch, done.outcome);
    }

    /// Handles more inputs that are ready right now (a bounded number), so that one store
    /// transaction and one round of sends cover a burst of them: group commit. Nothing handled
    /// here is acknowledged before that transaction commits.
    fn take_ready(&mut self, state: &mut State, finished: &mut mpsc::Receiver<Finished>) {
        for _ in 0..MAX_GROUP {
            if let Some(event) = self.swarm.select_next_some().now_or_never() {
                self.on_swarm_event(state, event);
            } else if let Ok(done) = finished.try_recv() {
                self.on_finished(state, done);
            } else if let Ok(command) = self.commands.try_recv() {
                self.on_command(state, command);
            } else {
                break;
            }
        }
    }

    fn on_message_event(&mut self, state: &mut State, event: request_response::Event<Vec<u8>, ()>) {
        let now = state.now();
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // The acknowledgement only says the bytes arrived; a closed channel is harmless.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .messages
                    .send_response(channel, ());
                match keys::peer_key(&peer) {
                    Some(from) => self
                        .scheduler
                        .handle_batch(now, &mut state.rng, from, &request),
                    None => tracing::debug!(%peer, "message from a peer without an ed25519 id"),
                }
            }
            request_response::Event::Message {
                message: request_response::Message::Response { request_id, .. },
                ..
            } => {
                if let Some((to, messages)) = state.in_flight.remove(&request_id) {
                    state.answered(&to);
                    for message in &messages {
                        self.scheduler
                            .handle_delivered(now, &mut state.rng, to, message);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((to, messages)) = state.in_flight.remove(&request_id) {
                    state.answered(&to);
                    let kinds: Vec<&str> = messages.iter().map(Message::kind).collect();
                    tracing::debug!(%peer, %error, ?kinds, "messages not delivered");
                    for message in messages {
                        self.scheduler
                            .handle_send_failed(now, &mut state.rng, to, message);
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound message failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_command(&mut self, state: &mut State, command: Command) {
        let now = state.now();
        match command {
            Command::Submit {
                tasks,
                client,
                reply,
            } => self.submit(state, tasks, client, reply),
            Command::Task { id, reply } => match self.look_up(&id).cloned() {
                Some(record) => {
                    let _ = reply.send(Some(self.view_of(now, &record)));
                }
                None => {
                    let query = self.scheduler.query(now, &mut state.rng, id);
                    state.queries.insert(query, Purpose::Show(reply));
                }
            },
            Command::Proof { id, reply } => match self.scheduler.sealed(&id) {
                Some(sealed) => {
                    let _ = reply.send(Some(sealed));
                }
                None => {
                    let query = self.scheduler.query(now, &mut state.rng, id);
                    state.queries.insert(query, Purpose::Proof(reply));
                }
            },
            Command::Wait { id, reply } => {
                let ticket = self.scheduler.watch(now, &mut state.rng, id);
                state.queries.insert(ticket, Purpose::Wait(reply));
            }
            Command::Tasks { filter, reply } => {
                let _ = reply.send(self.list(now, &filter));
            }
            Command::List {
                filter,
                limit,
                reply,
            } => {
                let ticket = self.scheduler.list(now, &mut state.rng, filter, limit);
                state.lists.insert(ticket, reply);
            }
            Command::Drain { deadline, reply } => {
                if state.drain_until.is_none() && !self.scheduler.is_leaving() {
                    tracing::info!(?deadline, "draining");
                    state.drain_until = Some(tokio::time::Instant::now() + deadline);
                    self.scheduler.drain(now, &mut state.rng);
                }
                let _ = reply.send(());
            }
            Command::Cancel { id, client, reply } => {
                let ticket = self.scheduler.cancel(now, &mut state.rng, id, client);
                state.queries.insert(ticket, Purpose::Cancel(reply));
            }
            Command::Cluster { reply } => {
                let _ = reply.send(self.cluster(now, &state.network));
            }
            Command::LoadHistory { reply } => {
                let history = crate::view::LoadHistory {
                    interval_ms: LOAD_SAMPLE_EVERY.as_millis() as u64,
                    samples: state.load_history.iter().cloned().collect(),
                };
                let _ = reply.send(history);
            }
            Command::WaitForPeers { peers, reply } => state.peer_waits.push((peers, reply)),
            Command::Metrics { reply } => {
                let now = self.snapshot(&state.network);
                let _ = reply.send(self.metrics.render(&now));
            }
            Command::SetAllowlist { peers, reply } => {
                let _ = reply.send(self.set_allowlist(peers));
            }
        }
    }

    /// The record of a task this peer keeps, read back from disk if it ended and left memory; a
    /// row that changed on disk is refused (the scheduler says so with `RowRefused`, and the task
    /// is then asked of the others).
    fn look_up(&mut self, id: &TaskId) -> Option<&TaskRecord> {
        self.scheduler.look_up(id)
    }

    /// Samples every live peer's load for the history the dashboard draws.
    fn sample_load(&self, state: &mut State) {
        let view = self.cluster(state.now(), &state.network);
        let peers = std::iter::once(&view.me)
            .chain(&view.peers)
            .map(|p| {
                let load = crate::view::PeerLoad {
                    queued: p.queued,
                    running: p.running,
                    slots: p.slots,
                };
                (p.peer_id.clone(), load)
            })
            .collect();
        let sample = crate::view::LoadSample {
            at_ms: wall_clock_ms(),
            peers,
        };
        if state.load_history.len() >= LOAD_SAMPLES_KEPT {
            state.load_history.pop_front();
        }
        state.load_history.push_back(sample);
    }

    /// The view of a record this peer keeps, saying why it is not running if it is not.
    fn view_of(&self, now: Millis, record: &TaskRecord) -> TaskView {
        let mut view = TaskView::of(record);
        if let Some(why) = self.scheduler.why_not_running(now, record) {
            view.reason = Some(why.describe(crate::view::peer_name));
        }
        view
    }

    /// The records this peer keeps that `filter` matches: those in memory,
    /// and, for ended states, the [`LIST_ENDED_MAX`] stored most recently.
    fn list(&self, now: Millis, filter: &taskswarm_protocol::listing::ListFilter) -> Vec<TaskView> {
        let matches = |r: &TaskRecord| filter.matches(r);
        let mut views: Vec<TaskView> = self
            .scheduler
            .tasks()
            .filter(|r| matches(r))
            .map(|r| self.view_of(now, r))
            .collect();
        if filter.state.is_some_and(|s| !s.is_final()) {
            return views;
        }
        let in_memory: std::collections::HashSet<String> =
            views.iter().map(|v| v.id.clone()).collect();
        let ended = self
            .store
            .recent_ended(LIST_ENDED_MAX)
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot read the ended records");
                Vec::new()
            });
        views.extend(
            ended
                .iter()
                .filter_map(|bytes| SealedRecord::from_bytes(bytes).ok())
                .filter(|sealed| matches(&sealed.record))
                .map(|sealed| TaskView::of(&sealed.record))
                .filter(|view| !in_memory.contains(&view.id)),
        );
        views
    }

    fn submit(
        &mut self,
        state: &mut State,
        tasks: Vec<crate::spec::NewTask>,
        client: Option<String>,
        reply: oneshot::Sender<Vec<TaskId>>,
    ) {
        let now = state.now();
        let me = self.scheduler.me();
        // A task may name earlier tasks of the same submission as dependencies (a job, in
        // dependency order); the scheduler signs them in order and resolves those.
        let specs = tasks
            .into_iter()
            .map(|task| {
                state.nonce = state.nonce.wrapping_add(1);
                let spec = TaskSpec {
                    client: client.clone(),
                    timeout_ms: task.timeout.map(|t| t.as_millis() as u64),
                    retry: task.retry,
                    placement: task.placement,
                    needs: task.needs,
                    priority: task.priority,
                    cost_ms: task.cost.map(|c| c.as_millis() as u64),
                    name: task.name,
                    run_anyway: task.run_anyway,
                    ..TaskSpec::new(me, state.nonce, task.kind)
                };
                Submission {
                    spec,
                    after: task.after,
                }
            })
            .collect();
        let ids: Vec<TaskId> = self
            .scheduler
            .submit(now, &mut state.rng, specs)
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        if ids.is_empty() {
            let _ = reply.send(ids);
            return;
        }
        state.next_submit += 1;
        let number = state.next_submit;
        let at = Instant::now();
        for id in &ids {
            state.submit_of.insert(*id, number);
            state.submitted_at.insert(*id, at);
        }
        let pending = PendingSubmit {
            remaining: ids.len(),
            ids,
            reply,
        };
        state.submits.insert(number, pending);
    }

    /// Answers the clients waiting for a swarm of a size this peer now knows, and forgets those
    /// that stopped waiting.
    fn answer_peer_waits(&mut self, state: &mut State) {
        if state.peer_waits.is_empty() {
            return;
        }
        let known = self.scheduler.peers().count() + 1;
        let waits = std::mem::take(&mut state.peer_waits);
        let (met, waiting): (Vec<_>, Vec<_>) =
            waits.into_iter().partition(|(wanted, _)| *wanted <= known);
        state.peer_waits = waiting
            .into_iter()
            .filter(|(_, reply)| !reply.is_closed())
            .collect();
        if met.is_empty() {
            return;
        }
        let view = self.cluster(state.now(), &state.network);
        for (_, reply) in met {
            let _ = reply.send(view.clone());
        }
    }

    /// Stops the waits of clients that went away (a long poll that timed out), so the scheduler
    /// stops asking about their tasks.
    fn forget_gone_waiters(&mut self, state: &mut State) {
        let gone: Vec<u64> = state
            .queries
            .iter()
            .filter(|(_, purpose)| matches!(purpose, Purpose::Wait(reply) if reply.is_closed()))
            .map(|(ticket, _)| *ticket)
            .collect();
        for ticket in gone {
            state.queries.remove(&ticket);
            self.scheduler.unwatch(ticket);
        }
    }

    /// Replaces the allowlist: admits the new peers, and closes the connections of those no longer
    /// on it. False if this peer was started without one.
    fn set_allowlist(&mut self, peers: std::collections::BTreeSet<libp2p::PeerId>) -> bool {
        let Some(old) = self.allowlist.replace(peers.clone()) else {
            self.allowlist = None;
            return false;
        };
        let Some(list) = self.swarm.behaviour_mut().allowlist.as_mut() else {
            return false;
        };
        for gone in old.difference(&peers) {
            list.disallow_peer(*gone);
        }
        for new in peers.difference(&old) {
            list.allow_peer(*new);
        }
        self.admission.allowlist = Some(peers.len());
        tracing::info!(peers = peers.len(), "allowlist replaced");
        true
    }

    /// How this peer stands now, for its metrics.
    fn snapshot(&self, network: &crate::view::NetworkView) -> crate::metrics::Snapshot {
        let s = &self.scheduler;
        let mut records = std::collections::BTreeMap::new();
        for record in s.tasks() {
            *records.entry(record.state).or_insert(0) += 1;
        }
        crate::metrics::Snapshot {
            counters: s.counters().clone(),
            queued: s.queued() as u64,
            running: u64::from(s.running()),
            slots: u64::from(s.config().slots),
            peers: s.peers().count() as u64,
            connections: network.connections,
            records,
            store: self.committer.progress().stats,
        }
    }

    fn cluster(&self, now: Millis, network: &crate::view::NetworkView) -> ClusterView {
        let s = &self.scheduler;
        let config = s.config();
        let offer = &config.capabilities.offer;
        let me = PeerInfo {
            peer_id: self.swarm.local_peer_id().to_string(),
            queued: s.queued() as u32,
            running: s.running(),
            slots: config.slots,
            exec: config.capabilities.exec,
            handlers: config.capabilities.handlers.clone(),
            last_heard_ms: 0,
            draining: s.is_draining(),
            version: config.about.version.clone(),
            uptime_ms: now,
            api: config.about.api.clone(),
            cpus: taskswarm_protocol::resources::format_cpus(offer.capacity.cpu_milli),
            memory: taskswarm_protocol::resources::format_bytes(offer.capacity.memory),
            disk: taskswarm_protocol::resources::format_bytes(offer.capacity.disk),
            labels: offer.labels.iter().map(ToString::to_string).collect(),
        };
        let mut peers: Vec<PeerInfo> = s
            .peers()
            .map(|(key, view)| {
                let heard = now.saturating_sub(view.heard_at);
                PeerInfo::of_report(crate::view::peer_name(key), &view.report, heard)
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let swarm = crate::view::SwarmTotals::of(std::iter::once(&me).chain(&peers));
        ClusterView {
            me,
            peers,
            swarm,
            counters: CountersView::from(s.counters()),
            admission: self.admission.clone(),
            network: network.clone(),
            store: self.committer.progress().stats,
        }
    }

    /// Carries out the scheduler's actions in order: the writes go to the committer as one batch,
    /// and every action after the first write waits for it (and every action after one that
    /// waits, waits too, so the order holds); actions that claim nothing about the disk go at
    /// once.
    fn apply_actions(&mut self, state: &mut State) {
        let mut writes: Vec<Write> = Vec::new();
        while let Some(action) = self.scheduler.poll_action() {
            match action {
                Action::Write { table, key, value } => writes.push((table, key, value)),
                action if claims_nothing(&action) => self.carry_out(state, action),
                action => {
                    let after = self.committer.submitted() + u64::from(!writes.is_empty());
                    if state.held.is_empty() && after <= self.committer.progress().committed {
                        self.carry_out(state, action);
                    } else {
                        state.held.push_back((after, action));
                    }
                }
            }
        }
        if !writes.is_empty() {
            self.archive
                .handed_in(self.committer.submitted() + 1, &writes);
            self.committer.submit(writes);
        }
        self.flush(state);
    }

    /// Carries out the actions whose writes the committer has made durable.
    fn release_committed(&mut self, state: &mut State) {
        let committed = self.committer.progress().committed;
        self.archive.committed(committed);
        while let Some((after, _)) = state.held.front()
            && *after <= committed
        {
            if let Some((_, action)) = state.held.pop_front() {
                self.carry_out(state, action);
            }
        }
    }

    /// Carries out one action other than a write.
    fn carry_out(&mut self, state: &mut State, action: Action) {
        match action {
            Action::Write { .. } => {}
            Action::Send { to, message } => self.send(state, to, message),
            Action::Broadcast { gossip } => self.publish(state, &gossip),
            Action::Execute {
                task,
                epoch,
                spec,
                inputs,
            } => {
                let executor = self.executor.clone();
                let metrics = self.metrics.clone();
                let done = state.finished_tx.clone();
                let (abort_tx, abort_rx) = oneshot::channel();
                state.aborts.insert((task, epoch), abort_tx);
                let run = async move {
                    tracing::debug!("attempt started");
                    let began = Instant::now();
                    let outcome = executor.run(task, epoch, *spec, inputs, abort_rx).await;
                    let ending = taskswarm_protocol::retry::Ending::of(&outcome);
                    metrics.attempt(ending.as_str(), began.elapsed());
                    tracing::debug!(ending = ending.as_str(), "attempt ended");
                    let _ = done
                        .send(Finished {
                            task,
                            epoch,
                            outcome,
                        })
                        .await;
                };
                tokio::spawn(tracing::Instrument::instrument(
                    run,
                    task_span(&task, epoch),
                ));
            }
            Action::Abort { task, epoch } => {
                if let Some(abort) = state.aborts.remove(&(task, epoch)) {
                    tracing::info!(task = %task.short(), epoch, "stopping an attempt");
                    let _ = abort.send(());
                }
            }
            // Clients wait through the scheduler's watches (answered with `Answer`).
            Action::Changed { task } => self.changed(state, &task),
            Action::Accepted { tasks } => {
                self.metrics.submitted(tasks.len());
                accepted(state, &tasks);
            }
            Action::Answer { query, record } => self.answer(state, query, record),
            Action::Listed { ticket, page } => {
                if let Some(reply) = state.lists.remove(&ticket) {
                    let _ = reply.send(list_of(page));
                }
            }
            Action::PeerDiscovered { peer, addrs } => self.learn_peer(peer, addrs),
            Action::RowRefused { task, reason } => tracing::error!(
                %task,
                %reason,
                "refusing a stored row: it changed on disk or cannot be read; the other members \
                 of the task's home set send the record again"
            ),
        }
    }

    /// A task's record here changed: if it was submitted through this peer and has ended, its
    /// latency is measured; and the change is logged.
    fn changed(&self, state: &mut State, task: &TaskId) {
        if let Some(record) = self.scheduler.task(task)
            && record.state.is_final()
            && let Some(at) = state.submitted_at.remove(task)
        {
            self.metrics.ended(at.elapsed());
        }
        self.log_change(task);
    }

    /// Logs (at debug level, in the task's span) how a task's record here now stands, so that
    /// its life can be followed through every peer's log.
    fn log_change(&self, task: &TaskId) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let Some(record) = self.scheduler.task(task) else {
            return;
        };
        let _span = task_span(task, record.epoch).entered();
        tracing::debug!(
            state = record.state.as_str(),
            holder = record.holder.as_ref().map(crate::view::peer_name),
            note = record.history.last().map(|t| t.note.as_str()),
            "record changed"
        );
    }

    /// Sends what waits for each peer that has room for another request in flight.
    fn flush(&mut self, state: &mut State) {
        for (to, queue) in state.outgoing.iter_mut() {
            while !queue.waiting.is_empty() && queue.in_flight < MAX_IN_FLIGHT_PER_PEER {
                let Some(peer_id) = keys::peer_id(to) else {
                    break;
                };
                let mut batch = Batch::default();
                let mut messages = Vec::new();
                let mut bytes = 0;
                while bytes < MAX_BATCH_BYTES
                    && let Some((message, frame)) = queue.waiting.pop_front()
                {
                    bytes += frame.len();
                    batch.frames.push(frame);
                    messages.push(message);
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .messages
                    .send_request(&peer_id, wire::encode(&batch));
                queue.in_flight += 1;
                state.in_flight.insert(id, (*to, messages));
            }
        }
        state
            .outgoing
            .retain(|_, q| !q.waiting.is_empty() || q.in_flight > 0);
    }

    /// Publishes gossip once some peer has subscribed to the topic (before that there is nobody
    /// to tell, and gossipsub would refuse).
    fn publish(&mut self, state: &State, gossip: &taskswarm_protocol::Gossip) {
        let hash = state.topic.hash();
        let gossipsub = &mut self.swarm.behaviour_mut().gossipsub;
        if !gossipsub
            .all_peers()
            .any(|(_, topics)| topics.contains(&&hash))
        {
            return;
        }
        let bytes = wire::encode(gossip);
        let size = bytes.len();
        match gossipsub.publish(state.topic.clone(), bytes) {
            Ok(_) => self
                .metrics
                .report_sent(size, self.scheduler.held().count()),
            Err(e) => tracing::debug!(error = %e, "load report not published"),
        }
    }

    fn send(&mut self, state: &mut State, to: PeerKey, message: Message) {
        let now = state.now();
        if keys::peer_id(&to).is_none() {
            self.scheduler
                .handle_send_failed(now, &mut state.rng, to, message);
            return;
        }
        let frame = wire::encode(&message);
        state
            .outgoing
            .entry(to)
            .or_default()
            .waiting
            .push_back((message, frame));
    }

    fn answer(&mut self, state: &mut State, query: u64, record: Option<Box<SealedRecord>>) {
        match state.queries.remove(&query) {
            Some(Purpose::Proof(reply)) => {
                let _ = reply.send(record.map(|r| *r));
            }
            Some(Purpose::Show(reply)) => {
                let _ = reply.send(record.map(|r| TaskView::of(&r.record)));
            }
            Some(Purpose::Wait(reply)) => {
                let _ = reply.send(record.map(|r| TaskView::of(&r.record)));
            }
            Some(Purpose::Cancel(reply)) => {
                let _ = reply.send(record.is_some());
            }
            None => {}
        }
    }

    fn learn_peer(&mut self, peer: PeerKey, addrs: Vec<Vec<u8>>) {
        let Some(peer_id) = keys::peer_id(&peer) else {
            return;
        };
        let addrs: Vec<Multiaddr> = addrs
            .into_iter()
            .filter_map(|bytes| Multiaddr::try_from(bytes).ok())
            .collect();
        tracing::info!(%peer_id, ?addrs, "new peer");
        for addr in &addrs {
            self.swarm.add_peer_address(peer_id, addr.clone());
        }
        let dial = DialOpts::peer_id(peer_id)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.swarm.dial(dial) {
            tracing::debug!(%peer_id, error = %e, "not dialling a new peer");
        }
    }
}

/// Whether an action may be carried out before the writes emitted ahead of it are durable: it
/// acknowledges nothing and hands nothing over (a load report, a start check or its answer,
/// stopping an attempt, a peer learnt of, a wake-up).
fn claims_nothing(action: &Action) -> bool {
    match action {
        Action::Broadcast { .. }
        | Action::Abort { .. }
        | Action::Changed { .. }
        | Action::PeerDiscovered { .. }
        | Action::RowRefused { .. } => true,
        Action::Send { message, .. } => matches!(
            message,
            Message::Load { .. } | Message::Ping { .. } | Message::Pong { .. }
        ),
        Action::Write { .. }
        | Action::Execute { .. }
        | Action::Accepted { .. }
        | Action::Answer { .. }
        | Action::Listed { .. } => false,
    }
}

/// A page of the swarm's tasks as the API answers it.
fn list_of(page: taskswarm_protocol::listing::Page) -> crate::api_client::TaskList {
    let tasks = page
        .entries
        .iter()
        .map(|entry| {
            let mut view = TaskView::of(&entry.sealed.record);
            if let Some(why) = &entry.why {
                view.reason = Some(why.describe(crate::view::peer_name));
            }
            view
        })
        .collect();
    crate::api_client::TaskList {
        scope: "the swarm: every live peer was asked for the records it keeps".into(),
        tasks,
        next: page.next.map(|c| c.to_text()),
        peers_asked: Some(page.asked),
        peers_answered: Some(page.answered),
        counts: Some(
            TaskState::ALL
                .iter()
                .zip(page.counts)
                .map(|(state, n)| (state.as_str().to_string(), n))
                .collect(),
        ),
    }
}

/// Answers the submissions whose every task is now stored on its home set.
fn accepted(state: &mut State, tasks: &[TaskId]) {
    for id in tasks {
        let Some(number) = state.submit_of.remove(id) else {
            continue;
        };
        let done = state.submits.get_mut(&number).is_some_and(|s| {
            s.remaining = s.remaining.saturating_sub(1);
            s.remaining == 0
        });
        if done && let Some(submit) = state.submits.remove(&number) {
            let _ = submit.reply.send(submit.ids);
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl State {
    /// A request to `to` was answered or failed: room for another.
    fn answered(&mut self, to: &PeerKey) {
        if let Some(queue) = self.outgoing.get_mut(to) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
        }
    }

    fn now(&self) -> Millis {
        self.started.elapsed().as_millis() as Millis
    }
}
