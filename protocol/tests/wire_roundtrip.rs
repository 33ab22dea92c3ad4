//! Every wire message survives encode → decode unchanged, and every strict prefix of its encoding
//! is rejected (never accepted as a different message, never a panic).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use taskswarm_protocol::{
    Attempt, Capabilities, Ending, Envelope, Gossip, Grant, Keypair, Label, Lease, LoadReport,
    Message, Needs, Offer, Outcome, PeerKey, ProcessSpec, Resources, Signed, Task, TaskId,
    TaskKind, TaskRecord, TaskSpec, TaskState, Transition, wire,
};

fn key() -> Keypair {
    Keypair::from_secret([5; 32])
}

fn arb_peer() -> impl Strategy<Value = PeerKey> {
    any::<[u8; 32]>().prop_map(PeerKey::from_bytes)
}

fn arb_id() -> impl Strategy<Value = TaskId> {
    any::<[u8; 32]>().prop_map(TaskId::from_bytes)
}

fn arb_kind() -> impl Strategy<Value = TaskKind> {
    prop_oneof![
        (
            ".{0,12}",
            prop::collection::vec(".{0,8}", 0..4),
            prop::collection::vec((".{0,4}", ".{0,4}"), 0..3),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(
                |(program, args, env, stdin)| TaskKind::Process(ProcessSpec {
                    program,
                    args,
                    env,
                    stdin
                })
            ),
        (".{0,12}", prop::collection::vec(any::<u8>(), 0..32))
            .prop_map(|(name, input)| TaskKind::Handler { name, input }),
    ]
}

fn arb_resources() -> impl Strategy<Value = Resources> {
    (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(cpu_milli, memory, disk)| Resources {
        cpu_milli,
        memory,
        disk,
    })
}

fn arb_labels() -> impl Strategy<Value = Vec<Label>> {
    prop::collection::vec(("[a-z]{1,4}", "[a-z0-9]{0,3}"), 0..3).prop_map(|ls| {
        ls.into_iter()
            .map(|(key, value)| Label { key, value })
            .collect()
    })
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<u64>(),
        arb_kind(),
        proptest::option::of(any::<u64>()),
        (arb_resources(), arb_labels()),
        any::<i32>(),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(
            |(nonce, kind, timeout_ms, (resources, labels), priority, cost_ms)| {
                let k = key();
                let spec = TaskSpec {
                    home: vec![k.public()],
                    client: Some("alice".into()),
                    timeout_ms,
                    needs: Needs { resources, labels },
                    priority,
                    cost_ms,
                    name: Some("a".into()),
                    after: vec![TaskId::from_bytes([7; 32])],
                    run_anyway: true,
                    ..TaskSpec::new(k.public(), nonce, kind)
                };
                Task::from_signed(Signed::sign(&spec, &k))
                    .map(|t| t.envelope())
                    .unwrap()
            },
        )
}

fn arb_grant() -> impl Strategy<Value = taskswarm_protocol::SignedGrant> {
    prop::collection::vec((arb_id(), any::<u64>(), arb_peer(), any::<u32>()), 0..4).prop_map(|ls| {
        let k = key();
        let leases = ls
            .into_iter()
            .map(|(task, epoch, holder, ttl_ms)| Lease {
                task,
                epoch,
                holder,
                granted_by: k.public(),
                ttl_ms,
            })
            .collect();
        Signed::sign(
            &Grant {
                granted_by: k.public(),
                leases,
            },
            &k,
        )
    })
}

fn arb_caps() -> impl Strategy<Value = Capabilities> {
    (
        any::<bool>(),
        prop::collection::vec("[a-z]{1,6}", 0..3),
        arb_resources(),
        arb_labels(),
    )
        .prop_map(|(exec, handlers, capacity, labels)| Capabilities {
            exec,
            handlers,
            offer: Offer { capacity, labels },
        })
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..32);
    prop_oneof![
        (proptest::option::of(any::<i32>()), bytes(), bytes()).prop_map(
            |(code, stdout, stderr)| Outcome::Exited {
                code,
                stdout,
                stderr
            }
        ),
        bytes().prop_map(|output| Outcome::Returned { output }),
        (bytes(), bytes()).prop_map(|(stdout, stderr)| Outcome::TimedOut { stdout, stderr }),
        ".{0,20}".prop_map(|message| Outcome::Error { message }),
        ".{0,20}".prop_map(|message| Outcome::NotStarted { message }),
    ]
}

