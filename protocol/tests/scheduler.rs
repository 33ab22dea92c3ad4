//! The scheduler, tested by the actions it emits: feed one event, assert what comes out.
//! No sockets, no clocks, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::placement::Policy;
use taskswarm_protocol::{
    Action, Backoff, Capabilities, Config, Envelope, Gossip, Grant, Keypair, Lease, LoadReport,
    MemoryArchive, Message, Outcome, PeerKey, ProcessSpec, RetryPolicy, Scheduler, Signed,
    SignedSpec, Submission, Table, Task, TaskId, TaskKind, TaskSpec, TaskState, lease::show_epoch,
    wire,
};

/// The first epoch a primary grants (1.0), and the second (2.0).
const E1: u64 = 1 << 32;
const E2: u64 = 2 << 32;

fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

fn peer(n: u8, slots: u32, exec: bool) -> Scheduler {
    let config = Config {
        slots,
        capabilities: Capabilities {
            exec,
            handlers: vec!["echo".into()],
            offer: Default::default(),
        },
        ..Config::default()
    };
    Scheduler::new(key(n), config)
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(42)
}

fn drain(s: &mut Scheduler) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A one-line name of each action, to assert sequences.
fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send { message, .. } => format!("send {}", message.kind()),
            Action::Broadcast { .. } => "broadcast".into(),
            Action::Execute { epoch, .. } => format!("execute@{}", show_epoch(*epoch)),
            Action::Abort { epoch, .. } => format!("abort@{}", show_epoch(*epoch)),
            Action::Write { table, value, .. } => {
                format!(
                    "{} {table:?}",
                    if value.is_some() { "write" } else { "delete" }
                )
            }
            Action::Changed { .. } => "changed".into(),
            Action::Accepted { tasks } => format!("accepted {}", tasks.len()),
            Action::Answer { record, .. } => format!("answer {}", record.is_some()),
            Action::Listed { page, .. } => format!("listed {}", page.entries.len()),
            Action::PeerDiscovered { .. } => "discovered".into(),
            Action::RowRefused { .. } => "row refused".into(),
        })
        .collect()
}

/// A process task (`true`) to submit through the peer of `submitter`, which completes and signs
/// it.
fn process_spec(submitter: &Keypair, nonce: u64, retry: RetryPolicy) -> Submission {
    let kind = TaskKind::Process(ProcessSpec {
        program: "true".into(),
        args: vec![],
        env: vec![],
        stdin: vec![],
    });
    let spec = TaskSpec {
        retry,
        ..TaskSpec::new(submitter.public(), nonce, kind)
    };
    spec.into()
}

fn spec(submitter: &Keypair, nonce: u64) -> Submission {
    process_spec(submitter, nonce, RetryPolicy::default())
}

/// A spec signed by `submitter` as the task's origin, with home set `home` (`submitter` first), as
/// a peer would have accepted it.
fn signed_with_home(submitter: &Keypair, nonce: u64, home: Vec<PeerKey>) -> SignedSpec {
    let spec = TaskSpec {
        home,
        ..process_spec(submitter, nonce, RetryPolicy::default()).spec
    };
    Signed::sign(&spec, submitter)
}

/// A spec signed by `submitter` as the task's origin and only home member.
fn signed(submitter: &Keypair, nonce: u64) -> SignedSpec {
    signed_with_home(submitter, nonce, vec![submitter.public()])
}

fn report(from: &Keypair, seq: u64, queued: u32, exec: bool) -> Vec<u8> {
    report_of_run(from, 1, seq, queued, exec)
}

/// A load report of the run `boot` of `from` (a new run is the peer restarted).
fn report_of_run(from: &Keypair, boot: u64, seq: u64, queued: u32, exec: bool) -> Vec<u8> {
    let report = LoadReport {
        peer: from.public(),
        boot,
        seq,
        queued,
        running: 0,
        slots: 2,
        capabilities: Capabilities {
            exec,
            handlers: vec!["echo".into()],
            offer: Default::default(),
        },
        addrs: vec![b"addr".to_vec()],
        leaving: false,
        draining: false,
        about: Default::default(),
    };
    wire::encode(&Gossip::Load(Signed::sign(&report, from)))
}

/// The messages in `actions` sent to `to`, encoded as they would travel.
fn sent_to(actions: &[Action], to: PeerKey) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to: t, message } if *t == to => Some(wire::encode(message)),
            _ => None,
        })
        .collect()
}

/// Delivers every message in `bytes` from `from` to `to`, returning what `to` emitted.
fn deliver_bytes(to: &mut Scheduler, from: PeerKey, bytes: &[Vec<u8>], now: u64) -> Vec<Action> {
    for b in bytes {
        to.handle_message(now, &mut rng(), from, b);
    }
    drain(to)
}

/// Delivers the messages among `actions` that are addressed to `to`.
fn deliver(to: &mut Scheduler, from: PeerKey, actions: &[Action], now: u64) -> Vec<Action> {
    let bytes = sent_to(actions, to.me());
    deliver_bytes(to, from, &bytes, now)
}

/// The start checks among `actions` that went to `to`.
fn pings_to(actions: &[Action], to: PeerKey) -> Vec<Vec<u8>> {
    let pings: Vec<Action> = actions
        .iter()
        .filter(|a| matches!(a, Action::Send { to: t, message: Message::Ping { .. } } if *t == to))
        .cloned()
        .collect();
    sent_to(&pings, to)
}

/// Answers the start checks `holder` sent among `actions` from each of `members` they went to,
/// and returns `actions` followed by what the holder did on the answers (it started tasks).
fn checks_answered(
    holder: &mut Scheduler,
    actions: Vec<Action>,
    members: &mut [&mut Scheduler],
    now: u64,
) -> Vec<Action> {
    let mut all = actions.clone();
    for member in members.iter_mut() {
        let pings = pings_to(&actions, member.me());
        if pings.is_empty() {
            continue;
        }
        let answers = deliver_bytes(member, holder.me(), &pings, now);
        all.extend(deliver(holder, member.me(), &answers, now));
    }
    all
}

/// Answers, as `member` (a peer with no scheduler of its own in the test), the start checks
/// `holder` sent it among `actions`; returns `actions` followed by what the holder did.
fn checks_answered_by(
    holder: &mut Scheduler,
    actions: Vec<Action>,
    member: PeerKey,
    now: u64,
) -> Vec<Action> {
    let mut all = actions.clone();
    for bytes in pings_to(&actions, member) {
        let Ok(Message::Ping { round }) = wire::decode::<Message>(&bytes) else {
            continue;
        };
        let pong = wire::encode(&Message::Pong { round });
        all.extend(deliver_bytes(holder, member, &[pong], now));
    }
    all
}

fn ok() -> Outcome {
    Outcome::Exited {
        code: Some(0),
        stdout: b"ok".to_vec(),
        stderr: vec![],
    }
}

fn exit1() -> Outcome {
    Outcome::Exited {
        code: Some(1),
        stdout: vec![],
        stderr: b"boom".to_vec(),
    }
}

#[test]
fn a_lone_peer_stores_runs_and_records_what_it_is_given() {
    let mut a = peer(1, 2, true);
    let mut rng = rng();
    let id = *a.submit(0, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        kinds(&drain(&mut a)),
        [
            "write Records",
            "changed",
            "write Held",
            "execute@1.0",
            "write Records",
            "changed",
            "accepted 1"
        ]
    );
    assert_eq!(a.task(&id).unwrap().state, TaskState::Running);
    assert_eq!(a.task(&id).unwrap().envelope.home, vec![a.me()]);

    a.handle_finished(5, &mut rng, id, E1, ok());
    assert_eq!(
        kinds(&drain(&mut a)),
        ["delete Held", "write Ended", "delete Records", "changed"]
    );
    let record = a.task(&id).unwrap();
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!(record.outcome, Some(ok()));
    assert_eq!(record.executed_by, Some(a.me()));
    let steps: Vec<(TaskState, &str)> = record
        .history
        .iter()
        .map(|t| (t.state, t.note.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (TaskState::Waiting, "accepted"),
            (TaskState::Waiting, "placed"),
            (TaskState::Running, "started"),
            (TaskState::Completed, "succeeded")
        ]
    );
}

/// A lone peer with one slot, given `n` tasks: it runs one and queues the rest. Returns the
/// peer, its RNG, the ids, the one it runs and what the submission emitted.
fn a_lone_peer_with_one_slot_is_given(
    n: u64,
) -> (Scheduler, ChaCha8Rng, Vec<TaskId>, TaskId, Vec<Action>) {
    let mut a = peer(1, 1, true);
    let mut rng = rng();
    let ids: Vec<TaskId> = a
        .submit(0, &mut rng, (0..n).map(|n| spec(&key(1), n)).collect())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let submitted = drain(&mut a);
    let running = ids
        .iter()
        .copied()
        .find(|id| a.task(id).unwrap().state == TaskState::Running)
        .unwrap();
    (a, rng, ids, running, submitted)
}

/// A slot that frees up is filled at once: the next queued task, whose lease was stored in an
/// earlier round, starts ahead of the writes of this one (the finished task's result), and a task
/// held in this round starts only after its lease.
#[test]
fn a_freed_slot_starts_the_next_task_ahead_of_the_rounds_writes() {
    let (mut a, mut rng, _, running, submitted) = a_lone_peer_with_one_slot_is_given(2);
    let first = kinds(&submitted);
    let held = first.iter().position(|k| k == "write Held").unwrap();
    let started = first.iter().position(|k| k.starts_with("execute")).unwrap();
    assert!(
        held < started,
        "held in this round: started after its lease {first:?}"
    );
    a.handle_finished(1, &mut rng, running, E1, ok());
    let next = kinds(&drain(&mut a));
    assert_eq!(next[0], "execute@1.0", "{next:?}");
    assert!(next[1..].iter().any(|k| k == "delete Held"), "{next:?}");
}

