//! Who may join a swarm and use a peer's API, with real `taskswarm` processes on loopback: a
//! private swarm keeps out machines without its key, and the API answers each request by the
//! roles of the token presented. Every wait is bounded; every process is ended by PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};
use taskswarm::TaskState;

use serde_json::json;
use taskswarm::{ClusterView, TaskView};
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

/// A single open peer (no swarm key, no tokens) that runs no processes, bootstrapped to `addr`,
/// with `args` added.
async fn outsider(name: &str, addr: &str, args: &[&str]) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix(name).tempdir().unwrap();
    let mut options = Options::local(1, taskswarm_binary("debug").unwrap(), dir.path().into());
    options.private = false;
    options.allow_exec = false;
    options.node_args = vec!["--bootstrap".into(), addr.into()];
    options.node_args.extend(args.iter().map(|a| a.to_string()));
    (Cluster::start(options).await.unwrap(), dir)
}

/// Waits until `check` holds for peer 0 of `cluster`'s view, or panics at the deadline.
async fn await_view(cluster: &Cluster, what: &str, check: impl Fn(&ClusterView) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster.cluster(0).await.unwrap();
        if check(&view) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not by the deadline: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_without_the_swarm_key_cannot_join_or_run_anything() {
    let dir = tempfile::Builder::new()
        .prefix("private")
        .tempdir()
        .unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let members = Cluster::start(Options::local(3, binary.clone(), dir.path().into()))
        .await
        .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let other_key = key_dir.path().join("other.key");
    let status = std::process::Command::new(&binary)
        .args(["swarm", "init", "--out"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(status.success());
    let addr = members.peers[0].addr.clone();
    let other_key = other_key.to_str().unwrap();
    let (wrong_key, _d1) = outsider("wrongkey", &addr, &["--swarm-key", other_key]).await;
    let (no_key, _d2) = outsider("nokey", &addr, &[]).await;

    // Both tried, and failed: their dials fail, and the member refuses their connections.
    for stranger in [&wrong_key, &no_key] {
        await_view(stranger, "a failed dial", |v| v.network.dials_failed >= 1).await;
    }
    await_view(&members, "two refused connections", |v| {
        v.network.incoming_refused >= 2
    })
    .await;

    // What they submit stays with them: nobody to run it.
    let spec = json!({ "program": "sh", "args": ["-c", "echo ran on $TASKSWARM_PEER"] });
    let mut stranger_ids = Vec::new();
    for stranger in [&wrong_key, &no_key] {
        let ids = stranger.submit(0, &vec![spec.clone(); 5]).await.unwrap();
        for id in &ids {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let task: TaskView = stranger.api(0).unwrap().task(id).await.unwrap();
                if task.state == TaskState::Unschedulable {
                    break;
                }
                assert!(Instant::now() < deadline, "{task:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stranger_ids.extend(ids);
    }

    let strangers = [&wrong_key.peers[0].peer_id, &no_key.peers[0].peer_id];
    for i in 0..members.peers.len() {
        let view = members.cluster(i).await.unwrap();
        assert_eq!(view.peers.len(), 2, "member {i} sees {:?}", view.peers);
        assert!(view.peers.iter().all(|p| !strangers.contains(&&p.peer_id)));
        assert_eq!(view.counters.tasks_executed, 0, "member {i} ran something");
        assert!(view.admission.private);
        let list: serde_json::Value = members.get(i, "/v1/tasks").await.unwrap();
        let kept: Vec<&str> = list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["id"].as_str())
            .collect();
        assert!(stranger_ids.iter().all(|id| !kept.contains(&id.as_str())));
    }
    for stranger in [&wrong_key, &no_key] {
        let view = stranger.cluster(0).await.unwrap();
        assert!(view.peers.is_empty(), "a stranger sees {:?}", view.peers);
    }
    assert!(!no_key.cluster(0).await.unwrap().admission.private);

    // The members themselves work together as before.
    let ids = members.submit(0, &vec![spec; 6]).await.unwrap();
    let done = members
        .wait_all(0, &ids, Instant::now() + Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        done.iter().all(|t| t.state == TaskState::Completed),
        "{done:?}"
    );
    println!(
        "a peer with another key and one with none: refused {} times by member 1; their {} tasks \
         stayed unschedulable; the members ran their own {} tasks",
        members.cluster(0).await.unwrap().network.incoming_refused,
        stranger_ids.len(),
        done.len()
    );
}

/// An allowlist admits only the peers it names: a fifth member with the swarm key but not on the
/// list cannot join until the list names it and the members read it again (SIGHUP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_admits_only_the_peers_it_names_and_is_read_again_on_sighup() {
    let dir = tempfile::Builder::new().prefix("allow").tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    // The members' keys are made first, so the list can name them before they start.
    let ids: Vec<String> = (1..=4)
        .map(|n| {
            let key =
                taskswarm::keys::load_or_create(&dir.path().join(format!("peer{n}/key"))).unwrap();
            taskswarm::keys::peer_id(&key.public()).unwrap().to_string()
        })
        .collect();
    let list = dir.path().join("allow");
    std::fs::write(&list, format!("# the members\n{}\n", ids[..3].join("\n"))).unwrap();
    let mut options = Options::local(3, binary, dir.path().into());
    options.node_args = vec!["--allow-peers".into(), list.to_str().unwrap().into()];
    let mut cluster = Cluster::start(options).await.unwrap();
    assert_eq!(
        cluster.cluster(0).await.unwrap().admission.allowlist,
        Some(3)
    );

    // Peer 4 has the key but is not on the list (the list it reads names the members).
    let deadline = Instant::now() + Duration::from_secs(30);
    let four = cluster.add_peer(&[], deadline).await.unwrap();
    assert_eq!(cluster.peers[four].peer_id, ids[3]);
    await_view(&cluster, "the stranger refused", |v| {
        v.network.incoming_refused >= 1
    })
    .await;
    for i in 0..3 {
        let view = cluster.cluster(i).await.unwrap();
        assert!(view.peers.iter().all(|p| p.peer_id != ids[3]), "{view:?}");
    }

    // Named in the list and read again, it joins.
    std::fs::write(&list, ids.join("\n")).unwrap();
    for i in 0..3 {
        cluster.signal(i, nix::sys::signal::Signal::SIGHUP).unwrap();
    }
    cluster
        .await_membership(Instant::now() + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        cluster.cluster(0).await.unwrap().admission.allowlist,
        Some(4)
    );
    println!("peer 4 was refused while not on the list, and joined once it was (after SIGHUP)");
}

/// Adds a token with `role` to the testnet's token file; returns it.
fn add_token(binary: &std::path::Path, cluster: &Cluster, name: &str, role: &str) -> String {
    let out = std::process::Command::new(binary)
        .args(["token", "add", "--name", name, "--role", role, "--file"])
        .arg(cluster.dir.join("tokens.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_each_request_by_the_roles_of_its_token() {
    let dir = tempfile::Builder::new().prefix("tokens").tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let cluster = Cluster::start(Options::local(1, binary.clone(), dir.path().into()))
        .await
        .unwrap();
    let read = add_token(&binary, &cluster, "reader", "read");
    let submit = add_token(&binary, &cluster, "ci", "submit");
    let cancel = add_token(&binary, &cluster, "ops", "cancel");
    // A running peer reads its token file again on SIGHUP.
    cluster.signal(0, nix::sys::signal::Signal::SIGHUP).unwrap();
    let api = cluster.peers[0].api.clone();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = http.request(method, format!("{api}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while call(reqwest::Method::GET, "/v1/cluster", Some(&read))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "the new tokens were not read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spec = json!({ "program": "sleep", "args": ["30"] });

    let none = call(reqwest::Method::POST, "/v1/tasks", None)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let body: serde_json::Value = none.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let wrong = call(reqwest::Method::GET, "/v1/cluster", Some("tsk_forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let reader = call(reqwest::Method::POST, "/v1/tasks", Some(&read))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);
    let body: serde_json::Value = reader.json().await.unwrap();
    assert_eq!(body["needs"], "submit", "{body}");

    let plain = call(reqwest::Method::POST, "/v1/tasks", Some(&submit))
        .header("content-type", "text/plain")
        .body(spec.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);

    let submitted = call(reqwest::Method::POST, "/v1/tasks", Some(&submit))
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 201);
    let id = submitted.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let by_submitter = call(
        reqwest::Method::DELETE,
        &format!("/v1/tasks/{id}"),
        Some(&submit),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(by_submitter.status(), 403);
    let by_canceller = call(
        reqwest::Method::DELETE,
        &format!("/v1/tasks/{id}"),
        Some(&cancel),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(by_canceller.status(), 202);
    let ended = call(
        reqwest::Method::GET,
        &format!("/v1/tasks/{id}?wait_ms=20000"),
        Some(&read),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(ended.status(), 200);
    let task: TaskView = ended.json().await.unwrap();
    assert_eq!(task.state, TaskState::Cancelled, "{task:?}");
    assert_eq!(
        task.client.as_deref(),
        Some("ci"),
        "the spec names its client"
    );
    let health = call(reqwest::Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "liveness needs no token");
    println!(
        "no token: 401; read token submitting: 403; text/plain: 415; submit: 201; cancel with submit: 403, with cancel: 202"
    );
}

#[test]
fn a_node_refuses_to_serve_an_open_api_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let out = std::process::Command::new(binary)
        .args(["node", "--api", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("TASKSWARM_TOKENS")
        .env_remove("TASKSWARM_SWARM_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the API on 0.0.0.0:0 without tokens"),
        "{stderr}"
    );
    println!("node --api 0.0.0.0:0 without tokens: {}", stderr.trim());
}
