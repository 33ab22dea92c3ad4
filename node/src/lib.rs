//! # taskswarm
//!
//! A taskswarm peer: the runtime that drives the protocol core ([`taskswarm_protocol`]) with
//! libp2p and tokio, runs tasks, and serves an HTTP API. Every peer is the same program: it
//! accepts tasks, places them, runs them and steals work from busier peers. There is no broker.
//!
//! Embed a peer in any tokio program:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use taskswarm::{NewTask, Peer};
//!
//! let peer = Peer::builder()
//!     .slots(4)
//!     .handler_typed("double", |_ctx, n: u64| async move { Ok(n * 2) })
//!     .spawn()
//!     .await?;
//! let doubled: u64 = peer.submit(NewTask::typed("double", &21)?).await?.result().await?;
//! assert_eq!(doubled, 42);
//! peer.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`peer`]: [`Peer`] and its builder: configuration, start and shutdown.
//! - [`config`]: the settings of `taskswarm node`: the config file, the environment, the flags.
//! - `runtime`: the event loop that owns the swarm and the scheduler and carries out its actions.
//! - [`network`]: the libp2p transport and behaviours; [`codec`]: framing of direct messages.
//! - [`executor`]: runs process and handler tasks.
//! - [`client`]: the handle to a running peer; [`api`]: the HTTP API on top of it, and
//!   [`dashboard`], the page every peer serves at `/`;
//!   [`api_client`]: the same API from the client's side, typed.
//! - [`typed`]: typed handlers and results (serde JSON at the edges of a task's bytes).
//! - [`spec`]: task specs as people write them; [`view`]: what the API shows; [`proof`]: a
//!   task's sealed record, checked, and its chain.
//! - [`admission`]: who may connect: the swarm key and the allowlist.
//! - [`keys`]: key files and the peer key ↔ libp2p peer id mapping.
//! - [`tokens`]: API tokens and their roles.
//! - [`store`]: the embedded, crash-safe store of the scheduler's durable tables.

pub mod admission;
pub mod api;
pub mod api_client;
pub mod client;
pub mod codec;
pub mod config;
pub mod dashboard;
pub mod executor;
pub mod job;
pub mod keys;
pub mod machine;
pub mod metrics;
pub mod network;
pub mod peer;
pub mod proof;
mod runtime;
pub mod spec;
pub mod store;
pub mod tokens;
pub mod typed;
pub mod view;

pub use client::{Client, ClientError};
pub use executor::{Handler, HandlerContext};
pub use peer::{Peer, PeerBuilder, PeerError};
pub use spec::NewTask;
pub use taskswarm_protocol as protocol;
pub use taskswarm_protocol::TaskState;
pub use typed::{TaskError, TaskHandle};
pub use view::{ClusterView, PeerInfo, TaskView};
