//! The swarm seen from any peer, on real peer processes: `taskswarm status` lists every live peer
//! with its load, resources, version and uptime; `taskswarm task list` and `GET /v1/tasks` cover
//! the whole swarm (every live peer asked for the records it keeps), page by page and filtered;
//! and a task that is not running says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use taskswarm::TaskState;
use taskswarm::api_client::{TaskList, TaskQuery};
use taskswarm::view::ClusterView;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

/// Runs the CLI against peer `api`; returns its standard output, asserting it succeeded.
fn cli(binary: &Path, api: &str, token: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(binary);
    command.args(args).env("TASKSWARM_API", api);
    if let Some(token) = token {
        command.env("TASKSWARM_TOKEN", token);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "taskswarm {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every task a query matches, following `next` page by page; checks no task comes twice.
async fn every_page(cluster: &Cluster, peer: usize, mut query: TaskQuery) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page: TaskList = cluster.api(peer).unwrap().list(&query).await.unwrap();
        assert_eq!(
            page.peers_asked, page.peers_answered,
            "a peer did not answer"
        );
        ids.extend(page.tasks.iter().map(|t| t.id.clone()));
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a task came twice: {ids:?}");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_peer_shows_every_peer_and_lists_every_task_of_the_swarm() {
    let dir = tempfile::Builder::new().prefix("status").tempdir().unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let cluster = Cluster::start(Options::local(4, binary.clone(), dir.path().to_path_buf()))
        .await
        .unwrap();
    let token = cluster.token().map(str::to_string);

    // 40 tasks that complete, submitted through every peer in turn.
    let mut completed = BTreeSet::new();
    for peer in 0..4 {
        let specs: Vec<_> = (0..10).map(|_| json!({ "program": "true" })).collect();
        let ids = cluster.submit(peer, &specs).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let tasks = cluster.wait_all(peer, &ids, deadline).await.unwrap();
        assert!(tasks.iter().all(|t| t.state == TaskState::Completed));
        completed.extend(ids);
    }
    // Two no peer can run, and one that waits for a dependency that runs a while.
    let gpu = json!({ "program": "true", "labels": ["gpu=1"] });
    let unschedulable = cluster.submit(1, &[gpu.clone(), gpu]).await.unwrap();
    let first = json!({ "program": "sleep", "args": ["600"], "name": "first" });
    let first = cluster.submit(2, &[first]).await.unwrap();
    let second = json!({ "program": "true", "name": "second", "after": [first[0]] });
    let second = cluster.submit(3, &[second]).await.unwrap();

    // Every task that is not running says why, wherever it is asked.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = cluster
            .api(0)
            .unwrap()
            .list(&TaskQuery::default())
            .await
            .unwrap();
        let reason = |id: &str| {
            list.tasks
                .iter()
                .find(|t| t.id == id)
                .and_then(|t| t.reason.clone())
                .unwrap_or_default()
        };
        let gpu = reason(&unschedulable[0]);
        let waiting = reason(&second[0]);
        if gpu.contains("gpu=1") && waiting.contains("waiting for dependency first") {
            let text = cli(
                &binary,
                &cluster.peers[0].api,
                token.as_deref(),
                &["task", "list", "--state", "waiting"],
            );
            println!("{text}");
            assert!(text.contains("waiting for dependency first"), "{text}");
            assert!(text.contains("matching in the swarm: 1 waiting"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reason given: gpu {gpu:?}, waiting {waiting:?}: {:#?}",
            list.tasks.iter().find(|t| t.id == second[0])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for peer in 0..4 {
        let api = &cluster.peers[peer].api;
        // `status` lists every peer, with its load.
        let text = cli(&binary, api, token.as_deref(), &["status"]);
        let view: ClusterView =
            serde_json::from_str(&cli(&binary, api, token.as_deref(), &["status", "--json"]))
                .unwrap();
        let all: Vec<_> = std::iter::once(&view.me).chain(&view.peers).collect();
        assert_eq!(all.len(), 4, "{text}");
        for p in &all {
            assert!(text.contains(&p.peer_id), "{text}");
            assert_eq!(p.version, env!("CARGO_PKG_VERSION"));
            assert!(
                p.uptime_ms > 0 && p.api.is_some() && !p.cpus.is_empty(),
                "{p:?}"
            );
        }
        assert!(text.contains("swarm: 4 peers"), "{text}");
        assert_eq!(view.swarm.peers, 4);
        assert_eq!(view.swarm.slots, all.iter().map(|p| p.slots).sum::<u32>());
        if peer == 0 {
            println!("{text}");
        }

        // `task list --state completed` lists every completed task of the swarm.
        let listed: TaskList = serde_json::from_str(&cli(
            &binary,
            api,
            token.as_deref(),
            &["task", "list", "--state", "completed", "--json"],
        ))
        .unwrap();
        let ids: BTreeSet<String> = listed.tasks.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, completed, "peer {peer}");
        // Every peer counts the tasks it leads: the swarm's counts, whichever peer is asked.
        let counts = listed.counts.clone().unwrap();
        assert_eq!(counts["completed"], 40, "peer {peer}: {counts:?}");
        let all = cluster
            .api(peer)
            .unwrap()
            .list(&TaskQuery {
                limit: Some(1),
                ..TaskQuery::default()
            })
            .await
            .unwrap()
            .counts
            .unwrap();
        assert_eq!(all["completed"], 40, "peer {peer}: {all:?}");
        assert_eq!(all["unschedulable"], 2, "peer {peer}: {all:?}");
        assert_eq!(all["running"] + all["waiting"], 2, "peer {peer}: {all:?}");
        // The same, seven at a time through the API.
        let query = TaskQuery {
            state: Some(TaskState::Completed),
            limit: Some(7),
            ..TaskQuery::default()
        };
        let paged: BTreeSet<String> = every_page(&cluster, peer, query)
            .await
            .into_iter()
            .collect();
        assert_eq!(paged, completed, "peer {peer}, paged");
    }

    // Filters: by label, by submitter, by time.
    let by_label = TaskQuery {
        label: Some("gpu=1".into()),
        ..TaskQuery::default()
    };
    let labelled: BTreeSet<String> = every_page(&cluster, 2, by_label)
        .await
        .into_iter()
        .collect();
    assert_eq!(labelled, unschedulable.iter().cloned().collect());
    let view = cluster
        .api(0)
        .unwrap()
        .task(&completed.iter().next().unwrap().clone())
        .await
        .unwrap();
    if let Some(client) = view.client {
        let by_client = TaskQuery {
            submitter: Some(client),
            ..TaskQuery::default()
        };
        assert_eq!(every_page(&cluster, 3, by_client).await.len(), 44);
        let nobody = TaskQuery {
            submitter: Some("nobody".into()),
            ..TaskQuery::default()
        };
        assert!(every_page(&cluster, 3, nobody).await.is_empty());
    }
    let later = TaskQuery {
        since_ms: Some(view.submitted_ms + 3_600_000),
        ..TaskQuery::default()
    };
    assert!(every_page(&cluster, 1, later).await.is_empty());
}