#[test]
fn submitting_the_same_spec_twice_is_one_task() {
    let mut a = peer(1, 2, true);
    let spec = spec(&key(1), 1);
    let first = a.submit(0, &mut rng(), vec![spec.clone()]);
    drain(&mut a);
    let second = a.submit(0, &mut rng(), vec![spec]);
    assert_eq!(first, second);
    assert_eq!(kinds(&drain(&mut a)), ["accepted 1"]);
    assert_eq!(a.tasks().count(), 1);
}

#[test]
fn a_new_peer_is_announced_once() {
    let mut a = peer(1, 2, true);
    a.handle_gossip(0, &mut rng(), &report(&key(2), 1, 0, true));
    assert_eq!(
        drain(&mut a),
        vec![
            Action::PeerDiscovered {
                peer: key(2).public(),
                addrs: vec![b"addr".to_vec()]
            },
            // Met anew: asked for the records the two share (none yet).
            Action::Send {
                to: key(2).public(),
                message: Message::CatchUp
            }
        ]
    );
    a.handle_gossip(1, &mut rng(), &report(&key(2), 2, 0, true));
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.peers().count(), 1);
}

/// A (no exec) and B (runs processes) know each other; A takes one process task, which it places
/// on B. Returns them, the task's id and what A did on submitting it.
fn a_submits_one_task_that_b_runs() -> (Scheduler, Scheduler, ChaCha8Rng, TaskId, Vec<Action>) {
    let (mut a, mut b) = (peer(1, 2, false), peer(2, 2, true));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, false));
    drain(&mut a);
    drain(&mut b);
    let id = *a.submit(1, &mut rng, vec![spec(&key(1), 7)])[0]
        .as_ref()
        .unwrap();
    let actions = drain(&mut a);
    (a, b, rng, id, actions)
}

/// A (no exec) submits a process task; B stores a copy, runs it, reports; A acknowledges the
/// submission only once B stored it, and the result only once B stored that too.
#[test]
fn a_task_is_stored_on_its_home_set_placed_run_and_recorded() {
    let (mut a, mut b, mut rng, id, actions) = a_submits_one_task_that_b_runs();
    assert_eq!(
        kinds(&actions),
        ["write Records", "changed", "send place", "send store"]
    );
    let record = a.task(&id).unwrap();
    assert_eq!(record.envelope.home, vec![a.me(), b.me()]);
    assert_eq!((record.epoch, record.holder), (E1, Some(b.me())));

    // B stores the record and acknowledges it; only then is the submission accepted.
    let to_b = sent_to(&actions, b.me());
    let from_b = deliver_bytes(&mut b, a.me(), &to_b, 2);
    assert!(
        kinds(&from_b).contains(&"execute@1.0".to_string()),
        "{:?}",
        kinds(&from_b)
    );
    assert!(b.task(&id).is_some(), "B keeps a copy of the record");
    let back = deliver(&mut a, b.me(), &from_b, 3);
    // B's `started` came with its `stored`: A writes the running state, but the answer to the
    // submit needs only the first version, stored everywhere already, and goes ahead of it.
    assert_eq!(
        kinds(&back)[..2],
        ["accepted 1".to_string(), "write Records".to_string()],
        "{:?}",
        kinds(&back)
    );
    assert_eq!(a.task(&id).unwrap().state, TaskState::Running);
    deliver(&mut b, a.me(), &back, 3);

    // B is a home member but not the primary: it keeps the result until A settles it.
    b.handle_finished(4, &mut rng, id, E1, exit1());
    let from_b = drain(&mut b);
    assert_eq!(
        kinds(&from_b),
        ["delete Held", "write Outbox", "send completed"]
    );
    let from_a = deliver(&mut a, b.me(), &from_b, 5);
    assert_eq!(kinds(&from_a), ["write Records", "changed", "send store"]);
    let record = a.task(&id).unwrap();
    assert_eq!(
        record.state,
        TaskState::Waiting,
        "exit 1 is retried by default"
    );
    assert_eq!(record.attempts.len(), 1);
    let stored = deliver(&mut b, a.me(), &from_a, 6);
    let recorded = deliver(&mut a, b.me(), &stored, 7);
    assert_eq!(kinds(&recorded), ["send recorded"]);
    let done = deliver(&mut b, a.me(), &recorded, 8);
    assert_eq!(kinds(&done), ["delete Outbox"]);
}

/// Keeps in `archive` what `actions` wrote to the ended table, as a driver's disk does.
fn archive_writes(archive: &MemoryArchive, actions: &[Action]) {
    for action in actions {
        archive.keep(action);
    }
}

/// An ended record goes to its own table and, once replicated, leaves memory; a late copy of an
/// older version (a member that was away sends what it has) is answered with the ended record
/// read back from disk, and never brings the task back.
#[test]
fn an_ended_record_leaves_memory_and_a_stale_copy_is_answered_from_disk() {
    let (mut a, mut b, mut rng, id, actions) = a_submits_one_task_that_b_runs();
    let archive = std::sync::Arc::new(MemoryArchive::default());
    b.set_archive(archive.clone());
    let to_b = sent_to(&actions, b.me());
    let stale_store = vec![to_b[1].clone()];
    assert_eq!(
        wire::decode::<Message>(&stale_store[0]).unwrap().kind(),
        "store"
    );
    let from_b = deliver_bytes(&mut b, a.me(), &to_b, 2);
    archive_writes(&archive, &from_b);
    let back = deliver(&mut a, b.me(), &from_b, 3);
    archive_writes(&archive, &deliver(&mut b, a.me(), &back, 3));
    b.handle_finished(4, &mut rng, id, E1, ok());
    let from_b = drain(&mut b);
    let from_a = deliver(&mut a, b.me(), &from_b, 5);
    assert_eq!(
        kinds(&from_a),
        ["write Ended", "delete Records", "changed", "send store"]
    );
    let stored = deliver(&mut b, a.me(), &from_a, 6);
    assert!(kinds(&stored).starts_with(&["write Ended".into(), "delete Records".into()]));
    archive_writes(&archive, &stored);
    let recorded = deliver(&mut a, b.me(), &stored, 7);
    archive_writes(&archive, &deliver(&mut b, a.me(), &recorded, 8));

    let linger = Config::default().ended_in_memory_ms;
    // B stored the ended record at 6.
    b.tick(6 + linger - 1, &mut rng);
    assert!(b.task(&id).is_some(), "kept in memory for a while");
    b.tick(6 + linger, &mut rng);
    drain(&mut b);
    assert!(b.task(&id).is_none(), "then only on disk");
    assert_eq!(b.counters().evicted, 1);

    let answer = deliver_bytes(&mut b, a.me(), &stale_store, 9 + linger);
    assert_eq!(b.counters().recalled, 1);
    assert_eq!(b.task(&id).unwrap().state, TaskState::Completed);
    let back_to_a = sent_to(&answer, a.me());
    let stores: Vec<Message> = back_to_a
        .iter()
        .map(|bytes| wire::decode::<Message>(bytes).unwrap())
        .filter(|m| m.kind() == "store")
        .collect();
    let [Message::Store { records }] = stores.as_slice() else {
        panic!(
            "the ended record goes back to the sender: {:?}",
            kinds(&answer)
        );
    };
    assert_eq!(records[0].record.state, TaskState::Completed);
    assert!(
        !kinds(&answer).iter().any(|k| k.starts_with("write")),
        "nothing is written: {:?}",
        kinds(&answer)
    );

    // Once it has left memory again, its row changes on disk: the next copy that names it reads
    // it back, refuses it and says so (whatever named it: here a member's `Store`, not a client).
    let later = 9 + 2 * linger;
    b.tick(later, &mut rng);
    drain(&mut b);
    assert!(b.task(&id).is_none());
    let mut row = archive.rows()[&id].clone();
    let last = row.len() - 1;
    row[last / 2] ^= 0x01;
    archive.keep(&Action::Write {
        table: Table::Ended,
        key: id,
        value: Some(row),
    });
    let answer = deliver_bytes(&mut b, a.me(), &stale_store, later + 1);
    assert_eq!(b.counters().restore_errors, 1);
    assert!(
        answer
            .iter()
            .any(|a| matches!(a, Action::RowRefused { task, .. } if *task == id)),
        "{:?}",
        kinds(&answer)
    );
}

