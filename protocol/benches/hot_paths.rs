//! Micro-benchmarks of the protocol's hot paths: wire encoding, signing and verifying (one lease
//! per signature against one signature per batch), spec verification, and scheduler steps with a
//! deep queue. `cargo bench -p taskswarm-protocol`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use taskswarm_protocol::{
    Capabilities, Config, Grant, Keypair, Lease, Message, Outcome, ProcessSpec, Scheduler, Signed,
    Task, TaskId, TaskKind, TaskSpec, wire,
};

fn key(n: u8) -> Keypair {
    Keypair::from_secret([n; 32])
}

/// A process task as a client asks for it (the submitting peer completes and signs it).
fn new_spec(submitter: &Keypair, nonce: u64) -> TaskSpec {
    let kind = TaskKind::Process(ProcessSpec {
        program: "sleep".into(),
        args: vec!["0.1".into()],
        env: vec![],
        stdin: vec![],
    });
    TaskSpec {
        timeout_ms: Some(10_000),
        ..TaskSpec::new(submitter.public(), nonce, kind)
    }
}

/// The same spec signed by `submitter` as its origin and only home member.
fn spec(submitter: &Keypair, nonce: u64) -> Signed<TaskSpec> {
    let spec = TaskSpec {
        home: vec![submitter.public()],
        ..new_spec(submitter, nonce)
    };
    Signed::sign(&spec, submitter)
}

fn leases(n: usize) -> Vec<Lease> {
    (0..n)
        .map(|i| Lease {
            task: TaskId::from_bytes([i as u8; 32]),
            epoch: 1 << 32,
            holder: key(2).public(),
            granted_by: key(1).public(),
            ttl_ms: 1500,
        })
        .collect()
}

fn wire_paths(c: &mut Criterion) {
    let a = key(1);
    let tasks: Vec<_> = (0..64)
        .map(|n| Task::from_signed(spec(&a, n)).unwrap().envelope())
        .collect();
    let grant = Signed::sign(
        &Grant {
            granted_by: a.public(),
            leases: leases(64),
        },
        &a,
    );
    let place = Message::Place { tasks, grant };
    let completed = Message::Completed {
        task: TaskId::from_bytes([7; 32]),
        epoch: 1 << 32,
        outcome: Outcome::Exited {
            code: Some(0),
            stdout: vec![b'x'; 1024],
            stderr: vec![],
        },
    };
    let place_bytes = wire::encode(&place);
    let completed_bytes = wire::encode(&completed);
    c.bench_function("encode place(64 tasks)", |b| {
        b.iter(|| wire::encode(black_box(&place)))
    });
    c.bench_function("decode place(64 tasks)", |b| {
        b.iter(|| wire::decode::<Message>(black_box(&place_bytes)).unwrap())
    });
    c.bench_function("encode completed(1 KiB stdout)", |b| {
        b.iter(|| wire::encode(black_box(&completed)))
    });
    c.bench_function("decode completed(1 KiB stdout)", |b| {
        b.iter(|| wire::decode::<Message>(black_box(&completed_bytes)).unwrap())
    });
}

fn signatures(c: &mut Criterion) {
    let a = key(1);
    let one = Grant {
        granted_by: a.public(),
        leases: leases(1),
    };
    let batch = Grant {
        granted_by: a.public(),
        leases: leases(64),
    };
    c.bench_function("sign grant(1 lease)", |b| {
        b.iter(|| Signed::sign(black_box(&one), &a))
    });
    c.bench_function("sign grant(64 leases)", |b| {
        b.iter(|| Signed::sign(black_box(&batch), &a))
    });
    let signed_one = Signed::sign(&one, &a);
    let signed_batch = Signed::sign(&batch, &a);
    c.bench_function("verify grant(1 lease)", |b| {
        b.iter(|| black_box(&signed_one).verify().unwrap())
    });
    c.bench_function("verify grant(64 leases)", |b| {
        b.iter(|| black_box(&signed_batch).verify().unwrap())
    });
    let signed_spec = spec(&a, 1);
    let envelope = Task::from_signed(signed_spec).unwrap().envelope();
    c.bench_function("verify task envelope", |b| {
        b.iter(|| Task::from_envelope(black_box(envelope.clone())).unwrap())
    });
}

/// A lone peer holding `depth` queued tasks of its own (one slot, so they queue).
fn deep(depth: u64) -> Scheduler {
    let a = key(1);
    let config = Config {
        slots: 1,
        capabilities: Capabilities {
            exec: true,
            handlers: vec![],
            offer: Default::default(),
        },
        ..Config::default()
    };
    let mut s = Scheduler::new(a.clone(), config);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    s.submit(
        0,
        &mut rng,
        (0..depth).map(|n| new_spec(&a, n).into()).collect(),
    );
    while s.poll_action().is_some() {}
    s
}

fn scheduler_steps(c: &mut Criterion) {
    let depth = 10_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2);

    // A tick when the record scan is due: 10,000 active records checked for lost leases.
    let mut s = deep(depth);
    let mut now = 0;
    c.bench_function("tick with scan, 10k active tasks", |b| {
        b.iter(|| {
            now += 200;
            s.tick(now, &mut rng);
            while s.poll_action().is_some() {}
        })
    });

    // A steal request against a 10,000-deep queue: choose, sign one grant, emit. (Building the
    // deep scheduler is setup, kept out of the measurement.)
    let thief = key(2).public();
    let request = wire::encode(&Message::StealRequest {
        free_slots: 8,
        capabilities: Capabilities {
            exec: true,
            handlers: vec![],
            offer: Default::default(),
        },
    });
    c.bench_function("steal request, 10k queued", |b| {
        b.iter_batched(
            || deep(depth),
            |mut s| {
                s.handle_message(1, &mut rng, thief, &request);
                while s.poll_action().is_some() {}
                s
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, wire_paths, signatures, scheduler_steps);
criterion_main!(benches);
