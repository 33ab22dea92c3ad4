//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; the test installs them with apt when it runs as root and they are missing,
//! and skips, saying why, only where it cannot). On a 4-peer swarm it loads the page from one
//! peer, sees every peer, submits work through the API and watches the counts change, opens a
//! task's page, saves a screenshot, then stops the serving peer: the page says so and leads to
//! another peer's dashboard, which carries on.
//!
//! `DASHBOARD_SCREENSHOT=PATH` also saves the screenshot of the dashboard there (the one in
//! docs/ is made so).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use taskswarm::TaskState;
use taskswarm_testnet::{Cluster, Options, taskswarm_binary};

/// The browser and its driver, as Debian installs them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Makes sure Chromium and its driver are here: installs them with apt if they are missing and
/// this runs as root. `Err` says why the test cannot run.
fn browser() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err(format!(
            "{CHROMIUM} or {CHROMEDRIVER} is missing and this is not root: install Debian's \
             `chromium` and `chromium-driver` packages to run it"
        ));
    }
    println!("installing chromium and chromium-driver with apt-get");
    let install = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("apt-get: {e}"))
    };
    install(&["update", "-q"])?;
    let status = install(&["install", "-y", "-q", "chromium", "chromium-driver"])?;
    if status.success() && Path::new(CHROMEDRIVER).exists() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install chromium chromium-driver failed: {status}"
        ))
    }
}