/// B holds queued work; idle A steals half; B tells the home set once A has the grant; the
/// primary C records A's result even when it arrives before the transfer notice.
#[test]
fn an_idle_peer_steals_and_the_primary_follows_the_lease() {
    let (mut a, mut b, mut c) = (peer(1, 4, true), peer(2, 1, true), peer(3, 1, false));
    let mut rng = rng();
    c.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(3), 1, 0, false));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    a.handle_gossip(0, &mut rng, &report(&key(3), 1, 0, false));
    for s in [&mut a, &mut b, &mut c] {
        drain(s);
    }
    let specs = (0..5).map(|n| spec(&key(3), n)).collect();
    c.submit(0, &mut rng, specs)
        .into_iter()
        .for_each(|r| assert!(r.is_ok()));
    let to_b = sent_to(&drain(&mut c), b.me());
    deliver_bytes(&mut b, c.me(), &to_b, 1);
    assert_eq!((b.running(), b.queued()), (1, 4));

    a.handle_gossip(2, &mut rng, &report(&key(2), 5, 4, true));
    let request = sent_to(&drain(&mut a), b.me());
    let asked: Vec<&str> = request
        .iter()
        .map(|bytes| wire::decode::<Message>(bytes).unwrap().kind())
        .collect();
    assert_eq!(asked, ["catch-up", "steal-request"], "met anew, then asked");
    let from_b = deliver_bytes(&mut b, a.me(), &request, 3);
    assert_eq!(b.queued(), 2, "half of 4 queued tasks go");
    let Some(Action::Send { message: grant, .. }) = from_b.iter().find(|a| {
        matches!(
            a,
            Action::Send {
                message: Message::StealGrant { .. },
                ..
            }
        )
    }) else {
        panic!("{:?}", kinds(&from_b));
    };
    assert!(
        sent_to(&from_b, c.me()).is_empty(),
        "no notice before the thief has the grant"
    );

    let granted = deliver_bytes(&mut a, b.me(), &[wire::encode(grant)], 4);
    let executed = checks_answered(&mut a, granted, &mut [&mut b, &mut c], 4);
    let executed: Vec<(TaskId, u64)> = executed
        .iter()
        .filter_map(|a| match a {
            Action::Execute { task, epoch, .. } => Some((*task, *epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(executed.len(), 2);
    assert!(executed.iter().all(|(_, epoch)| *epoch == E1 + 1));
    assert_eq!(a.counters().tasks_stolen, 2);
    b.handle_delivered(5, &mut rng, a.me(), grant);
    let notice = sent_to(&drain(&mut b), c.me());
    assert_eq!(notice.len(), 1);

    // A's completion reaches C before B's notice: C waits for the notice, then records.
    let (stolen, epoch) = executed[0];
    a.handle_finished(6, &mut rng, stolen, epoch, ok());
    let completed = sent_to(&drain(&mut a), c.me());
    deliver_bytes(&mut c, a.me(), &completed, 7);
    assert_ne!(c.task(&stolen).unwrap().state, TaskState::Completed);
    deliver_bytes(&mut c, b.me(), &notice, 8);
    let record = c.task(&stolen).unwrap();
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!((record.epoch, record.executed_by), (E1 + 1, Some(a.me())));

    // B reporting the task under its old lease is a duplicate now.
    let old = wire::encode(&Message::Completed {
        task: stolen,
        epoch: E1,
        outcome: ok(),
    });
    deliver_bytes(&mut c, b.me(), &[old], 9);
    assert_eq!(c.counters().completions_duplicate, 1);
}

/// C (no exec) submits 5 tasks, which it places on B (one slot); A has 4 slots. Returns the
/// three peers, the RNG, and C's messages to B (the placement).
fn c_places_five_on_b() -> (Scheduler, Scheduler, Scheduler, ChaCha8Rng, Vec<Vec<u8>>) {
    let (mut a, mut b, mut c) = (peer(1, 4, true), peer(2, 1, true), peer(3, 1, false));
    let mut rng = rng();
    c.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(3), 1, 0, false));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    for s in [&mut a, &mut b, &mut c] {
        drain(s);
    }
    let specs = (0..5).map(|n| spec(&key(3), n)).collect();
    c.submit(0, &mut rng, specs);
    let to_b = sent_to(&drain(&mut c), b.me());
    deliver_bytes(&mut b, c.me(), &to_b, 1);
    (a, b, c, rng, to_b)
}

/// As [`c_places_five_on_b`], then A asks B for work. Returns the three peers, the RNG, and what
/// B did in answer: its grant to A.
fn a_steals_from_b() -> (Scheduler, Scheduler, Scheduler, ChaCha8Rng, Vec<Action>) {
    let (mut a, mut b, c, mut rng, _) = c_places_five_on_b();
    a.handle_gossip(2, &mut rng, &report(&key(2), 5, 4, true));
    let request = sent_to(&drain(&mut a), b.me());
    let from_b = deliver_bytes(&mut b, a.me(), &request, 3);
    (a, b, c, rng, from_b)
}

/// A task placed only once the task it waits for has completed, with its result as input; the
/// dependency's record is kept elsewhere, so its primary asks for it.
#[test]
fn a_dependent_task_waits_for_its_dependency_asked_of_the_peer_that_keeps_it() {
    let lone = |n: u8| {
        let config = Config {
            slots: 1,
            replicas: 1,
            capabilities: Capabilities {
                exec: true,
                handlers: vec!["echo".into()],
                offer: Default::default(),
            },
            ..Config::default()
        };
        Scheduler::new(key(n), config)
    };
    let (mut a, mut b) = (lone(1), lone(2));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    drain(&mut a);
    drain(&mut b);
    // A keeps and runs the dependency.
    let dep = *a.submit(1, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    let ran = drain(&mut a);
    let epoch = ran
        .iter()
        .find_map(|x| match x {
            Action::Execute { task, epoch, .. } if *task == dep => Some(*epoch),
            _ => None,
        })
        .expect("A runs the dependency itself");
    // B takes a task that waits for it: nothing runs, B asks A.
    let mut waiting = spec(&key(2), 2).spec;
    waiting.after = vec![dep];
    waiting.name = Some("d".into());
    let id = *b.submit(2, &mut rng, vec![waiting.into()])[0]
        .as_ref()
        .unwrap();
    let asked = drain(&mut b);
    assert!(!kinds(&asked).iter().any(|k| k.starts_with("execute")));
    let answered = deliver(&mut a, b.me(), &asked, 3);
    deliver(&mut b, a.me(), &answered, 4);
    assert_eq!(
        b.task(&id).unwrap().holder,
        None,
        "the dependency has not ended"
    );

    a.handle_finished(5, &mut rng, dep, epoch, ok());
    drain(&mut a);
    // B asks again at most once a second, once it has been up a lease TTL; then it runs the task
    // with the dependency's output.
    let mut now = 5;
    let mut inputs = None;
    while inputs.is_none() && now < 10_000 {
        now += 100;
        b.tick(now, &mut rng);
        let out = drain(&mut b);
        inputs = out.iter().find_map(|x| match x {
            Action::Execute { task, inputs, .. } if *task == id => Some(inputs.clone()),
            _ => None,
        });
        let answers = deliver(&mut a, b.me(), &out, now);
        deliver(&mut b, a.me(), &answers, now);
    }
    let inputs = inputs.expect("the task ran once its dependency completed");
    assert_eq!(inputs.len(), 1);
    assert_eq!((inputs[0].task, inputs[0].completed), (dep, true));
    assert_eq!(inputs[0].output, b"ok".to_vec());
}

/// The thief tells the home set of the tasks it was given too: if the victim dies before its own
/// notice goes out, the home set still follows the lease and does not re-claim (and run again)
/// what the thief runs. A notice from a third peer is refused.
#[test]
fn the_thief_relays_the_hand_over_so_the_home_set_follows_without_the_victim() {
    let (mut a, mut b, mut c, _rng, from_b) = a_steals_from_b();
    let granted = deliver(&mut a, b.me(), &from_b, 4);
    let from_a = checks_answered(&mut a, granted, &mut [&mut b, &mut c], 4);
    let stolen: Vec<(TaskId, u64)> = from_a
        .iter()
        .filter_map(|a| match a {
            Action::Execute { task, epoch, .. } => Some((*task, *epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(stolen.len(), 2);
    let relayed: Vec<Vec<u8>> = sent_to(&from_a, c.me())
        .into_iter()
        .filter(|bytes| wire::decode::<Message>(bytes).unwrap().kind() != "ping")
        .collect();
    assert_eq!(relayed.len(), 1, "one notice to the home member");

    // A third peer replaying the notice is refused; the thief's own is taken.
    let refused_before = c.counters().rejected_unauthorized;
    deliver_bytes(&mut c, key(9).public(), &relayed, 5);
    assert_eq!(c.counters().rejected_unauthorized, refused_before + 1);
    assert_eq!(c.task(&stolen[0].0).unwrap().holder, Some(b.me()));
    deliver_bytes(&mut c, a.me(), &relayed, 6);
    for (task, epoch) in &stolen {
        let record = c.task(task).unwrap();
        assert_eq!((record.holder, record.epoch), (Some(a.me()), *epoch));
    }
}

/// A hand-over notice that could not be delivered is sent again on the resend timer, not at
/// once (a dead peer's dial fails at once: resending at once would spin), and no longer once its
/// member is taken for dead.
#[test]
fn an_undelivered_hand_over_notice_is_sent_again_on_the_timer_while_its_member_lives() {
    let (a, mut b, c, mut rng, from_b) = a_steals_from_b();
    let grant = from_b
        .iter()
        .find_map(|a| match a {
            Action::Send {
                message: m @ Message::StealGrant { .. },
                ..
            } => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    b.handle_delivered(5, &mut rng, a.me(), &grant);
    let notice = drain(&mut b)
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                to,
                message: m @ Message::Transferred { .. },
            } if to == c.me() => Some(m),
            _ => None,
        })
        .unwrap();
    let notices_to_c = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| {
                matches!(a, Action::Send { to, message: Message::Transferred { .. } } if *to == key(3).public())
            })
            .count()
    };

    b.handle_send_failed(6, &mut rng, c.me(), notice.clone());
    assert_eq!(notices_to_c(&drain(&mut b)), 0, "not sent again at once");
    let after = Config::default().resend_after_ms;
    b.tick(6 + after - 1, &mut rng);
    assert_eq!(notices_to_c(&drain(&mut b)), 0);
    b.tick(6 + after, &mut rng);
    assert_eq!(notices_to_c(&drain(&mut b)), 1, "sent again on the timer");

    // C falls silent: a notice that fails just before C's lease TTL runs out is dropped when
    // it falls due, C being taken for dead by then.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    let mut now = 6 + after;
    while now < ttl - 100 {
        now += 100;
        b.tick(now, &mut rng);
        drain(&mut b);
    }
    b.handle_send_failed(now, &mut rng, c.me(), notice);
    let mut resent = 0;
    for _ in 0..10 {
        now += 100;
        b.tick(now, &mut rng);
        resent += notices_to_c(&drain(&mut b));
    }
    assert!(b.peers().all(|(p, _)| *p != c.me()), "C is taken for dead");
    assert_eq!(resent, 0, "no notice to a member taken for dead");
}

/// B falls silent: after the lease TTL, A (primary) re-claims B's task at a higher epoch and runs
/// it; B's late completion is rejected as stale and told to stop.
#[test]
fn a_silent_holder_loses_its_lease_and_its_late_completion_is_stale() {
    let (mut a, b) = (peer(1, 1, true), key(2));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&b, 1, 0, true));
    drain(&mut a);
    // Fill A's only slot so the task goes to B.
    let first = a.submit(0, &mut rng, vec![spec(&key(1), 1)]);
    let second = a.submit(0, &mut rng, vec![spec(&key(1), 2)]);
    drain(&mut a);
    let on_b = [first, second]
        .into_iter()
        .map(|r| *r[0].as_ref().unwrap())
        .find(|id| a.task(id).unwrap().holder == Some(b.public()))
        .expect("one task is placed on B");

    let ttl = u64::from(Config::default().lease_ttl_ms);
    for now in (100..ttl).step_by(100) {
        a.tick(now, &mut rng);
    }
    drain(&mut a);
    assert_eq!(a.task(&on_b).unwrap().holder, Some(b.public()), "not yet");
    for now in (ttl..ttl + 400).step_by(100) {
        a.tick(now, &mut rng);
    }
    drain(&mut a);
    let record = a.task(&on_b).unwrap();
    assert_eq!(
        record.holder,
        Some(a.me()),
        "re-claimed and placed on the only live peer"
    );
    assert_eq!(record.epoch, E2);
    assert!(
        record.attempts.is_empty(),
        "B never reported starting it, so losing it is not an attempt"
    );
    assert!(
        record
            .history
            .iter()
            .any(|t| t.note.contains("before it started"))
    );
    assert_eq!(a.counters().leases_reclaimed, 1);

    let late = wire::encode(&Message::Completed {
        task: on_b,
        epoch: E1,
        outcome: ok(),
    });
    let reply = deliver_bytes(&mut a, b.public(), &[late], ttl + 500);
    assert_eq!(a.counters().completions_stale, 1);
    // B, taken for dead, is heard again: A meets it anew (sends it the records they share and asks
    // for its own) before it answers; A has tasks waiting, so B, a member of their home sets, gets
    // a start check too.
    assert_eq!(
        kinds(&reply),
        ["send catch-up", "send ping", "send store", "send recorded"],
        "the stale holder is brought level and told to stop"
    );
    assert_ne!(a.task(&on_b).unwrap().state, TaskState::Completed);
}

#[test]
fn a_failing_task_is_retried_after_its_backoff_then_fails_with_every_attempt() {
    let mut a = peer(1, 1, true);
    let mut rng = rng();
    let policy = RetryPolicy {
        max_attempts: 3,
        backoff: Backoff::Fixed { ms: 200 },
        ..RetryPolicy::default()
    };
    let id = *a.submit(0, &mut rng, vec![process_spec(&key(1), 1, policy)])[0]
        .as_ref()
        .unwrap();
    drain(&mut a);
    let ttl = u64::from(Config::default().lease_ttl_ms);
    let mut now = ttl; // past the start-up grace
    for attempt in 1..=3u64 {
        a.handle_finished(now, &mut rng, id, attempt << 32, exit1());
        drain(&mut a);
        if attempt < 3 {
            assert_eq!(a.task(&id).unwrap().state, TaskState::Waiting);
            a.tick(now + 100, &mut rng);
            assert!(
                !kinds(&drain(&mut a))
                    .iter()
                    .any(|k| k.starts_with("execute")),
                "too early"
            );
            now += 400;
            a.tick(now, &mut rng);
            let next = format!("execute@{}.0", attempt + 1);
            assert!(
                kinds(&drain(&mut a)).contains(&next),
                "attempt {}",
                attempt + 1
            );
        }
    }
    let record = a.task(&id).unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.attempts.len(), 3);
    assert!(
        record
            .attempts
            .iter()
            .all(|t| t.exit_code == Some(1) && t.detail == "boom")
    );
}

