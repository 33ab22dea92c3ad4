//! Peers embedded in one process through the library: handlers, placement and stealing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

    let deadline = Instant::now() + Duration::from_secs(20);
    for peer in peers {
        while peer.client().cluster().await.unwrap().peers.len() < 2 {
            assert!(Instant::now() < deadline, "peers did not find each other");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let client = first.client();
    let tasks = (0..30).map(|_| NewTask::handler("nap", "50")).collect();
    let ids = client.submit(tasks).await.unwrap();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids {
        let view = tokio::time::timeout(Duration::from_secs(30), client.wait(id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(view.state, "completed", "{view:?}");
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
    assert_eq!((view.state.as_str(), view.holder), ("unschedulable", None));
    assert_eq!(
        view.reason.as_deref(),
        Some("needs handler no-such-handler; no live peer has it")
    );

    for peer in [first, second, third] {
        peer.shutdown().await;
    }
}
