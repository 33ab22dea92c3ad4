//! Typed handlers and results: a task carries bytes, and these read and write them as JSON with
//! serde at either end, so an embedding program works with its own types.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskswarm::{NewTask, Peer};
//!
//! let peer = Peer::builder()
//!     .handler_typed("double", |_ctx, n: u64| async move { Ok(n * 2) })
//!     .spawn()
//!     .await?;
//! let doubled: u64 = peer.submit(NewTask::typed("double", &21)?).await?.result().await?;
//! assert_eq!(doubled, 42);
//! # Ok(()) }
//! ```
//!
//! A handler's input that is not the JSON of its type fails the attempt with a message that says
//! so (and is not retried any differently from another failure); a result that is not the JSON of
//! the type asked for is a [`TaskError::Decode`]. [`TaskHandle::bytes`] gives the output as it
//! is, for tasks that return something other than JSON.
//!
//! Owns the JSON edges and the handle to a submitted task; never decides anything about the task.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use taskswarm_protocol::{TaskId, TaskState};

use crate::client::{Client, ClientError};
use crate::executor::{self, Handler, HandlerContext};
use crate::view::TaskView;

/// What a typed handler fails with: any error (`?` converts one), or a message
/// (`Err("no such user".into())`).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps an async function of a typed input as a [`Handler`]: the input bytes are read as the
/// JSON of `In`, and what it returns is written as the JSON of `Out`.
pub fn handler<In, Out, F, Fut>(f: F) -> Handler
where
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
    F: Fn(HandlerContext, In) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, HandlerError>> + Send + 'static,
{
    let f = std::sync::Arc::new(f);
    executor::handler(move |ctx, input: Vec<u8>| {
        let f = f.clone();
        async move {
            let input: In = serde_json::from_slice(&input).map_err(|e| {
                format!(
                    "the input is not the JSON of a {}: {e}",
                    std::any::type_name::<In>()
                )
            })?;
            let output = f(ctx, input).await.map_err(|e| e.to_string())?;
            serde_json::to_vec(&output)
                .map_err(|e| format!("the output cannot be written as JSON: {e}"))
        }
    })
}

/// Why a task gave no result.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The peer could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The task ended without completing.
    #[error("task {id} ended {state}: {detail}")]
    Ended {
        /// The task.
        id: TaskId,
        /// How it ended.
        state: TaskState,
        /// What its last attempt said (an error, or the tail of its standard error).
        detail: String,
        /// Its final view.
        view: Box<TaskView>,
    },
    /// The task completed, but its output is not the JSON of the type asked for.
    #[error("task {id} completed, but its output is not the JSON of a {wanted}: {message}")]
    Decode {
        /// The task.
        id: TaskId,
        /// The type asked for.
        wanted: &'static str,
        /// What serde said.
        message: String,
    },
}

/// A task submitted through a peer: wait for it, and read its result.
#[derive(Clone, Debug)]
pub struct TaskHandle {
    id: TaskId,
    client: Client,
}

impl TaskHandle {
    pub(crate) fn new(id: TaskId, client: Client) -> Self {
        Self { id, client }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Waits until the task has ended; returns its final view, however it ended.
    pub async fn wait(&self) -> Result<TaskView, ClientError> {
        self.client.wait(self.id).await
    }

    /// Waits until the task has ended; returns what it produced exactly (a handler's output, or a
    /// process's standard output) if it completed, and why not otherwise.
    pub async fn bytes(&self) -> Result<Vec<u8>, TaskError> {
        let view = self.wait().await?;
        if view.state != TaskState::Completed {
            let detail = view
                .error
                .clone()
                .or_else(|| view.attempts.last().map(|a| a.detail.clone()))
                .unwrap_or_default();
            return Err(TaskError::Ended {
                id: self.id,
                state: view.state,
                detail,
                view: Box::new(view),
            });
        }
        Ok(view.output_bytes.unwrap_or_default())
    }

    /// Waits until the task has ended; returns its output read as the JSON of `T` if it
    /// completed, and why not otherwise.
    pub async fn result<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| TaskError::Decode {
            id: self.id,
            wanted: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{NewTask, Peer};

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Pair {
        a: i64,
        b: i64,
    }

    #[tokio::test]
    async fn typed_handlers_take_and_give_types_and_bytes_come_back_exactly() {
        let peer = Peer::builder()
            .handler_typed("add", |_ctx, p: Pair| async move { Ok(p.a + p.b) })
            .handler("bytes", |_ctx, _input| async move {
                Ok(vec![0, 159, 146, 150, 255])
            })
            .spawn()
            .await
            .unwrap();
        let sum: i64 = peer
            .submit(NewTask::typed("add", &Pair { a: 40, b: 2 }).unwrap())
            .await
            .unwrap()
            .result()
            .await
            .unwrap();
        assert_eq!(sum, 42);

        // Input of another type fails the task, saying so; asking for another type than the
        // output's is a decode error.
        let once = taskswarm_protocol::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        };
        let wrong = NewTask::typed("add", &"forty-two")
            .unwrap()
            .with_retry(once);
        match peer.submit(wrong).await.unwrap().result::<i64>().await {
            Err(TaskError::Ended { state, detail, .. }) => {
                assert_eq!(state, TaskState::Failed);
                assert!(detail.contains("not the JSON of a"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let pair = NewTask::typed("add", &Pair { a: 1, b: 1 }).unwrap();
        let as_text = peer.submit(pair).await.unwrap().result::<String>().await;
        assert!(
            matches!(as_text, Err(TaskError::Decode { .. })),
            "{as_text:?}"
        );

        // Bytes that are not UTF-8 come back exactly, in the library and through JSON (base64).
        let handle = peer.submit(NewTask::handler("bytes", "")).await.unwrap();
        let exact = vec![0, 159, 146, 150, 255];
        assert_eq!(handle.bytes().await.unwrap(), exact);
        let view = handle.wait().await.unwrap();
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["output_base64"], "AJ+Slv8=");
        let back: TaskView = serde_json::from_value(json).unwrap();
        assert_eq!(back.output_bytes, Some(exact));
        peer.shutdown().await;
    }
}