#[test]
fn a_holder_cut_off_from_every_home_member_stops_the_task() {
    let (a, mut b) = (key(1), peer(2, 1, true));
    let mut rng = rng();
    let task = Task::from_signed(signed(&a, 1)).unwrap();
    b.handle_gossip(0, &mut rng, &report(&a, 1, 0, false));
    let grant = Grant {
        granted_by: a.public(),
        leases: vec![lease(task.id, b.me(), a.public())],
    };
    let place = Message::Place {
        tasks: vec![task.envelope()],
        grant: Signed::sign(&grant, &a),
    };
    let placed = deliver_bytes(&mut b, a.public(), &[wire::encode(&place)], 10);
    assert_eq!(
        kinds(&placed)[2..],
        ["write Held", "send ping"],
        "asks before it starts"
    );
    let started = checks_answered_by(&mut b, placed, a.public(), 10);
    assert!(kinds(&started).contains(&"execute@1.0".to_string()));
    // A keeps reporting for a while, then falls silent; B stops the task after 2/3 of the TTL.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    b.handle_gossip(ttl, &mut rng, &report(&a, 2, 0, false));
    b.tick(ttl + ttl / 2, &mut rng);
    assert!(!kinds(&drain(&mut b)).contains(&"abort@1.0".to_string()));
    b.tick(ttl + ttl * 2 / 3 + 250, &mut rng);
    let actions = kinds(&drain(&mut b));
    assert!(actions.contains(&"abort@1.0".to_string()), "{actions:?}");
    assert_eq!(b.counters().tasks_abandoned, 1);
    assert_eq!(b.running(), 0);
}

/// Peer 1 restarted from what it wrote: a driver reads back only the live tables; the ended
/// records stay on disk, read through the archive.
fn restarted_from(disk: &std::collections::BTreeMap<(Table, TaskId), Vec<u8>>) -> Scheduler {
    let mut restarted = peer(1, 1, true);
    for ((table, _), bytes) in disk.iter().filter(|((t, _), _)| *t != Table::Ended) {
        restarted.restore(*table, bytes).unwrap();
    }
    let archive = std::sync::Arc::new(MemoryArchive::default());
    for ((_, key), row) in disk.iter().filter(|((t, _), _)| *t == Table::Ended) {
        archive.keep(&Action::Write {
            table: Table::Ended,
            key: *key,
            value: Some(row.clone()),
        });
    }
    restarted.set_archive(archive);
    restarted
}

#[test]
fn what_a_peer_wrote_restores_it_after_a_restart() {
    let (mut a, mut rng, ids, running, submitted) = a_lone_peer_with_one_slot_is_given(3);
    a.handle_finished(1, &mut rng, running, E1, ok());
    let mut disk = std::collections::BTreeMap::new();
    for action in submitted.into_iter().chain(drain(&mut a)) {
        if let Action::Write { table, key, value } = action {
            match value {
                Some(v) => disk.insert((table, key), v),
                None => disk.remove(&(table, key)),
            };
        }
    }
    let ended = running;
    let mut restarted = restarted_from(&disk);
    assert_eq!(restarted.counters().restore_errors, 0);
    assert!(restarted.task(&ended).is_none());
    assert_eq!(
        restarted.look_up(&ended),
        a.task(&ended),
        "read back when asked"
    );
    for id in &ids {
        assert_eq!(restarted.task(id), a.task(id));
    }
    assert_eq!(
        restarted.queued(),
        2,
        "the two tasks it held come back ready to run"
    );
    assert!(disk.keys().any(|(t, _)| *t == Table::Held));
    restarted.tick(2, &mut rng);
    assert!(kinds(&drain(&mut restarted)).contains(&"execute@1.0".to_string()));

    // Restarted the same way, a peer lists what ended before the restart from the archive,
    // with the live records, and brings nothing back to memory.
    let mut listing = restarted_from(&disk);
    let ticket = listing.list(2, &mut rng, Default::default(), 10);
    let page = drain(&mut listing)
        .into_iter()
        .find_map(|a| match a {
            Action::Listed { ticket: t, page } if t == ticket => Some(page),
            _ => None,
        })
        .expect("a lone peer's list ends at once");
    let mut listed: Vec<TaskId> = page.entries.iter().map(|e| e.sealed.record.id()).collect();
    listed.sort();
    let mut all = ids.to_vec();
    all.sort();
    assert_eq!(listed, all);
    assert!(listing.task(&ended).is_none());

    // A store written before ended records had a table of their own kept them with the live
    // ones: restored from there, an ended record moves to its table.
    let mut legacy = peer(1, 1, true);
    let row = disk.get(&(Table::Ended, ended)).unwrap();
    legacy.restore(Table::Records, row).unwrap();
    assert_eq!(
        kinds(&drain(&mut legacy)),
        ["write Ended", "delete Records"]
    );
    assert_eq!(legacy.task(&ended), a.task(&ended));
}

