//! The scheduler, tested by the actions it emits: feed one event, assert what comes out.
//! No sockets, no clocks, no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use taskswarm_protocol::{
    Action, Capabilities, Config, Envelope, Gossip, Grant, Keypair, Lease, LoadReport, Message,
    Outcome, PeerKey, ProcessSpec, Scheduler, Signed, SignedSpec, Task, TaskId, TaskKind, TaskSpec,
    TaskState, wire,
};

fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

fn peer(n: u8, slots: u32, exec: bool) -> Scheduler {
    let config = Config {
        slots,
        capabilities: Capabilities {
            exec,
            handlers: vec!["echo".into()],
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

fn process_spec(submitter: &Keypair, nonce: u64) -> SignedSpec {
    let spec = TaskSpec {
        submitter: submitter.public(),
        nonce,
        kind: TaskKind::Process(ProcessSpec {
            program: "true".into(),
            args: vec![],
            env: vec![],
            stdin: vec![],
        }),
        timeout_ms: None,
    };
    Signed::sign(&spec, submitter)
}

fn report(from: &Keypair, seq: u64, queued: u32, exec: bool) -> Vec<u8> {
    let report = LoadReport {
        peer: from.public(),
        seq,
        queued,
        running: 0,
        slots: 2,
        capabilities: Capabilities {
            exec,
            handlers: vec!["echo".into()],
        },
        addrs: vec![b"addr".to_vec()],
    };
    wire::encode(&Gossip::Load(Signed::sign(&report, from)))
}

/// Returns the only `Send` in `actions` to `to`, encoded as it would travel.
fn sent_to(actions: &[Action], to: PeerKey) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to: t, message } if *t == to => Some(wire::encode(message)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lone_peer_runs_what_it_is_given() {
    let mut a = peer(1, 2, true);
    let mut rng = rng();
    let ids = a.submit(0, &mut rng, vec![process_spec(&key(1), 1)]);
    let id = *ids[0].as_ref().unwrap();
    let actions = drain(&mut a);
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[0], Action::Persist { task: id });
    assert!(matches!(&actions[1], Action::Execute { task, epoch: 1, .. } if *task == id));
    assert_eq!(actions[2], Action::Persist { task: id });
    assert_eq!(a.task(&id).unwrap().state, TaskState::Running);

    let done = Outcome::Exited {
        code: Some(0),
        stdout: b"ok".to_vec(),
        stderr: vec![],
    };
    a.handle_finished(5, &mut rng, id, 1, done.clone());
    assert_eq!(drain(&mut a), vec![Action::Persist { task: id }]);
    let record = a.task(&id).unwrap();
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!(record.outcome, Some(done));
    assert_eq!(record.executed_by, Some(a.me()));
}

#[test]
fn submitting_the_same_spec_twice_is_one_task() {
    let mut a = peer(1, 2, true);
    let spec = process_spec(&key(1), 1);
    let first = a.submit(0, &mut rng(), vec![spec.clone()]);
    drain(&mut a);
    let second = a.submit(0, &mut rng(), vec![spec]);
    assert_eq!(first, second);
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.tasks().count(), 1);
}

#[test]
fn a_new_peer_is_announced_once() {
    let mut a = peer(1, 2, true);
    a.handle_gossip(0, &mut rng(), &report(&key(2), 1, 0, true));
    assert_eq!(
        drain(&mut a),
        vec![Action::PeerDiscovered {
            peer: key(2).public(),
            addrs: vec![b"addr".to_vec()]
        }]
    );
    a.handle_gossip(1, &mut rng(), &report(&key(2), 2, 0, true));
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.peers().count(), 1);
}