fn record(envelope: Envelope, version: u64, outcome: Outcome) -> TaskRecord {
    let peer = envelope.home[0];
    TaskRecord {
        envelope,
        state: TaskState::Failed,
        epoch: 3,
        holder: Some(peer),
        version,
        attempts: vec![Attempt {
            peer,
            epoch: 3,
            ending: Ending::Failure,
            exit_code: Some(2),
            detail: "x".into(),
            at_wall_ms: 5,
        }],
        history: vec![Transition {
            state: TaskState::Failed,
            peer: None,
            epoch: 3,
            at_wall_ms: 9,
            note: "n".into(),
        }],
        outcome: Some(outcome),
        executed_by: Some(peer),
        submitted_wall_ms: 1,
        finished_wall_ms: Some(9),
    }
}

/// A record sealed by the test key, alone in its batch.
fn sealed(record: TaskRecord) -> taskswarm_protocol::SealedRecord {
    let digest = taskswarm_protocol::seal::digest(&record);
    let seal = taskswarm_protocol::seal::seal(&key(), &[digest]).remove(0);
    taskswarm_protocol::SealedRecord { record, seal }
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (prop::collection::vec(arb_envelope(), 0..3), arb_grant())
            .prop_map(|(tasks, grant)| Message::Place { tasks, grant }),
        (any::<u32>(), arb_caps()).prop_map(|(free_slots, capabilities)| Message::StealRequest {
            free_slots,
            capabilities
        }),
        (prop::collection::vec(arb_envelope(), 0..3), arb_grant())
            .prop_map(|(tasks, grant)| Message::StealGrant { tasks, grant }),
        Just(Message::NothingToSteal),
        arb_grant().prop_map(|grant| Message::Transferred { grant }),
        (arb_id(), any::<u64>(), arb_outcome()).prop_map(|(task, epoch, outcome)| {
            Message::Completed {
                task,
                epoch,
                outcome,
            }
        }),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4)
            .prop_map(|tasks| Message::Started { tasks }),
        (arb_id(), any::<u64>()).prop_map(|(task, epoch)| Message::Refused { task, epoch }),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4)
            .prop_map(|acks| Message::Stored { acks }),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4)
            .prop_map(|tasks| Message::Recorded { tasks }),
        (arb_id(), proptest::option::of("[a-z]{0,8}"))
            .prop_map(|(task, by)| Message::Cancel { task, by }),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4)
            .prop_map(|tasks| Message::Confirm { tasks }),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4)
            .prop_map(|tasks| Message::Missing { tasks }),
        (arb_id(), any::<u64>()).prop_map(|(task, epoch)| Message::Abort { task, epoch }),
        (any::<u64>(), arb_id()).prop_map(|(query, task)| Message::Query { query, task }),
        (arb_envelope(), any::<u64>(), arb_outcome()).prop_map(|(envelope, version, outcome)| {
            let record = record(envelope, version, outcome);
            Message::Store {
                records: vec![sealed(record)],
            }
        }),
        (any::<u64>(), proptest::option::of(arb_envelope())).prop_map(|(query, envelope)| {
            Message::Answer {
                query,
                record: envelope
                    .map(|e| Box::new(sealed(record(e, 1, Outcome::Returned { output: vec![] })))),
            }
        }),
    ]
}

fn arb_gossip() -> impl Strategy<Value = Gossip> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        arb_caps(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..3),
    )
        .prop_map(|(seq, queued, running, slots, capabilities, addrs)| {
            let k = key();
            let report = LoadReport {
                peer: k.public(),
                boot: 1,
                seq,
                queued,
                running,
                slots,
                capabilities,
                addrs,
                leaving: seq % 2 == 1,
                draining: seq % 3 == 1,
                about: Default::default(),
            };
            Gossip::Load(Signed::sign(&report, &k))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip(message in arb_message()) {
        let bytes = wire::encode(&message);
        prop_assert_eq!(wire::decode::<Message>(&bytes), Ok(message));
        for cut in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            if cut < bytes.len() {
                prop_assert!(wire::decode::<Message>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn gossip_round_trips_and_verifies(gossip in arb_gossip()) {
        let bytes = wire::encode(&gossip);
        let decoded = wire::decode::<Gossip>(&bytes).unwrap();
        let Gossip::Load(signed) = &decoded;
        prop_assert!(signed.open().is_ok());
        prop_assert_eq!(decoded, gossip);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = wire::decode::<Message>(&bytes);
        let _ = wire::decode::<Gossip>(&bytes);
    }
}