/// Every record is stored with the seal of the member that wrote it; one flipped byte in any
/// stored record (here: in the recorded output) and the peer refuses it at start, saying why.
#[test]
fn a_stored_record_changed_on_disk_is_refused_at_restart() {
    let mut a = peer(1, 1, true);
    let mut rng = rng();
    let id = *a.submit(0, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    a.handle_finished(1, &mut rng, id, E1, ok());
    let row = drain(&mut a)
        .into_iter()
        .filter_map(|action| match action {
            Action::Write {
                table: Table::Records,
                value: Some(v),
                ..
            } => Some(v),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(a.task(&id).unwrap().state, TaskState::Completed);
    let at = row.windows(2).position(|w| w == b"ok").unwrap();
    let mut flipped = row.clone();
    flipped[at] ^= 0x01;
    let mut restarted = peer(1, 1, true);
    let refused = restarted.restore(Table::Records, &flipped).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "bad record seal: its signature does not verify"
    );
    assert_eq!(restarted.counters().restore_errors, 1);
    assert!(restarted.task(&id).is_none());
    restarted.restore(Table::Records, &row).unwrap();
    assert_eq!(restarted.task(&id), a.task(&id));
}

#[test]
fn cancelling_a_task_voids_its_holders_lease() {
    let (mut a, mut b) = (peer(1, 1, false), peer(2, 1, true));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let id = *a.submit(0, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    let from_b = deliver(&mut b, a.me(), &drain(&mut a), 1);
    assert!(kinds(&from_b).contains(&"execute@1.0".to_string()));
    a.cancel(2, &mut rng, id, Some("ops".into()));
    let actions = drain(&mut a);
    assert_eq!(a.task(&id).unwrap().state, TaskState::Cancelled);
    let note = &a.task(&id).unwrap().history.last().unwrap().note;
    assert_eq!(note, "cancelled by client ops");
    let aborted = deliver(&mut b, a.me(), &actions, 3);
    assert!(
        kinds(&aborted).contains(&"abort@1.0".to_string()),
        "{:?}",
        kinds(&aborted)
    );
    // Its end, when the killed process is reaped, is not reported.
    b.handle_finished(4, &mut rng, id, E1, exit1());
    assert!(sent_to(&drain(&mut b), a.me()).is_empty());
}

#[test]
fn a_peer_that_keeps_no_record_asks_the_others() {
    let (mut a, mut b) = (peer(1, 1, true), peer(2, 1, true));
    let mut rng = rng();
    let id = *a.submit(0, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    drain(&mut a);
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    drain(&mut b);
    let query = b.query(1, &mut rng, id);
    let asked = sent_to(&drain(&mut b), a.me());
    let answer = deliver_bytes(&mut a, b.me(), &asked, 2);
    let answered = deliver(&mut b, a.me(), &answer, 3);
    let [
        Action::Answer {
            query: q,
            record: Some(record),
        },
    ] = answered.as_slice()
    else {
        panic!("{:?}", kinds(&answered));
    };
    assert_eq!((*q, record.record.id()), (query, id));
    let unknown = b.query(4, &mut rng, TaskId::from_bytes([0; 32]));
    let asked = sent_to(&drain(&mut b), a.me());
    let answer = deliver_bytes(&mut a, b.me(), &asked, 5);
    let answered = deliver(&mut b, a.me(), &answer, 6);
    assert_eq!(
        answered,
        vec![Action::Answer {
            query: unknown,
            record: None
        }]
    );
}

/// A client of a peer that keeps no record of a task waits for it and cancels it through that
/// peer: the peer asks, learns the home set, asks it again until the task ends, and sends the
/// cancel there. (The same code answers the API's long polls and cancels.)
#[test]
fn a_peer_that_keeps_no_record_waits_for_a_task_and_cancels_one_through_its_home_set() {
    let (mut a, mut b) = (peer(1, 1, true), peer(2, 1, true));
    let mut rng = rng();
    let ids: Vec<TaskId> = a
        .submit(0, &mut rng, (1..=2).map(|n| spec(&key(1), n)).collect())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (running, queued) = (ids[0], ids[1]);
    drain(&mut a);
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    drain(&mut a);
    drain(&mut b);

    let ticket = b.watch(1, &mut rng, running);
    let asked = deliver(&mut a, b.me(), &drain(&mut b), 2);
    let still_running = deliver(&mut b, a.me(), &asked, 3);
    assert!(still_running.is_empty(), "{:?}", kinds(&still_running));
    a.handle_finished(10, &mut rng, running, E1, ok());
    drain(&mut a);
    // Within the next 250 ms B asks again, and gets the end.
    b.tick(300, &mut rng);
    let asked = deliver(&mut a, b.me(), &drain(&mut b), 301);
    let ended = deliver(&mut b, a.me(), &asked, 302);
    let [
        Action::Answer {
            query,
            record: Some(record),
        },
    ] = ended.as_slice()
    else {
        panic!("{:?}", kinds(&ended));
    };
    assert_eq!(*query, ticket);
    assert_eq!(record.record.state, TaskState::Completed);

    let ticket = b.cancel(400, &mut rng, queued, Some("ops".into()));
    let asked = deliver(&mut a, b.me(), &drain(&mut b), 401);
    let sent_on = deliver(&mut b, a.me(), &asked, 402);
    assert!(
        sent_on
            .iter()
            .any(|x| matches!(x, Action::Answer { query, record: Some(_) } if *query == ticket)),
        "{:?}",
        kinds(&sent_on)
    );
    deliver(&mut a, b.me(), &sent_on, 403);
    let record = a.task(&queued).unwrap();
    assert_eq!(record.state, TaskState::Cancelled);
    assert_eq!(
        record.history.last().unwrap().note,
        "cancelled by client ops"
    );

    // A task nobody keeps: the wait ends at once with nothing.
    let ticket = b.watch(500, &mut rng, TaskId::from_bytes([0; 32]));
    let asked = deliver(&mut a, b.me(), &drain(&mut b), 501);
    let nobody = deliver(&mut b, a.me(), &asked, 502);
    assert_eq!(
        nobody,
        vec![Action::Answer {
            query: ticket,
            record: None
        }]
    );
}

#[test]
fn a_completion_from_an_older_epoch_is_rejected_as_stale() {
    let mut a = peer(1, 1, false);
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let id = *a.submit(1, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    drain(&mut a);
    let stale = wire::encode(&Message::Completed {
        task: id,
        epoch: 0,
        outcome: ok(),
    });
    a.handle_message(2, &mut rng, key(2).public(), &stale);
    assert_eq!(a.counters().completions_stale, 1);
    assert_eq!(a.task(&id).unwrap().state, TaskState::Waiting);
}

#[test]
fn a_load_report_with_a_bad_signature_is_counted_and_dropped() {
    let mut a = peer(1, 1, true);
    let honest = LoadReport {
        peer: key(2).public(),
        boot: 1,
        seq: 1,
        queued: 0,
        running: 0,
        slots: 1,
        capabilities: Capabilities::default(),
        addrs: vec![],
        leaving: false,
        draining: false,
        about: Default::default(),
    };
    // Signed by key 3 while claiming to be key 2.
    let forged = Signed::<LoadReport>::from_parts(
        wire::encode(&honest),
        key(3).sign(&wire::encode(&honest)),
    );
    a.handle_gossip(0, &mut rng(), &wire::encode(&Gossip::Load(forged)));
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.counters().rejected_signature, 1);
    assert_eq!(a.peers().count(), 0);
}

#[test]
fn truncated_and_oversized_messages_are_counted_and_dropped() {
    let mut a = peer(1, 1, true);
    let mut rng = rng();
    let bytes = report(&key(2), 1, 0, true);
    a.handle_gossip(0, &mut rng, &bytes[..bytes.len() / 2]);
    a.handle_message(0, &mut rng, key(2).public(), &[0xff, 0x01]);
    a.handle_message(
        0,
        &mut rng,
        key(2).public(),
        &vec![0u8; wire::MAX_MESSAGE_BYTES + 1],
    );
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.counters().rejected_malformed, 2);
    assert_eq!(a.counters().rejected_oversize, 1);
}

fn lease(task: TaskId, holder: PeerKey, granted_by: PeerKey) -> Lease {
    Lease {
        task,
        epoch: E1,
        holder,
        granted_by,
        ttl_ms: 2000,
    }
}

#[test]
fn a_placed_task_whose_id_does_not_match_its_spec_is_rejected() {
    let (mut b, a) = (peer(2, 1, true), key(1));
    let task = Task::from_signed(signed(&a, 1)).unwrap();
    let wrong = TaskId::from_bytes([9; 32]);
    let envelope = Envelope {
        id: wrong,
        ..task.envelope()
    };
    let grant = Grant {
        granted_by: a.public(),
        leases: vec![lease(wrong, b.me(), a.public())],
    };
    let message = Message::Place {
        tasks: vec![envelope],
        grant: Signed::sign(&grant, &a),
    };
    b.handle_message(0, &mut rng(), a.public(), &wire::encode(&message));
    assert!(
        drain(&mut b)
            .iter()
            .all(|a| !matches!(a, Action::Execute { .. }))
    );
    assert_eq!(b.counters().rejected_id_mismatch, 1);
    assert_eq!(b.queued() + b.running() as usize, 0);
}

#[test]
fn a_lease_with_a_bad_signature_or_from_a_third_party_is_rejected() {
    let (mut b, a, mallory) = (peer(2, 1, true), key(1), key(9));
    let task = Task::from_signed(signed(&a, 1)).unwrap();
    let grant = Grant {
        granted_by: a.public(),
        leases: vec![lease(task.id, b.me(), a.public())],
    };
    let signed = Signed::sign(&grant, &a);
    let mut sig = signed.signature().to_bytes();
    sig[0] ^= 0x40;
    let tampered = Signed::from_parts(
        signed.bytes().to_vec(),
        taskswarm_protocol::Signature::from_bytes(sig),
    );
    let message = Message::Place {
        tasks: vec![task.envelope()],
        grant: tampered,
    };
    b.handle_message(0, &mut rng(), a.public(), &wire::encode(&message));
    assert_eq!(b.counters().rejected_signature, 1);

    // A genuine grant by A, relayed by mallory, is not mallory's to give.
    let message = Message::Place {
        tasks: vec![task.envelope()],
        grant: signed,
    };
    b.handle_message(1, &mut rng(), mallory.public(), &wire::encode(&message));
    assert_eq!(b.counters().rejected_unauthorized, 1);
    assert!(drain(&mut b).is_empty());
}

#[test]
fn a_forged_record_is_not_stored() {
    let (mut b, a) = (peer(2, 1, true), key(1));
    let mut a_sched = peer(1, 1, true);
    a_sched.handle_gossip(0, &mut rng(), &report(&key(2), 1, 0, true));
    drain(&mut a_sched);
    a_sched.submit(0, &mut rng(), vec![spec(&a, 1)]);
    let store = sent_to(&drain(&mut a_sched), b.me());
    let Ok(Message::Store { mut records }) = wire::decode::<Message>(store.last().unwrap()) else {
        panic!("a store message");
    };
    records[0].record.envelope.id = TaskId::from_bytes([7; 32]);
    let forged = wire::encode(&Message::Store { records });
    b.handle_message(1, &mut rng(), a.public(), &forged);
    assert_eq!(b.counters().rejected_id_mismatch, 1);
    assert_eq!(b.tasks().count(), 0);
}

#[test]
fn a_peer_that_cannot_run_a_task_refuses_it() {
    let (a, mut b) = (key(1), peer(2, 1, false));
    let task = Task::from_signed(signed(&a, 1)).unwrap();
    let grant = Grant {
        granted_by: a.public(),
        leases: vec![lease(task.id, b.me(), a.public())],
    };
    let place = Message::Place {
        tasks: vec![task.envelope()],
        grant: Signed::sign(&grant, &a),
    };
    let refusal = sent_to(
        &deliver_bytes(&mut b, a.public(), &[wire::encode(&place)], 0),
        a.public(),
    );
    assert_eq!(refusal.len(), 1);
    assert_eq!(
        wire::decode::<Message>(&refusal[0]).unwrap().kind(),
        "refused"
    );
}

#[test]
fn an_unreachable_peer_gets_its_placement_back() {
    let mut a = peer(1, 1, false);
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let id = *a.submit(1, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    let place = drain(&mut a)
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                message: m @ Message::Place { .. },
                ..
            } => Some(m),
            _ => None,
        })
        .unwrap();
    a.handle_send_failed(2, &mut rng, key(2).public(), place);
    assert_eq!(
        a.task(&id).unwrap().holder,
        None,
        "nobody else can run it: it waits"
    );
    assert_eq!(a.peers().count(), 1, "unreachable, not taken for dead");
    // When an exec peer appears, the task is placed on it (at the next scan).
    let ttl = u64::from(Config::default().lease_ttl_ms);
    a.handle_gossip(ttl, &mut rng, &report(&key(3), 1, 0, true));
    a.tick(ttl + 1, &mut rng);
    assert_eq!(a.task(&id).unwrap().holder, Some(key(3).public()));
    assert_eq!(a.task(&id).unwrap().epoch, E2);
}

#[test]
fn ticks_broadcast_a_signed_load_report_at_the_interval() {
    let mut a = peer(1, 3, true);
    let mut rng = rng();
    a.tick(0, &mut rng);
    let actions = drain(&mut a);
    let Action::Broadcast {
        gossip: Gossip::Load(signed),
    } = &actions[0]
    else {
        panic!("{actions:?}");
    };
    let report = signed.open().unwrap();
    assert_eq!((report.peer, report.seq, report.slots), (a.me(), 1, 3));
    a.tick(100, &mut rng);
    assert!(drain(&mut a).is_empty(), "not due yet");
    a.tick(200, &mut rng);
    assert_eq!(drain(&mut a).len(), 1);
}

#[test]
fn a_holder_that_was_frozen_stops_what_it_holds_on_waking() {
    let (a, mut b) = (key(1), peer(2, 1, true));
    let mut rng = rng();
    let task = Task::from_signed(signed(&a, 1)).unwrap();
    b.tick(0, &mut rng);
    b.handle_gossip(0, &mut rng, &report(&a, 1, 0, false));
    let grant = Grant {
        granted_by: a.public(),
        leases: vec![lease(task.id, b.me(), a.public())],
    };
    let place = Message::Place {
        tasks: vec![task.envelope()],
        grant: Signed::sign(&grant, &a),
    };
    let placed = deliver_bytes(&mut b, a.public(), &[wire::encode(&place)], 10);
    let started = checks_answered_by(&mut b, placed, a.public(), 10);
    assert!(kinds(&started).contains(&"execute@1.0".to_string()));
    b.tick(20, &mut rng);
    drain(&mut b);
    // Frozen for a lease TTL: on waking, the first input is a fresh report from A, which would
    // make A look alive; the gap since the last tick stops the attempt all the same.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    b.handle_gossip(20 + ttl, &mut rng, &report(&a, 2, 0, false));
    assert!(kinds(&drain(&mut b)).contains(&"abort@1.0".to_string()));
    assert_eq!(b.counters().tasks_abandoned, 1);
    b.tick(21 + ttl, &mut rng);
    assert!(
        !kinds(&drain(&mut b)).iter().any(|k| k.starts_with("abort")),
        "only once"
    );
}

/// A task that names a placement policy is placed by it, not by its primary's: round-robin puts
/// a task on the busy peer in its turn, where the primary's power of two choices never would.
#[test]
fn a_task_placed_by_its_own_policy() {
    let mut a = peer(1, 2, true);
    let mut rng = rng();
    let (b, busy) = (key(2), key(3));
    a.handle_gossip(0, &mut rng, &report(&b, 1, 0, true));
    a.handle_gossip(0, &mut rng, &report(&busy, 1, 50, true));
    drain(&mut a);
    let placed_on_busy = |a: &mut Scheduler, rng: &mut ChaCha8Rng, nonce: u64, policy| {
        let mut ids = Vec::new();
        for n in 0..9 {
            let spec = TaskSpec {
                placement: policy,
                ..process_spec(&key(1), nonce + n, RetryPolicy::default()).spec
            };
            let submitted = a.submit(0, rng, vec![spec.into()]);
            ids.push(*submitted[0].as_ref().unwrap());
        }
        drain(a);
        ids.iter()
            .filter(|id| a.task(id).unwrap().holder == Some(busy.public()))
            .count()
    };
    assert_eq!(
        placed_on_busy(&mut a, &mut rng, 100, None),
        0,
        "p2c avoids it"
    );
    assert_eq!(
        placed_on_busy(&mut a, &mut rng, 200, Some(Policy::RoundRobin)),
        3,
        "round-robin gives it its turn"
    );
}

/// A member cannot fill another's memory and disk: a peer keeps at most so many unfinished
/// records of one origin's tasks; the rest are refused (and counted) until some finish, and the
/// origin's resends then get them in.
#[test]
fn a_peer_keeps_at_most_its_quota_of_one_origins_unfinished_records() {
    let mut a = peer(1, 1, false);
    let config = Config {
        records_per_origin: 3,
        ..Config::default()
    };
    let mut b = Scheduler::new(key(2), config);
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, false));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, false));
    drain(&mut a);
    drain(&mut b);
    let ids: Vec<TaskId> = a
        .submit(0, &mut rng, (0..5).map(|n| spec(&key(1), n)).collect())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let acks = deliver(&mut b, a.me(), &drain(&mut a), 1);
    assert_eq!(b.tasks().count(), 3, "three kept");
    assert_eq!(b.counters().rejected_by_kind.get("store"), Some(&2));
    deliver(&mut a, b.me(), &acks, 2);
    // Two of the kept tasks end (cancelled); A's resends bring the other two in.
    let kept: Vec<TaskId> = b.tasks().map(|r| r.id()).collect();
    for id in &kept[..2] {
        a.cancel(3, &mut rng, *id, None);
    }
    deliver(&mut b, a.me(), &drain(&mut a), 4);
    a.tick(1_000, &mut rng);
    deliver(&mut b, a.me(), &drain(&mut a), 1_001);
    assert_eq!(b.tasks().count(), 5, "all five once two ended");
    assert!(ids.iter().all(|id| b.task(id).is_some()));
}