/// A submits a process task it cannot run; B, which can, gets it, runs it and reports back.
#[test]
fn placement_execution_and_result_across_two_peers() {
    let (mut a, mut b) = (peer(1, 2, false), peer(2, 2, true));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let id = *a.submit(1, &mut rng, vec![process_spec(&key(1), 7)])[0]
        .as_ref()
        .unwrap();
    let actions = drain(&mut a);
    assert_eq!(actions[0], Action::Persist { task: id });
    let place = sent_to(&actions, b.me());
    assert_eq!(place.len(), 1);
    assert_eq!(actions.len(), 2, "{actions:?}");
    let record = a.task(&id).unwrap();
    assert_eq!((record.epoch, record.holder), (1, Some(b.me())));

    b.handle_message(2, &mut rng, a.me(), &place[0]);
    let actions = drain(&mut b);
    assert!(matches!(&actions[0], Action::Execute { task, epoch: 1, .. } if *task == id));
    let started = sent_to(&actions, a.me());
    assert_eq!(started.len(), 1);
    a.handle_message(3, &mut rng, b.me(), &started[0]);
    assert_eq!(drain(&mut a), vec![Action::Persist { task: id }]);
    assert_eq!(a.task(&id).unwrap().state, TaskState::Running);

    let failed = Outcome::Exited {
        code: Some(1),
        stdout: vec![],
        stderr: b"no".to_vec(),
    };
    b.handle_finished(4, &mut rng, id, 1, failed.clone());
    let completed = sent_to(&drain(&mut b), a.me());
    a.handle_message(5, &mut rng, b.me(), &completed[0]);
    assert_eq!(drain(&mut a), vec![Action::Persist { task: id }]);
    let record = a.task(&id).unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.executed_by, Some(b.me()));
    assert_eq!(record.outcome, Some(failed));

    // The same completion again is a duplicate and changes nothing.
    a.handle_message(6, &mut rng, b.me(), &completed[0]);
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.counters().completions_duplicate, 1);
}

