//! A peer's settings, and where they come from: one TOML file (`taskswarm node --config FILE`, or
//! `TASKSWARM_CONFIG`), `TASKSWARM_<KEY>` environment variables over it, and command-line flags
//! over both. Every key has the same name in all three (`lease_ttl`, `TASKSWARM_LEASE_TTL`,
//! `--lease-ttl`), but for `api`, which has no variable (`TASKSWARM_API` is the address clients
//! use).
//!
//! Owns the settings' names, defaults and meaning ([`EXAMPLE`], which `taskswarm config example`
//! prints, is the reference), the layering, and the checks between settings. It never starts
//! anything and never reads a file a setting names (keys, tokens): the peer does that.
//!
//! A key it does not know and a value it cannot read are errors that name the key and where it
//! came from: the file and line, the variable, or the flag.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use taskswarm_protocol::Label;
use taskswarm_protocol::placement::Policy;
use taskswarm_protocol::resources::{parse_bytes, parse_cpus};

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid: a key it does not know, or a value it cannot read.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column (and the key).
        message: String,
    },
    /// An environment variable or a flag has a value that cannot be read.
    #[error("{0}")]
    Layer(Box<figment::Error>),
    /// Settings that are each valid but do not go together, or a value out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// How the peer writes its log (to standard error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every setting of a peer run by `taskswarm node`. [`EXAMPLE`] says what each means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)] // EXAMPLE documents every key, and a test holds the two together
pub struct NodeConfig {
    pub data_dir: PathBuf,
    #[serde(with = "texts")]
    pub listen: Vec<Multiaddr>,
    pub api: SocketAddr,
    #[serde(with = "texts")]
    pub bootstrap: Vec<Multiaddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    pub allow_exec: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    pub replicas: usize,
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub repair_after: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    #[serde(with = "humantime_serde")]
    pub stop_deadline: Duration,
    #[serde(with = "text")]
    pub placement: Policy,
    /// Thousandths of a core.
    #[serde(with = "cpus", skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(with = "bytes", skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(with = "bytes", skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    #[serde(with = "texts")]
    pub labels: Vec<Label>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_key: Option<PathBuf>,
    #[serde(with = "texts")]
    pub allow_peer: Vec<PeerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_peers: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: "taskswarm-data".into(),
            listen: vec![loopback()],
            api: SocketAddr::from(([127, 0, 0, 1], 7070)),
            bootstrap: Vec::new(),
            slots: None,
            allow_exec: false,
            key: None,
            replicas: 3,
            heartbeat: Duration::from_millis(200),
            lease_ttl: Duration::from_millis(1500),
            repair_after: Duration::from_secs(5 * 60),
            retention: crate::peer::DEFAULT_RETENTION,
            stop_deadline: Duration::from_secs(10),
            placement: Policy::PowerOfTwo,
            cpus: None,
            memory: None,
            disk: None,
            labels: Vec::new(),
            swarm_key: None,
            allow_peer: Vec::new(),
            allow_peers: None,
            tokens: None,
            log_format: LogFormat::Text,
            log: "info,libp2p=warn".into(),
        }
    }
}

fn loopback() -> Multiaddr {
    let mut addr = Multiaddr::empty();
    addr.push(libp2p::multiaddr::Protocol::Ip4([127, 0, 0, 1].into()));
    addr.push(libp2p::multiaddr::Protocol::Tcp(0));
    addr
}

/// The keys that `TASKSWARM_<KEY>` variables set: every key but `api`.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "bootstrap",
    "slots",
    "allow_exec",
    "key",
    "replicas",
    "heartbeat",
    "lease_ttl",
    "repair_after",
    "retention",
    "stop_deadline",
    "placement",
    "cpus",
    "memory",
    "disk",
    "labels",
    "swarm_key",
    "allow_peer",
    "allow_peers",
    "tokens",
    "log_format",
    "log",
];

