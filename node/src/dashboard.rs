//! The dashboard every peer serves at `/`: one page, its script and its style sheet, embedded in
//! the binary (no CDN, nothing to build). The page reads the same HTTP API as any client
//! (`/v1/cluster`, `/v1/cluster/load`, `/v1/tasks`, a task and its proof) by polling it, with the
//! token the user gives it; serving the files needs no token, as they hold nothing of the swarm.
//!
//! The page stays on its own origin: when its peer stops answering, it says so and offers the
//! dashboards of the other peers it knew (their API addresses come in their signed load reports),
//! so no peer needs to answer cross-origin requests, and a web page elsewhere cannot use a peer's
//! API through the user's browser.
//!
//! Owns the files and their headers; never reads the swarm itself.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/style.css");

/// The paths the dashboard's files are served at (no token needed).
pub const PATHS: [&str; 3] = ["/", "/ui/app.js", "/ui/style.css"];

/// What the page may load and talk to: itself only.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                      script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn file(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The dashboard's routes.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}
