//! Embeds two taskswarm peers in one tokio program.
//!
//! The "worker" peer registers a handler; the "front" peer registers none, so every task submitted
//! through it is placed on (or stolen by) the worker. `.run()` is the embedding form of Celery's
//! `.delay(...).get()`: submit, then wait for the result.
//!
//! Run it with `cargo run -p taskswarm --example embed`.

#![allow(clippy::print_stdout)]

use std::time::Duration;
use taskswarm::TaskState;

use taskswarm::{NewTask, Peer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let worker = Peer::builder()
        .slots(2)
        .handler("word-count", |ctx, input: Vec<u8>| async move {
            let text = String::from_utf8(input).map_err(|e| e.to_string())?;
            let words = text.split_whitespace().count();
            Ok(format!(
                "{words} words (lease epoch {})",
                taskswarm::view::show_epoch(ctx.epoch)
            )
            .into_bytes())
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

    let client = front.client();
    let result = client
        .run(NewTask::handler("word-count", "no broker and no head node"))
        .await?;
    println!(
        "{} on {}: {}",
        result.state,
        result.executed_by.as_deref().unwrap_or("?"),
        result.output.as_deref().unwrap_or("")
    );
    anyhow::ensure!(
        result.state == TaskState::Completed,
        "the task did not complete: {result:?}"
    );
    anyhow::ensure!(result.executed_by == Some(worker.peer_id().to_string()));

    front.shutdown().await;
    worker.shutdown().await;
    Ok(())
}