/// B holds queued work; idle A steals half of it; B tells the origin C; C records A's result.
#[test]
fn an_idle_peer_steals_and_the_origin_follows_the_lease() {
    let (mut a, mut b, mut c) = (peer(1, 4, true), peer(2, 1, true), peer(3, 1, false));
    let mut rng = rng();
    c.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut c);
    let specs = (0..5).map(|n| process_spec(&key(3), n)).collect();
    let ids: Vec<TaskId> = c
        .submit(0, &mut rng, specs)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for bytes in sent_to(&drain(&mut c), b.me()) {
        b.handle_message(1, &mut rng, c.me(), &bytes);
    }
    drain(&mut b);
    assert_eq!((b.running(), b.queued()), (1, 4));

    a.handle_gossip(2, &mut rng, &report(&key(2), 5, 4, true));
    let actions = drain(&mut a);
    let request = sent_to(&actions, b.me());
    assert_eq!(request.len(), 1, "{actions:?}");
    assert_eq!(a.counters().steal_requests, 1);

    b.handle_message(3, &mut rng, a.me(), &request[0]);
    let actions = drain(&mut b);
    assert_eq!(b.queued(), 2, "half of 4 queued tasks go");
    let grant = sent_to(&actions, a.me());
    let notice = sent_to(&actions, c.me());
    assert_eq!((grant.len(), notice.len()), (1, 1), "{actions:?}");

    a.handle_message(4, &mut rng, b.me(), &grant[0]);
    let executed: Vec<(TaskId, u64)> = drain(&mut a)
        .into_iter()
        .filter_map(|a| match a {
            Action::Execute { task, epoch, .. } => Some((task, epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(executed.len(), 2);
    assert!(executed.iter().all(|(_, epoch)| *epoch == 2));
    assert_eq!(a.counters().tasks_stolen, 2);

    // A's completion reaches C before B's transfer notice: C waits for the notice, then records.
    let (stolen, epoch) = executed[0];
    let ok = Outcome::Returned { output: vec![] };
    a.handle_finished(5, &mut rng, stolen, epoch, ok);
    let completed = sent_to(&drain(&mut a), c.me());
    c.handle_message(6, &mut rng, a.me(), &completed[0]);
    drain(&mut c);
    assert_eq!(c.task(&stolen).unwrap().state, TaskState::Waiting);
    c.handle_message(7, &mut rng, b.me(), &notice[0]);
    drain(&mut c);
    let record = c.task(&stolen).unwrap();
    assert_eq!(record.state, TaskState::Completed);
    assert_eq!((record.epoch, record.executed_by), (2, Some(a.me())));

    // B finishing a task it no longer holds is a stale completion at the origin.
    let old = Outcome::Returned { output: vec![] };
    let stale = wire::encode(&Message::Completed {
        task: stolen,
        epoch: 1,
        outcome: old,
    });
    c.handle_message(8, &mut rng, b.me(), &stale);
    assert_eq!(
        c.counters().completions_stale,
        0,
        "already final: counted as duplicate"
    );
    assert_eq!(c.counters().completions_duplicate, 1);
    assert!(ids.contains(&stolen));
}

#[test]
fn a_completion_from_an_older_epoch_is_rejected_as_stale() {
    let (mut a, mut b) = (peer(1, 1, false), peer(2, 1, true));
    let mut rng = rng();
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let id = *a.submit(1, &mut rng, vec![process_spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    drain(&mut a);
    // The lease is at epoch 1; a completion naming epoch 0 is stale.
    let outcome = Outcome::Exited {
        code: Some(0),
        stdout: vec![],
        stderr: vec![],
    };
    let stale = wire::encode(&Message::Completed {
        task: id,
        epoch: 0,
        outcome,
    });
    a.handle_message(2, &mut rng, b.me(), &stale);
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.counters().completions_stale, 1);
    assert_eq!(a.task(&id).unwrap().state, TaskState::Waiting);
    let _ = &mut b;
}

#[test]
fn a_load_report_with_a_bad_signature_is_counted_and_dropped() {
    let mut a = peer(1, 1, true);
    let honest = LoadReport {
        peer: key(2).public(),
        seq: 1,
        queued: 0,
        running: 0,
        slots: 1,
        capabilities: Capabilities::default(),
        addrs: vec![],
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
        epoch: 1,
        holder,
        granted_by,
        ttl_ms: 2000,
    }
}

#[test]
fn a_placed_task_whose_id_does_not_match_its_spec_is_rejected() {
    let (mut b, a) = (peer(2, 1, true), key(1));
    let task = Task::from_signed(process_spec(&a, 1), a.public()).unwrap();
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
    let task = Task::from_signed(process_spec(&a, 1), a.public()).unwrap();
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
fn a_peer_that_cannot_run_a_task_refuses_it_and_the_origin_places_it_again() {
    let (mut a, mut b) = (peer(1, 1, true), peer(2, 1, false));
    let mut rng = rng();
    let task = Task::from_signed(process_spec(&key(1), 1), a.me()).unwrap();
    // A believes B can exec (an old report); B cannot.
    a.handle_gossip(0, &mut rng, &report(&key(2), 1, 0, true));
    drain(&mut a);
    let grant = Grant {
        granted_by: a.me(),
        leases: vec![lease(task.id, b.me(), a.me())],
    };
    let place = Message::Place {
        tasks: vec![task.envelope()],
        grant: Signed::sign(&grant, &key(1)),
    };
    b.handle_message(0, &mut rng, a.me(), &wire::encode(&place));
    let refusal = sent_to(&drain(&mut b), a.me());
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
    let id = *a.submit(1, &mut rng, vec![process_spec(&key(1), 1)])[0]
        .as_ref()
        .unwrap();
    let place = drain(&mut a)
        .into_iter()
        .find_map(|a| match a {
            Action::Send { message, .. } => Some(message),
            _ => None,
        })
        .unwrap();
    a.handle_send_failed(2, &mut rng, key(2).public(), place);
    let record = a.task(&id).unwrap();
    assert_eq!(record.holder, None, "nobody else can run it: it waits");
    assert_eq!(a.peers().count(), 0);
    // When an exec peer appears, the task is placed on it.
    a.handle_gossip(3, &mut rng, &report(&key(3), 1, 0, true));
    assert_eq!(a.task(&id).unwrap().holder, Some(key(3).public()));
    assert_eq!(a.task(&id).unwrap().epoch, 2);
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
