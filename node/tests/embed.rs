//! Peers embedded in one process through the library: handlers, placement and stealing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;
use taskswarm::TaskState;

use taskswarm::{NewTask, Peer};

async fn spawn_peer(bootstrap: Option<libp2p::Multiaddr>) -> Peer {
    let mut builder = Peer::builder()
        .slots(2)
        .report_interval(Duration::from_millis(100))
        .handler("nap", |ctx, input: Vec<u8>| async move {
            let ms: u64 = String::from_utf8_lossy(&input)
                .parse()
                .map_err(|e| format!("{e}"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ctx.epoch.to_string().into_bytes())
        });
    if let Some(addr) = bootstrap {
        builder = builder.bootstrap(addr);
    }
    builder.spawn().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_embedded_peers_share_handler_work() {
    let first = spawn_peer(None).await;
    let boot = first.listen_addrs()[0].clone();
    let second = spawn_peer(Some(boot.clone())).await;
    let third = spawn_peer(Some(boot)).await;
    let peers = [&first, &second, &third];

    for peer in peers {
        let swarm = peer.wait_for_peers(3, Duration::from_secs(20)).await;
        assert!(swarm.unwrap().peers.len() >= 2, "{}", peer.peer_id());
    }
    // A swarm of four is not there: the wait says how many it knows.
    let error = first
        .wait_for_peers(4, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            taskswarm::ClientError::TooFewPeers {
                wanted: 4,
                known: 3,
                ..
            }
        ),
        "{error}"
    );

    let client = first.client();
    let tasks = (0..30).map(|_| NewTask::handler("nap", "50")).collect();
    let ids = client.submit(tasks).await.unwrap();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let view = tokio::time::timeout(Duration::from_secs(30), client.wait(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, TaskState::Completed, "{view:?}");
        // The handler saw the lease epoch the record holds.
        assert_eq!(view.output, Some(view.lease_epoch.to_string()));
        *ran.entry(view.executed_by.unwrap()).or_default() += 1;
    }
    for peer in peers {
        assert!(
            ran.contains_key(&peer.peer_id().to_string()),
            "{} ran nothing: {ran:?}",
            peer.peer_id()
        );
    }

    // No peer has this handler: the task is unschedulable, unplaced, and says why.
    let id = client
        .submit_one(NewTask::handler("no-such-handler", ""))
        .await
        .unwrap();
    let view = client.task(id).await.unwrap().unwrap();
    assert_eq!((view.state, view.holder), (TaskState::Unschedulable, None));
    assert_eq!(
        view.reason.as_deref(),
        Some("needs handler no-such-handler; no live peer has it")
    );

    for peer in [first, second, third] {
        peer.shutdown().await;
    }
}