/// The primary asks a holder to confirm a lease that has not changed for two lease TTLs; a holder
/// that does not hold the task (here: its placement never arrived) says so, and the primary
/// re-claims the task and places it again at a higher epoch.
#[test]
fn a_lease_its_holder_does_not_hold_is_confirmed_missing_and_placed_again() {
    let (mut a, mut b, mut rng, id, actions) = a_submits_one_task_that_b_runs();
    assert_eq!(a.task(&id).unwrap().holder, Some(b.me()));
    // B gets the record but not the placement.
    let store: Vec<Vec<u8>> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } if *to == b.me() && message.kind() == "store" => {
                Some(wire::encode(message))
            }
            _ => None,
        })
        .collect();
    assert_eq!(store.len(), 1);
    let stored = deliver_bytes(&mut b, a.me(), &store, 2);
    deliver(&mut a, b.me(), &stored, 3);

    // Both stay alive (reports every 200 ms, ticks every 100 ms) until A asks B to confirm.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    let mut confirm = Vec::new();
    let mut now = 100;
    while confirm.is_empty() && now <= 4 * ttl {
        if now % 200 == 0 {
            a.handle_gossip(now, &mut rng, &report(&key(2), now, 0, true));
            b.handle_gossip(now, &mut rng, &report(&key(1), now, 0, false));
        }
        a.tick(now, &mut rng);
        b.tick(now, &mut rng);
        drain(&mut b);
        confirm = drain(&mut a)
            .into_iter()
            .filter(|a| matches!(a, Action::Send { message, .. } if message.kind() == "confirm"))
            .collect();
        now += 100;
    }
    assert!(!confirm.is_empty(), "no lease check by {now} ms");
    assert!(now > 2 * ttl, "asked after {now} ms, before two TTLs");
    let answer = deliver(&mut b, a.me(), &confirm, now);
    assert_eq!(kinds(&answer), ["send missing"]);
    let again = deliver(&mut a, b.me(), &answer, now + 1);
    assert!(
        kinds(&again).contains(&"send place".to_string()),
        "{:?}",
        kinds(&again)
    );
    let record = a.task(&id).unwrap();
    assert_eq!(record.holder, Some(b.me()));
    assert!(record.epoch > E1, "placed again at a higher epoch");
}

