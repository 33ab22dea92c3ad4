//! Embeds two taskswarm peers in one tokio program, with typed handlers and results.
//!
//! The "worker" peer registers a handler; the "front" peer registers none, so every task submitted
//! through it is placed on (or stolen by) the worker. `peer.submit(task).await?.result().await?`
//! is the embedding form of Celery's `.delay(...).get()`: submit, then wait for the result, read
//! as the type you ask for (serde JSON on both sides).
//!
//! Run it with `cargo run -p taskswarm --example embed`.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskswarm::{NewTask, Peer, TaskError};

/// What the handler takes.
#[derive(Serialize, Deserialize)]
struct Text {
    text: String,
}

/// What it returns.
#[derive(Debug, Serialize, Deserialize)]
struct Counted {
    words: usize,
    /// The lease epoch it ran under, as people read it.
    epoch: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let worker = Peer::builder()
        .slots(2)
        .handler_typed("word-count", |ctx, input: Text| async move {
            if input.text.is_empty() {
                return Err("nothing to count".into());
            }
            Ok(Counted {
                words: input.text.split_whitespace().count(),
                epoch: taskswarm::view::show_epoch(ctx.epoch),
            })
        })
        .spawn()
        .await?;
    let front = Peer::builder()
        .slots(1)
        .bootstrap(worker.listen_addrs()[0].clone())
        .spawn()
        .await?;
    println!(
        "worker {} and front {} started",
        worker.peer_id(),
        front.peer_id()
    );

    // Wait until the front peer knows a swarm of two: it has heard the worker's load report.
    front.wait_for_peers(2, Duration::from_secs(10)).await?;

    let input = Text {
        text: "no broker and no head node".into(),
    };
    let task = front.submit(NewTask::typed("word-count", &input)?).await?;
    let counted: Counted = task.result().await?;
    println!("task {}: {counted:?}", task.id());
    anyhow::ensure!(counted.words == 6, "counted {counted:?}");
    let view = task.wait().await?;
    anyhow::ensure!(view.executed_by == Some(worker.peer_id().to_string()));

    // A handler's error ends the task failed, and the result says why.
    let empty = Text {
        text: String::new(),
    };
    let once = taskswarm::protocol::RetryPolicy {
        max_attempts: 1,
        ..Default::default()
    };
    let failing = front
        .submit(NewTask::typed("word-count", &empty)?.with_retry(once))
        .await?;
    match failing.result::<Counted>().await {
        Err(TaskError::Ended { state, detail, .. }) => println!("an empty text: {state}: {detail}"),
        other => anyhow::bail!("an empty text was counted: {other:?}"),
    }

    front.shutdown().await;
    worker.shutdown().await;
    Ok(())
}