/// A process this test started, killed (by its own pid) when dropped, also on failure.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver on a free loopback port; returns it and its URL once it answers.
async fn chromedriver() -> (Process, String) {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Process(child);
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/status")).await
            && r.status().is_success()
        {
            return (driver, url);
        }
        assert!(Instant::now() < deadline, "chromedriver never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A headless Chromium session with a profile of its own.
async fn session(driver: &str, profile: &Path) -> Client {
    let args = [
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,900".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(driver)
        .await
        .unwrap()
}

/// The text of the element `css`, or "" if there is none (yet).
async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until `ready` holds of the page, reading it every 200 ms, for at most `limit`.
async fn until<F, Fut>(browser: &Client, what: &str, limit: Duration, mut ready: F)
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !ready(browser.clone()).await {
        if Instant::now() >= deadline {
            let source = browser.source().await.unwrap_or_default();
            let tail: String = source
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("the page never showed {what}; it ends:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Opens the dashboard of the peer at `api` with `token` (kept by the page per origin).
async fn open(browser: &Client, api: &str, token: Option<&str>) {
    browser.goto(&format!("{api}/")).await.unwrap();
    if let Some(token) = token {
        browser
            .execute(
                "localStorage.setItem('taskswarm.token', arguments[0]);",
                vec![json!(token)],
            )
            .await
            .unwrap();
        browser.refresh().await.unwrap();
    }
}

/// The peer ids of the rows of the peers' table.
async fn peer_rows(browser: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for row in browser
        .find_all(Locator::Css("#peers-table [data-peer-id]"))
        .await
        .unwrap_or_default()
    {
        if let Ok(Some(id)) = row.attr("data-peer-id").await {
            ids.push(id);
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

fn count(text: &str) -> u64 {
    text.trim().trim_end_matches('+').parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_swarm_live_and_survives_its_peer() {
    if let Err(why) = browser() {
        println!("SKIPPED: the dashboard's browser test cannot run here: {why}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("dashboard")
        .tempdir()
        .unwrap();
    let binary = taskswarm_binary("debug").unwrap();
    let mut cluster = Cluster::start(Options::local(4, binary, dir.path().to_path_buf()))
        .await
        .unwrap();
    let token = cluster.token().map(str::to_string);
    let (_driver, driver_url) = chromedriver().await;
    let browser = session(&driver_url, &dir.path().join("chromium")).await;

    // The page of peer 1 shows every peer.
    open(&browser, &cluster.peers[0].api, token.as_deref()).await;
    let mut all: Vec<String> = cluster.peers.iter().map(|p| p.peer_id.clone()).collect();
    all.sort();
    let wanted = all.clone();
    until(&browser, "every peer", Duration::from_secs(30), |b| {
        let wanted = wanted.clone();
        async move { peer_rows(&b).await == wanted && text(&b, "#swarm-peers").await == "4" }
    })
    .await;

    // Work submitted through the API shows in the counts as it ends.
    let before = count(&text(&browser, "#count-completed").await);
    let specs: Vec<_> = (0..24)
        .map(|n| json!({ "program": "sh", "args": ["-c", format!("sleep 0.{}", n % 5)], "name": format!("demo-{n}") }))
        .collect();
    let ids = cluster.submit(1, &specs).await.unwrap();
    let failing = json!({ "program": "sh", "args": ["-c", "echo no >&2; exit 3"], "retries": 1 });
    let failed = cluster.submit(2, &[failing]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = cluster.wait_all(1, &ids, deadline).await.unwrap();
    assert!(ended.iter().all(|t| t.state == TaskState::Completed));
    cluster.wait_all(2, &failed, deadline).await.unwrap();
    until(
        &browser,
        "the completed count grow by 24",
        Duration::from_secs(30),
        |b| async move {
            count(&text(&b, "#count-completed").await) >= before + 24
                && count(&text(&b, "#count-failed").await) >= 1
        },
    )
    .await;
    println!(
        "completed {} → {}, failed {}",
        before,
        text(&browser, "#count-completed").await,
        text(&browser, "#count-failed").await
    );
    let shot = browser.screenshot().await.unwrap();
    assert!(shot.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&saved, &shot).unwrap();
    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        std::fs::write(&path, &shot).unwrap();
        println!("screenshot saved as {path}");
    }
    println!("screenshot: {}", saved.display());

    // A task's page: its attempts, history and proof.
    let id = &failed[0];
    let row = format!("#tasks-table [data-task-id=\"{id}\"] a");
    until(
        &browser,
        "the failed task's row",
        Duration::from_secs(20),
        |b| {
            let row = row.clone();
            async move { b.find(Locator::Css(&row)).await.is_ok() }
        },
    )
    .await;
    browser
        .find(Locator::Css(&row))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(&browser, "the task's page", Duration::from_secs(20), |b| {
        let id = id.clone();
        async move {
            let page = text(&b, "#task-page").await;
            page.contains(&id) && page.contains("failure") && page.contains("no")
        }
    })
    .await;

    // The serving peer stops: the page says so and leads to another peer's dashboard.
    browser
        .goto(&format!("{}/#/", cluster.peers[0].api))
        .await
        .unwrap();
    until(&browser, "every peer again", Duration::from_secs(30), |b| {
        let wanted = wanted.clone();
        async move { peer_rows(&b).await == wanted }
    })
    .await;
    cluster.stop_peer(0).unwrap();
    until(
        &browser,
        "that its peer is down",
        Duration::from_secs(30),
        |b| async move {
            match b.find(Locator::Css("#peer-down")).await {
                Ok(banner) => {
                    banner.is_displayed().await.unwrap_or(false)
                        && banner
                            .text()
                            .await
                            .unwrap_or_default()
                            .contains("not answering")
                }
                Err(_) => false,
            }
        },
    )
    .await;
    let other = browser
        .find(Locator::Css("#peer-down a[href^='http']"))
        .await
        .expect("the banner offers another peer's dashboard");
    let href = other.attr("href").await.unwrap().unwrap();
    println!("the page offers {href}");
    other.click().await.unwrap();
    let alive: Vec<String> = all[..]
        .iter()
        .filter(|p| **p != cluster.peers[0].peer_id)
        .cloned()
        .collect();
    // The other peer's origin keeps its own token.
    let origin = href
        .trim_end_matches('/')
        .split("/#")
        .next()
        .unwrap()
        .to_string();
    open(&browser, &origin, token.as_deref()).await;
    until(
        &browser,
        "the three live peers",
        Duration::from_secs(30),
        |b| {
            let alive = alive.clone();
            async move { peer_rows(&b).await == alive }
        },
    )
    .await;
    browser.close().await.unwrap();
}

/// Saves a screenshot of a running swarm's dashboard (how the one in docs/ is made, after the
/// README's `testnet/run.sh`): `DASHBOARD_URL=http://127.0.0.1:PORT DASHBOARD_TOKEN_FILE=FILE
/// DASHBOARD_SCREENSHOT=docs/dashboard.png cargo test -p taskswarm-tests --test dashboard_browser
/// -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running swarm: DASHBOARD_URL, DASHBOARD_TOKEN_FILE, DASHBOARD_SCREENSHOT"]
async fn screenshot_of_a_running_swarm() {
    browser().unwrap();
    let url = std::env::var("DASHBOARD_URL").expect("DASHBOARD_URL");
    let path = std::env::var("DASHBOARD_SCREENSHOT").expect("DASHBOARD_SCREENSHOT");
    let token = std::env::var("DASHBOARD_TOKEN_FILE")
        .ok()
        .map(|f| std::fs::read_to_string(f).unwrap().trim().to_string());
    let dir = tempfile::tempdir().unwrap();
    let (_driver, driver_url) = chromedriver().await;
    let browser = session(&driver_url, &dir.path().join("chromium")).await;
    open(&browser, url.trim_end_matches('/'), token.as_deref()).await;
    until(
        &browser,
        "the peers and the tasks",
        Duration::from_secs(30),
        |b| async move {
            !peer_rows(&b).await.is_empty() && count(&text(&b, "#count-completed").await) > 0
        },
    )
    .await;
    // A few polls, so the charts have the page's own samples too.
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::write(&path, browser.screenshot().await.unwrap()).unwrap();
    println!("saved {path}");
    browser.close().await.unwrap();
}