/// Submits `n` specs of peer 1 at time 1; their ids.
fn submit_many(s: &mut Scheduler, rng: &mut ChaCha8Rng, n: u64) -> Vec<TaskId> {
    let specs: Vec<Submission> = (0..n).map(|nonce| spec(&key(1), nonce)).collect();
    s.submit(1, rng, specs)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// The primary's scan visits a bounded number of records per tick, so a tick's cost does not grow
/// with the backlog; a backlog larger than that is still visited whole, over several ticks: every
/// task a dead holder held is re-claimed and placed again.
#[test]
fn a_backlog_larger_than_one_scan_is_reclaimed_over_several_ticks() {
    let config = Config {
        slots: 1,
        capabilities: Capabilities {
            exec: false,
            handlers: vec!["echo".into()],
            offer: Default::default(),
        },
        scan_per_tick: 4,
        ..Config::default()
    };
    let mut a = Scheduler::new(key(1), config);
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let ids = submit_many(&mut a, &mut rng, 10);
    drain(&mut a);
    assert!(
        ids.iter()
            .all(|id| a.task(id).unwrap().holder == Some(key(2).public())),
        "only B runs processes"
    );
    // B falls silent; C appears. Tick by tick, at most 4 of B's tasks are re-claimed.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    a.handle_gossip(ttl, &mut rng, &report(&key(3), 1, 0, true));
    let mut per_tick = Vec::new();
    for now in ttl + 1..ttl + 50 {
        let before = a.counters().leases_reclaimed;
        a.tick(now, &mut rng);
        drain(&mut a);
        per_tick.push(a.counters().leases_reclaimed - before);
    }
    assert!(per_tick.iter().all(|n| *n <= 4), "{per_tick:?}");
    assert!(
        per_tick.iter().filter(|n| **n > 0).count() >= 3,
        "{per_tick:?}"
    );
    assert_eq!(a.counters().leases_reclaimed, 10);
    for id in &ids {
        let record = a.task(id).unwrap();
        assert_eq!(record.holder, Some(key(3).public()));
        assert_eq!(record.epoch, E2);
    }
}

/// The records sent to a member in one `Store`, by message.
fn stores_to(actions: &[Action], to: PeerKey) -> Vec<Vec<TaskId>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to: t,
                message: Message::Store { records },
            } if *t == to => Some(records.iter().map(|r| r.record.id()).collect()),
            _ => None,
        })
        .collect()
}

/// A member that comes back is sent the records it shares a page at a time, the next page once it
/// acknowledged the last: what waits to be sent to one peer stays bounded however large the
/// backlog, and every record still reaches it.
#[test]
fn a_member_that_comes_back_catches_up_a_page_at_a_time() {
    let config = Config {
        slots: 0,
        place_batch_max: 2,
        ..Config::default()
    };
    let mut a = Scheduler::new(key(1), config);
    let b = key(2);
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&b, 1, 0, false));
    drain(&mut a);
    let ids = submit_many(&mut a, &mut rng, 20);
    drain(&mut a);
    // B falls silent and is forgotten, then reports again: A sends it a first page (4 x 2).
    let ttl = u64::from(Config::default().lease_ttl_ms);
    a.tick(2 * ttl, &mut rng);
    drain(&mut a);
    assert_eq!(a.peers().count(), 0, "B is forgotten");
    a.handle_gossip(2 * ttl + 1, &mut rng, &report(&b, 2, 0, false));
    let first: Vec<TaskId> = stores_to(&drain(&mut a), b.public()).concat();
    assert_eq!(first.len(), 8, "one page");
    // Nothing more until B acknowledges (or a resend interval passes).
    a.tick(2 * ttl + 2, &mut rng);
    assert!(stores_to(&drain(&mut a), b.public()).is_empty());
    let mut sent = first.clone();
    let mut now = 2 * ttl + 3;
    let mut last = first;
    while sent.len() < ids.len() && now < 3 * ttl {
        let acks: Vec<(TaskId, u64)> = last
            .iter()
            .map(|id| (*id, a.task(id).unwrap().version))
            .collect();
        let stored = wire::encode(&Message::Stored { acks });
        deliver_bytes(&mut a, b.public(), &[stored], now);
        a.tick(now + 1, &mut rng);
        last = stores_to(&drain(&mut a), b.public()).concat();
        assert!(last.len() <= 8, "{} records in one page", last.len());
        sent.extend(&last);
        now += 2;
    }
    sent.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(sent, all, "every shared record, once");
}

/// A places a task (home set A, B, C) on B; B runs it; A records the result and sends the new
/// version to B only (C keeps it running).
fn b_ran_it_and_only_b_heard_the_end() -> (Scheduler, Scheduler, Scheduler, TaskId, ChaCha8Rng) {
    let mut rng = rng();
    // A spec whose home set ranks B (the only peer that runs processes) right after A.
    let (mut a, mut b, mut c, id) = (0..64)
        .find_map(|nonce| {
            let (mut a, mut b, mut c) = (peer(1, 0, false), peer(2, 2, true), peer(3, 0, false));
            for (s, others) in [(&mut a, [2, 3]), (&mut b, [1, 3]), (&mut c, [1, 2])] {
                for n in others {
                    s.handle_gossip(0, &mut rng, &report(&key(n), 1, 0, n == 2));
                }
                drain(s);
            }
            let id = *a.submit(1, &mut rng, vec![spec(&key(1), nonce)])[0]
                .as_ref()
                .unwrap();
            let home = a.task(&id).unwrap().envelope.home.clone();
            (home == vec![a.me(), b.me(), c.me()]).then_some((a, b, c, id))
        })
        .expect("some spec ranks B second");
    let from_a = drain(&mut a);
    assert_eq!(a.task(&id).unwrap().holder, Some(b.me()));
    let from_b = deliver(&mut b, a.me(), &from_a, 2);
    let from_c = deliver(&mut c, a.me(), &from_a, 2);
    let back = [
        deliver(&mut a, b.me(), &from_b, 3),
        deliver(&mut a, c.me(), &from_c, 3),
    ]
    .concat();
    // B asked A for a start check before it started: it starts on A's answer.
    let started = deliver(&mut b, a.me(), &back, 4);
    assert!(kinds(&started).contains(&"execute@1.0".to_string()));
    deliver(&mut c, a.me(), &back, 4);
    let running = deliver(&mut a, b.me(), &started, 4);
    deliver(&mut b, a.me(), &running, 4);
    deliver(&mut c, a.me(), &running, 4);
    // B runs it; A records the result, sends the new version to B only, and dies.
    b.handle_finished(5, &mut rng, id, E1, ok());
    let completion = drain(&mut b);
    let from_a = deliver(&mut a, b.me(), &completion, 6);
    deliver(&mut b, a.me(), &from_a, 7);
    assert_eq!(b.task(&id).unwrap().state, TaskState::Completed);
    assert_eq!(
        c.task(&id).unwrap().state,
        TaskState::Running,
        "C missed it"
    );
    (a, b, c, id, rng)
}

/// A holder that keeps the record of a task refuses a lease older than that record (here: the
/// task ended), as a primary that has not caught up would grant after a cut: it does not run the
/// task again, and sends the primary its record.
#[test]
fn a_holder_refuses_a_lease_older_than_the_record_it_keeps() {
    let (a, mut b, _c, id, _rng) = b_ran_it_and_only_b_heard_the_end();
    let refused = b
        .counters()
        .rejected_by_kind
        .get("place")
        .copied()
        .unwrap_or(0);
    let envelope = b.task(&id).unwrap().envelope.clone();
    let grant = Grant {
        granted_by: a.me(),
        leases: vec![lease(id, b.me(), a.me())],
    };
    let place = Message::Place {
        tasks: vec![envelope],
        grant: Signed::sign(&grant, &key(1)),
    };
    let answer = deliver_bytes(&mut b, a.me(), &[wire::encode(&place)], 8);
    assert!(
        !kinds(&answer)
            .iter()
            .any(|k| k.starts_with("execute") || k == "send ping"),
        "{:?}",
        kinds(&answer)
    );
    assert_eq!(
        b.counters().rejected_by_kind.get("place"),
        Some(&(refused + 1))
    );
    let back: Vec<String> = sent_to(&answer, a.me())
        .iter()
        .map(|bytes| wire::decode::<Message>(bytes).unwrap().kind().to_string())
        .collect();
    assert_eq!(back, ["store"], "the newer record goes back");
    assert_eq!(b.task(&id).unwrap().state, TaskState::Completed);
}

/// The primary recorded a result and died after sending the new version to the holder but not
/// to the third member. The holder, ranked next, leads the task once the survivors take the
/// primary for dead, and brings the third member level: a client waiting there is answered, and
/// that member never leads the task from its old version (re-claiming, and running again, a task
/// that ended).
#[test]
fn a_member_the_dead_primary_left_behind_is_brought_level_by_the_next() {
    let (_a, mut b, mut c, id, mut rng) = b_ran_it_and_only_b_heard_the_end();
    // B and C hear each other, not A; past a lease TTL they take A for dead.
    let ttl = u64::from(Config::default().lease_ttl_ms);
    let mut seq = 2;
    for now in (100..3 * ttl).step_by(100) {
        seq += 1;
        b.handle_gossip(now, &mut rng, &report(&key(3), seq, 0, false));
        c.handle_gossip(now, &mut rng, &report(&key(2), seq, 0, true));
        b.tick(now, &mut rng);
        c.tick(now, &mut rng);
        let (to_c, to_b) = (drain(&mut b), drain(&mut c));
        deliver(&mut c, b.me(), &to_c, now);
        deliver(&mut b, c.me(), &to_b, now);
    }
    assert_eq!(c.task(&id).unwrap().state, TaskState::Completed);
    assert_eq!(b.task(&id).unwrap().state, TaskState::Completed);
    assert_eq!(b.task(&id).unwrap().attempts.len(), 1, "it ran once");
}

/// The load reports among `actions`, encoded as gossip travels.
fn broadcasts(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast { gossip } => Some(wire::encode(gossip)),
            _ => None,
        })
        .collect()
}

