//! Proofs with real `taskswarm` processes on loopback: `task verify` checks a completed task's
//! signed chain itself, and a member whose stored copy of a record was changed on disk refuses it,
//! says why, and gets the record again from the other members. Every wait is bounded; every
//! process is ended by PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};
use taskswarm::TaskState;

use serde_json::json;
use taskswarm::TaskView;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

const MARKER: &str = "proof-marker-7f3a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_proves_its_chain_and_a_flipped_copy_is_refused() {
    let dir = tempfile::Builder::new().prefix("proof").tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let mut cluster = Cluster::start(Options::local(3, binary.clone(), dir.path().into()))
        .await
        .unwrap();
    let spec = json!({ "program": "echo", "args": [MARKER] });
    let id = cluster.submit(0, &[spec]).await.unwrap().remove(0);
    let done = cluster
        .wait_all(
            0,
            std::slice::from_ref(&id),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(done[0].state, TaskState::Completed);

    // The command line checks the proof itself and prints the chain.
    let verify = std::process::Command::new(&binary)
        .args(["task", "verify", &id])
        .env("TASKSWARM_API", &cluster.peers[1].api)
        .env("TASKSWARM_TOKEN_FILE", cluster.token_file().unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.contains("the proof holds"), "{said}");
    assert!(said.contains("submitted by client testnet"), "{said}");
    assert!(said.contains("sealed by"), "{said}");
    assert!(said.contains("attempt 1 ran on"), "{said}");
    println!("task verify {id}:\n{said}");

    // One flipped bit of the proof, and it does not hold: in the command (the spec's signature
    // breaks) or in the output (the record's seal breaks).
    let proof: taskswarm::proof::ProofView = cluster.api(1).unwrap().proof(&id).await.unwrap();
    let bytes = hex::decode(&proof.sealed).unwrap();
    let places: Vec<usize> = (0..bytes.len() - MARKER.len())
        .filter(|&i| &bytes[i..i + MARKER.len()] == MARKER.as_bytes())
        .collect();
    assert_eq!(places.len(), 2, "once in the spec, once in the output");
    for (at, broken) in places.into_iter().zip(["bad signature", "bad record seal"]) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        let error = taskswarm::proof::check(&id, &hex::encode(&flipped)).unwrap_err();
        assert!(error.to_string().contains(broken), "{error}");
    }

    // Flip the marker in peer 3's store file while it is down: when the record is read back, it
    // refuses it, says why, and answers with the others' copy. (Stopped cleanly: after a crash the store
    // repairs itself at start and refuses a damaged file outright.)
    cluster.stop_peer(2).unwrap();
    let store = cluster.peers[2].dir.join("store.redb");
    let mut file = std::fs::read(&store).unwrap();
    // The output the task printed (the marker and a newline), not the command in the spec.
    let printed = format!("{MARKER}\n");
    let mut flipped = 0;
    let mut from = 0;
    while let Some(at) = file[from..]
        .windows(printed.len())
        .position(|w| w == printed.as_bytes())
    {
        file[from + at] ^= 0x01;
        flipped += 1;
        from += at + printed.len();
    }
    assert!(flipped > 0, "the record is in the store file");
    std::fs::write(&store, &file).unwrap();
    cluster
        .restart(2, Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    // An ended record is read back from disk when something names it: asked for it, peer 3
    // refuses its changed row, saying so, and answers with the record the other members keep.
    // (Until it hears from the others again, it has no one to ask.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let task: TaskView = loop {
        match cluster.get(2, &format!("/v1/tasks/{id}")).await {
            Ok(task) => break task,
            Err(error) => assert!(Instant::now() < deadline, "peer 3 never answered: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(task.state, TaskState::Completed);
    assert_eq!(task.stdout.as_deref(), Some(format!("{MARKER}\n").as_str()));
    let log = std::fs::read_to_string(cluster.dir.join("peer3.log")).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("refusing a stored row"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(refusal.contains(&id), "{refusal}");
    println!("peer 3 said: {refusal}");
    let proof: taskswarm::proof::ProofView = cluster
        .get(2, &format!("/v1/tasks/{id}/proof"))
        .await
        .unwrap();
    taskswarm::proof::check(&id, &proof.sealed).unwrap();
}