impl NodeConfig {
    /// The settings from the defaults, then `file` (if any), then the `TASKSWARM_<KEY>`
    /// variables, then `flags` (a serializable value holding only the flags given), each over the
    /// one before; checked.
    pub fn load(file: Option<&Path>, flags: &impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(path) = file {
            check_file(path)?;
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = Env::prefixed("TASKSWARM_").only(ENV_KEYS);
        let config: NodeConfig = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError::Layer(Box::new(e)))?;
        config.check()?;
        Ok(config)
    }

    /// The checks between settings, and the ranges serde does not know.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.replicas == 0 {
            return invalid("replicas", "must be at least 1");
        }
        if self.slots == Some(0) {
            return invalid("slots", "must be at least 1");
        }
        for (key, value) in [
            ("heartbeat", self.heartbeat),
            ("lease_ttl", self.lease_ttl),
            ("repair_after", self.repair_after),
            ("retention", self.retention),
        ] {
            if value.is_zero() {
                return invalid(key, "must be more than 0");
            }
        }
        if self.lease_ttl < self.heartbeat * 3 {
            return invalid(
                "lease_ttl",
                "must be at least three heartbeats, or live peers lose their leases",
            );
        }
        if self.repair_after < self.lease_ttl {
            return invalid(
                "repair_after",
                "must be at least the lease TTL: a peer is gone only once it is dead",
            );
        }
        for addr in &self.bootstrap {
            if !addr
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            {
                return invalid(
                    "bootstrap",
                    &format!("{addr}: the address must end in /p2p/<peer id>"),
                );
            }
        }
        if self.listen.is_empty() {
            return invalid("listen", "give at least one address");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return invalid(
                "log",
                &format!(
                    "{:?} is not a log filter such as info or info,libp2p=warn",
                    self.log
                ),
            );
        }
        Ok(())
    }

    /// The token file in use, if any: `tokens`, or `DATA_DIR/tokens.toml` if it exists.
    pub fn tokens_file(&self) -> Option<PathBuf> {
        let default = self.data_dir.join("tokens.toml");
        self.tokens
            .clone()
            .or_else(|| default.exists().then_some(default))
    }
}