/// A and B, of one slot each, know each other; A takes `n` tasks (submitted one at a time), and
/// places some on B.
fn a_takes_tasks_that_b_can_run(n: u64) -> (Scheduler, Scheduler, ChaCha8Rng, Vec<TaskId>) {
    let (mut a, mut b) = (peer(1, 1, true), peer(2, 1, true));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    b.handle_gossip(0, &mut rng, &report(&key(1), 1, 0, true));
    drain(&mut a);
    drain(&mut b);
    let ids: Vec<TaskId> = (1..=n)
        .map(|n| {
            *a.submit(0, &mut rng, vec![spec(&key(1), n)])[0]
                .as_ref()
                .unwrap()
        })
        .collect();
    (a, b, rng, ids)
}

#[test]
fn a_peer_that_leaves_has_its_tasks_taken_over_at_once() {
    // A's only slot takes the first task; the second goes to B, which queues or runs it.
    let (mut a, mut b, mut rng, ids) = a_takes_tasks_that_b_can_run(2);
    let placed = drain(&mut a);
    deliver(&mut b, a.me(), &placed, 10);
    let on_b = ids
        .into_iter()
        .find(|id| a.task(id).unwrap().holder == Some(b.me()))
        .expect("one task is placed on B");
    assert_eq!(b.held().count(), 1);

    // A primary acts once it has been up a TTL (1.5 s); B was last heard at 1.4 s.
    a.handle_gossip(1_400, &mut rng, &report(&key(2), 2, 0, true));
    b.leave(1_600, &mut rng);
    let goodbye = drain(&mut b);
    assert_eq!(b.held().count(), 0, "B stopped what it held");
    assert!(b.is_leaving());
    let goodbye = broadcasts(&goodbye);
    assert_eq!(goodbye.len(), 1, "B says goodbye in a load report");
    for bytes in &goodbye {
        a.handle_gossip(1_650, &mut rng, bytes);
    }
    // Long before B's lease runs out (at 2.9 s), A takes the task back.
    a.tick(1_700, &mut rng);
    drain(&mut a);
    assert_eq!(a.peers().count(), 0, "B is out of A's view");
    let record = a.task(&on_b).unwrap();
    assert_eq!(record.holder, Some(a.me()), "re-claimed and placed on A");
    assert_eq!(record.epoch, E2);

    // B takes no more work, and its later reports keep it out of the view.
    let more = b.submit(1_800, &mut rng, vec![spec(&key(2), 9)]);
    assert!(more[0].is_err());
    b.tick(1_900, &mut rng);
    for bytes in broadcasts(&drain(&mut b)) {
        a.handle_gossip(1_950, &mut rng, &bytes);
    }
    assert_eq!(a.peers().count(), 0);
    // A new run of B (another boot number) is B back.
    a.handle_gossip(2_000, &mut rng, &report(&key(2), 1, 0, true));
    assert_eq!(a.peers().count(), 1);
}

#[test]
fn a_victim_does_not_take_back_a_task_it_handed_on_when_its_placement_comes_again() {
    // C places 5 tasks on B; B gives two to A under epoch 1.1, and their held rows leave its
    // store before the grant leaves it.
    let (mut a, mut b, c, mut rng, to_b) = c_places_five_on_b();
    a.handle_gossip(2, &mut rng, &report(&key(2), 5, 4, true));
    let request = sent_to(&drain(&mut a), b.me());
    let from_b = deliver_bytes(&mut b, a.me(), &request, 3);
    let grant_at = from_b
        .iter()
        .position(|x| {
            matches!(
                x,
                Action::Send {
                    message: Message::StealGrant { .. },
                    ..
                }
            )
        })
        .expect("B grants tasks to A");
    let deleted = from_b[..grant_at]
        .iter()
        .filter(|x| {
            matches!(
                x,
                Action::Write {
                    table: Table::Held,
                    value: None,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        deleted, 2,
        "the given tasks leave B's store before the grant"
    );
    assert_eq!(b.queued(), 2);

    // The placement comes to B again (a late copy): B must not queue those tasks again, or a
    // later thief would get epoch 1.1 a second time.
    deliver_bytes(&mut b, c.me(), &to_b, 4);
    assert_eq!(b.queued(), 2, "the tasks handed on are not taken again");
}

#[test]
fn a_draining_peer_hands_its_queue_back_finishes_what_it_runs_and_takes_nothing_new() {
    // B's one slot runs a task and queues another (A leads both, with B in their home sets).
    let (mut a, mut b, mut rng, ids) = a_takes_tasks_that_b_can_run(4);
    deliver(&mut b, a.me(), &drain(&mut a), 10);
    let on_b: Vec<TaskId> = ids
        .iter()
        .copied()
        .filter(|id| a.task(id).unwrap().holder == Some(b.me()))
        .collect();
    assert!(on_b.len() >= 2, "B holds {} of 4", on_b.len());
    let (running, queued) = (b.running(), b.queued());
    assert!(
        running == 1 && queued >= 1,
        "running {running}, queued {queued}"
    );

    b.drain(100, &mut rng);
    assert!(b.is_draining() && !b.is_drained());
    let out = drain(&mut b);
    assert_eq!((b.running(), b.queued()), (1, 0), "the queue went back");
    let (run_id, run_epoch) = b.held().next().unwrap();
    let missing: Vec<Message> = sent_to(&out, a.me())
        .iter()
        .map(|bytes| wire::decode::<Message>(bytes).unwrap())
        .filter(|m| m.kind() == "missing")
        .collect();
    let [Message::Missing { tasks }] = missing.as_slice() else {
        panic!("{:?}", kinds(&out));
    };
    assert_eq!(tasks.len(), queued);
    // Its report says it is draining: A places nothing more on it and takes the queue back.
    for bytes in broadcasts(&out) {
        a.handle_gossip(110, &mut rng, &bytes);
    }
    deliver(&mut a, b.me(), &out, 120);
    for (id, _) in tasks {
        let record = a.task(id).unwrap();
        assert_ne!(record.holder, Some(b.me()), "{id:?} placed back on B");
        assert!(record.epoch >= E2, "re-claimed at a new major epoch");
    }
    // No new work: a submission is refused.
    assert!(b.submit(130, &mut rng, vec![spec(&key(2), 9)])[0].is_err());

    // What it runs finishes there, and is recorded by A; then B is drained.
    b.handle_finished(
        200,
        &mut rng,
        run_id,
        run_epoch,
        Outcome::Returned { output: vec![] },
    );
    let done = drain(&mut b);
    let recorded = deliver(&mut a, b.me(), &done, 210);
    assert_eq!(a.task(&run_id).unwrap().state, TaskState::Completed);
    // A tells B once B (a member too) stored the result.
    let stored = deliver(&mut b, a.me(), &recorded, 220);
    let told = deliver(&mut a, b.me(), &stored, 230);
    assert!(!b.is_drained(), "its result is not acknowledged yet");
    deliver(&mut b, a.me(), &told, 240);
    assert!(b.is_drained(), "held {:?}", b.held().collect::<Vec<_>>());
}

/// A member met anew is sent the records it shares with this peer, and counts as level only once
/// it has answered each, and this peer keeps each at the version the member answered with: an
/// unanswered page goes again (it used to be taken as done a resend interval after it went), and
/// so does one answered with a newer version this peer has not taken yet (after a cut, the other
/// side may have run and ended the task). A page goes again at most six times.
#[test]
fn a_catch_up_page_goes_again_until_the_member_answered_it_at_the_version_kept_here() {
    let mut a = peer(1, 0, false);
    let mut rng = rng();
    for n in [2, 3] {
        a.handle_gossip(0, &mut rng, &report(&key(n), 1, 0, false));
    }
    let id = *a.submit(1, &mut rng, vec![spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    drain(&mut a);
    let b = key(2).public();
    let stores_to_b = |actions: &[Action]| {
        sent_to(actions, b)
            .iter()
            .filter(|bytes| wire::decode::<Message>(bytes).unwrap().kind() == "store")
            .count()
    };
    // B restarts: A meets it anew and sends it the record.
    a.handle_gossip(10, &mut rng, &report_of_run(&key(2), 2, 1, 0, false));
    assert_eq!(stores_to_b(&drain(&mut a)), 1);
    // The stores A sends B from `from` to `to`, B reporting (run `boot`) all along.
    let resent_by = |a: &mut Scheduler, rng: &mut ChaCha8Rng, boot: u64, from: u64, to: u64| {
        (from..to)
            .step_by(20)
            .map(|now| {
                a.handle_gossip(now, rng, &report_of_run(&key(2), boot, now, 0, false));
                a.tick(now, rng);
                stores_to_b(&drain(a))
            })
            .sum::<usize>()
    };
    let resend = Config::default().resend_after_ms;
    let mut now = 20;
    assert_eq!(
        resent_by(&mut a, &mut rng, 2, now, now + resend + 10),
        1,
        "unanswered: sent again"
    );
    // B answers at the version A keeps: settled, nothing more goes.
    let version = a.task(&id).unwrap().version;
    let stored = |version: u64| {
        wire::encode(&Message::Stored {
            acks: vec![(id, version)],
        })
    };
    now += resend + 20;
    deliver_bytes(&mut a, b, &[stored(version)], now);
    assert_eq!(resent_by(&mut a, &mut rng, 2, now, now + 10 * resend), 0);
    // B restarts again, and answers with a newer version than A keeps: the page goes again
    // (B would send its version each time) until A has taken it, or six times.
    now += 10 * resend;
    a.handle_gossip(now, &mut rng, &report_of_run(&key(2), 3, now, 0, false));
    assert_eq!(stores_to_b(&drain(&mut a)), 1);
    deliver_bytes(&mut a, b, &[stored(version + 3)], now);
    assert_eq!(
        resent_by(&mut a, &mut rng, 3, now + 20, now + 20 + 10 * resend),
        6,
        "answered with a version not kept here: sent again, six times at most"
    );
}