/// The settings as `taskswarm node` flags. Each is a key of the config file (`--lease-ttl` is
/// `lease_ttl`); a flag given wins over the file and the environment. Serialized, it holds only
/// the flags given ([`NodeConfig::load`]'s top layer).
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct Flags {
    /// Where the peer keeps its key, its store and peer.json (peer id, addresses, API address)
    /// [default: taskswarm-data].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// A libp2p address to listen on; port 0 picks a free port. May be repeated [default:
    /// /ip4/127.0.0.1/tcp/0].
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(with = "texts", skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<Multiaddr>,
    /// The HTTP API address; port 0 picks a free port (see peer.json) [default: 127.0.0.1:7070].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<SocketAddr>,
    /// A peer to join, as /ip4/HOST/tcp/PORT/p2p/PEER_ID. May be repeated.
    #[arg(long, value_name = "MULTIADDR")]
    #[serde(with = "texts", skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<Multiaddr>,
    /// How many tasks to run at once [default: one per CPU core].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Run process tasks (without it the peer runs only handlers, and says so to other peers).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_exec: bool,
    /// The key file (32-byte ed25519 secret as hex), created if missing [default: DATA_DIR/key].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How many peers keep each task's record, this one included [default: 3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// How often this peer sends its load report (its heartbeat), such as 200ms [default: 200ms].
    #[arg(long, value_parser = crate::spec::parse_duration, value_name = "DURATION")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat: Option<Duration>,
    /// How long a silent peer keeps its leases before its tasks are re-claimed, such as 1500ms
    /// [default: 1500ms].
    #[arg(long, value_parser = crate::spec::parse_duration, value_name = "DURATION")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<Duration>,
    /// How long a home member must be gone (silent, or left) before the primaries of its tasks
    /// copy their records to another peer in its place, such as 5m [default: 5m]. A member back
    /// sooner (a restart) keeps its place; one back later hands its copies over.
    #[arg(long, value_parser = crate::spec::parse_duration, value_name = "DURATION")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub repair_after: Option<Duration>,
    /// How long the records of ended tasks (results, histories, proofs) are kept on disk, such as
    /// 7d or 12h [default: 7d]. Keep it longer than any partition lasts: a member cut off for
    /// longer may bring an ended task back.
    #[arg(long, value_parser = crate::spec::parse_duration, value_name = "DURATION")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub retention: Option<Duration>,
    /// On SIGTERM or Ctrl-C the peer drains (as `taskswarm drain`): how long the tasks it runs
    /// may take to finish before it leaves anyway, such as 30s; 0s leaves at once [default: 10s].
    /// A second Ctrl-C leaves at once.
    #[arg(long, value_parser = crate::spec::parse_duration_or_zero, value_name = "DURATION")]
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_deadline: Option<Duration>,
    /// Where this peer places the tasks it leads: random, round-robin, weighted (random by free
    /// capacity), least-loaded, or p2c (the less loaded of two at random) [default: p2c].
    #[arg(long)]
    #[serde(with = "text_option", skip_serializing_if = "Option::is_none")]
    pub placement: Option<Policy>,
    /// CPU cores this peer offers to tasks that ask for CPU, such as 8 or 0.5 [default: the
    /// machine's cores].
    #[arg(long, value_parser = cpus_text)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Memory it offers, such as 16G [default: the machine's memory].
    #[arg(long, value_parser = bytes_text)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Disk it offers, such as 100G [default: the free space under --data-dir].
    #[arg(long, value_parser = bytes_text)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// A label tasks can require (`submit --label`), such as zone=a or gpu=1. May be repeated.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    #[serde(
        rename = "labels",
        with = "texts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub labels: Vec<Label>,
    /// The swarm key file (`taskswarm swarm init`): only peers with the same key can connect.
    /// Without one the swarm is open to any machine that reaches this peer, and the peer says so.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm_key: Option<PathBuf>,
    /// Admit only this peer id (with the other --allow-peer ids and the --allow-peers file).
    /// May be repeated.
    #[arg(long = "allow-peer", value_name = "PEER_ID")]
    #[serde(with = "texts", skip_serializing_if = "Vec::is_empty")]
    pub allow_peer: Vec<PeerId>,
    /// A file of peer ids to admit, one per line (`#` starts a comment); read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_peers: Option<PathBuf>,
    /// The API token file (`taskswarm token add`); read again on SIGHUP [default:
    /// DATA_DIR/tokens.toml if it exists]. Without tokens the API is open to whoever reaches it,
    /// and is served only on a loopback address.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<PathBuf>,
    /// The log's form on standard error: text (for people) or json (one object per line, for log
    /// collectors) [default: text].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// What is logged, as a tracing filter such as debug or info,taskswarm=debug (RUST_LOG, when
    /// set, wins) [default: info,libp2p=warn].
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// A flag's cores, checked and kept as written.
fn cpus_text(text: &str) -> Result<String, String> {
    parse_cpus(text).map(|_| text.to_string())
}

/// A flag's size, checked and kept as written.
fn bytes_text(text: &str) -> Result<String, String> {
    parse_bytes(text).map(|_| text.to_string())
}

/// Reads `path` on its own, so that an unknown key or a bad value is reported with its line.
fn check_file(path: &Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str::<NodeConfig>(&text)
        .map(drop)
        .map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
}

/// A commented config file with every key at its default: what `taskswarm config example`
/// prints, and the reference for each key.
pub const EXAMPLE: &str = r#"# taskswarm peer settings: `taskswarm node --config FILE` (or TASKSWARM_CONFIG=FILE).
# Every key can also be set by a TASKSWARM_<KEY> environment variable (TASKSWARM_LEASE_TTL=2s;
# lists as [a, b]) and by a flag (--lease-ttl 2s); a flag wins over a variable, a variable over
# this file. Every key is shown at its default; keys without a default are commented out.
# Durations: 500ms, 30s, 5m, 12h, 7d. Sizes: bytes, or 512M, 16G (powers of 1024).

# Where the peer keeps its key, its store and peer.json (peer id, addresses, API address).
data_dir = "taskswarm-data"

# The libp2p addresses to listen on; port 0 picks a free port.
listen = ["/ip4/127.0.0.1/tcp/0"]

# The HTTP API address; port 0 picks a free port (see peer.json). A non-loopback address needs
# `tokens`. (No environment variable: TASKSWARM_API is the address clients use.)
api = "127.0.0.1:7070"

# Peers to join, as /ip4/HOST/tcp/PORT/p2p/PEER_ID.
bootstrap = []

# How many tasks to run at once. Default: one per CPU core.
# slots = 8

# Run process tasks. Without it the peer runs only handlers, and says so to other peers.
allow_exec = false

# The key file (32-byte ed25519 secret as hex), created if missing. Default: DATA_DIR/key.
# key = "/var/lib/taskswarm/key"

# How many peers keep each task's record, this one included.
replicas = 3

# How often this peer sends its load report (its heartbeat).
heartbeat = "200ms"

# How long a silent peer keeps its leases before its tasks are re-claimed; at least three
# heartbeats.
lease_ttl = "1500ms"

# How long a home member must be gone (silent, or left) before the primaries of its tasks copy
# their records to another peer in its place; at least lease_ttl. A member back sooner (a
# restart) keeps its place; one back later hands its copies over.
repair_after = "5m"

# How long the records of ended tasks (results, histories, proofs) are kept on disk. Keep it
# longer than any partition lasts: a member cut off for longer may bring an ended task back.
retention = "7days"

# On SIGTERM or Ctrl-C the peer drains (as `taskswarm drain`): how long the tasks it runs may take
# to finish before it leaves anyway; "0s" leaves at once.
stop_deadline = "10s"

# Where this peer places the tasks it leads: random, round-robin, weighted (random by free
# capacity), least-loaded, or p2c (the less loaded of two at random).
placement = "p2c"

# CPU cores this peer offers to tasks that ask for CPU, such as 8 or 0.5. Default: the machine's.
# cpus = 8

# Memory it offers, such as "16G". Default: the machine's memory.
# memory = "16G"

# Disk it offers, such as "100G". Default: the free space under data_dir.
# disk = "100G"

# Labels tasks can require (`submit --label`), as key=value.
labels = []

# The swarm key file (`taskswarm swarm init`): only peers with the same key can connect.
# Without one the swarm is open to any machine that reaches this peer, and the peer says so.
# swarm_key = "/etc/taskswarm/swarm.key"

# Admit only these peer ids (with those of allow_peers).
allow_peer = []

# A file of peer ids to admit, one per line (`#` starts a comment); read again on SIGHUP.
# allow_peers = "/etc/taskswarm/peers"

# The API token file (`taskswarm token add`); read again on SIGHUP. Default: DATA_DIR/tokens.toml
# if it exists. Without tokens the API is open to whoever reaches it, and is served only on a
# loopback address.
# tokens = "/etc/taskswarm/tokens.toml"

# The log's form on standard error: text (for people) or json (one object per line).
log_format = "text"

# What is logged, as a tracing filter (RUST_LOG, when set, wins).
log = "info,libp2p=warn"
"#;

/// A value written as text: read with `FromStr`, written with `Display`.
mod text {
    use super::*;

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &T,
        to: S,
    ) -> Result<S::Ok, S::Error> {
        to.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(from: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(from)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An optional value written as text (flags only write).
mod text_option {
    use super::*;

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &Option<T>,
        to: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => to.collect_str(v),
            None => to.serialize_none(),
        }
    }
}

/// A list of values written as text; one value alone reads as a list of one (handy in a variable).
mod texts {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub(super) fn serialize<T: Display, S: Serializer>(
        values: &[T],
        to: S,
    ) -> Result<S::Ok, S::Error> {
        to.collect_seq(values.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, T, D>(from: D) -> Result<Vec<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let texts = match OneOrMany::deserialize(from)? {
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(texts) => texts,
        };
        texts
            .iter()
            .map(|t| {
                t.parse()
                    .map_err(|e| serde::de::Error::custom(format!("{t}: {e}")))
            })
            .collect()
    }
}

/// A number or a text, as people write amounts (`8`, `0.5`, `"16G"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Whole(u64),
    Fraction(f64),
    Text(String),
}

impl Amount {
    fn text(self) -> String {
        match self {
            Amount::Whole(n) => n.to_string(),
            Amount::Fraction(x) => x.to_string(),
            Amount::Text(t) => t,
        }
    }
}

/// Cores, as thousandths: `8`, `0.5` or `"0.5"`.
mod cpus {
    use super::*;

    pub(super) fn serialize<S: Serializer>(milli: &Option<u32>, to: S) -> Result<S::Ok, S::Error> {
        match milli {
            Some(m) => to.serialize_str(&taskswarm_protocol::resources::format_cpus(*m)),
            None => to.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<u32>, D::Error> {
        let amount = Amount::deserialize(from)?;
        parse_cpus(&amount.text())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Bytes: a number, or `"512M"`, `"16G"`.
mod bytes {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &Option<u64>, to: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => to.serialize_u64(*b),
            None => to.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<u64>, D::Error> {
        let amount = Amount::deserialize(from)?;
        parse_bytes(&amount.text())
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Flags as the command line gives them: only those set are serialized.
    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        slots: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        heartbeat: Option<&'static str>,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn the_example_reads_back_as_the_defaults() {
        let parsed: NodeConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(parsed, NodeConfig::default());
    }

    /// The settings file docs/ gives for the systemd unit and the container reads as written.
    #[test]
    fn the_service_settings_in_the_docs_read() {
        let text = include_str!("../../docs/taskswarm.toml");
        let parsed: NodeConfig = toml::from_str(text).unwrap();
        parsed.check().unwrap();
        assert_eq!(parsed.data_dir, PathBuf::from("/var/lib/taskswarm"));
    }

    #[test]
    fn the_example_shows_every_key() {
        let every = NodeConfig {
            slots: Some(1),
            key: Some("k".into()),
            cpus: Some(1000),
            memory: Some(1),
            disk: Some(1),
            swarm_key: Some("s".into()),
            allow_peers: Some("p".into()),
            tokens: Some("t".into()),
            ..NodeConfig::default()
        };
        let table: toml::Table = toml::from_str(&toml::to_string(&every).unwrap()).unwrap();
        for key in table.keys() {
            let shown = EXAMPLE.lines().any(|l| {
                l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} = "))
            });
            assert!(shown, "the example does not show {key}");
        }
        assert_eq!(
            table.len(),
            ENV_KEYS.len() + 1,
            "every key but api has a variable"
        );
        for key in ENV_KEYS {
            assert!(table.contains_key(*key), "{key} is not a key");
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let file = write("replicas = 3\n\nlease_tl = \"2s\"\n");
        let error = NodeConfig::load(Some(file.path()), &Flags::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("lease_tl"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains(&file.path().display().to_string()), "{text}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_key_and_line() {
        let file = write("heartbeat = \"200ms\"\nplacement = \"fastest\"\n");
        let text = NodeConfig::load(Some(file.path()), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(text.contains("line 2"), "{text}");
        assert!(
            text.contains("placement") && text.contains("fastest"),
            "{text}"
        );
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let file = write("slots = 3\nheartbeat = \"100ms\"\nmemory = \"2G\"\ncpus = 0.5\n");
        let config = NodeConfig::load(Some(file.path()), &Flags::default()).unwrap();
        assert_eq!(config.slots, Some(3));
        assert_eq!(config.heartbeat, Duration::from_millis(100));
        assert_eq!(config.memory, Some(2 << 30));
        assert_eq!(config.cpus, Some(500));
        assert_eq!(config.replicas, 3, "a default");
        let flags = Flags {
            slots: Some(5),
            heartbeat: Some("300ms"),
        };
        let config = NodeConfig::load(Some(file.path()), &flags).unwrap();
        assert_eq!(config.slots, Some(5));
        assert_eq!(config.heartbeat, Duration::from_millis(300));
    }

    #[test]
    fn settings_that_do_not_go_together_are_refused_by_name() {
        let file = write("heartbeat = \"1s\"\nlease_ttl = \"2s\"\n");
        let error = NodeConfig::load(Some(file.path()), &Flags::default()).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Invalid {
                    key: "lease_ttl",
                    ..
                }
            ),
            "{error}"
        );
    }
}
