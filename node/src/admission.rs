//! Who may connect to a peer: the swarm key and the allowlist.
//!
//! A **swarm key** is a 32-byte secret shared by every member of a swarm (libp2p's private-network
//! pre-shared key). With one, every connection runs the private-network handshake before anything
//! else, so a machine without the key cannot open a stream, learn a peer id or send a byte the
//! peer would parse. The key file has the format other libp2p implementations read:
//!
//! ```text
//! /key/swarm/psk/1.0.0/
//! /base16/
//! <64 hex digits>
//! ```
//!
//! An **allowlist** narrows membership further to peer ids named one by one (`--allow-peer`, or a
//! file with one peer id per line, `#` comments allowed, re-read on SIGHUP). With one, connections
//! to or from any other peer are closed right after the handshake, and load reports that other
//! members relay from such a peer are dropped.
//!
//! Owns the file formats and the rules; the swarm applies them ([`crate::network`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::PeerId;
use libp2p::pnet::PreSharedKey;

/// Why a swarm key or an allowlist could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The swarm key file is not in the expected format.
    #[error(
        "{path}: not a swarm key (expected /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits): {reason}"
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A line of an allowlist is not a peer id.
    #[error("{path}:{line}: not a peer id: {text:?}")]
    BadPeer {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// The text found.
        text: String,
    },
    /// `swarm init` would overwrite a key.
    #[error("{0} already exists; remove it first or pass --force (every member needs the new key)")]
    Exists(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AdmissionError + '_ {
    move |source| AdmissionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh swarm key from the operating system's random source.
pub fn generate_key() -> PreSharedKey {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    PreSharedKey::new(bytes)
}

/// Writes `key` to `path`, readable only by its owner. Refuses to overwrite unless `force`.
pub fn write_key(path: &Path, key: &PreSharedKey, force: bool) -> Result<(), AdmissionError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !force {
        return Err(AdmissionError::Exists(path.to_path_buf()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error(path))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(path))?;
    writeln!(file, "{key}").map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Reads a swarm key file.
pub fn read_key(path: &Path) -> Result<PreSharedKey, AdmissionError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    PreSharedKey::from_str(text.trim()).map_err(|e| AdmissionError::BadKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads an allowlist file: one peer id per line; blank lines and text after `#` are ignored.
pub fn read_allowlist(path: &Path) -> Result<BTreeSet<PeerId>, AdmissionError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    parse_allowlist(path, &text)
}

fn parse_allowlist(path: &Path, text: &str) -> Result<BTreeSet<PeerId>, AdmissionError> {
    let mut peers = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let peer = PeerId::from_str(entry).map_err(|_| AdmissionError::BadPeer {
            path: path.to_path_buf(),
            line: n + 1,
            text: entry.to_string(),
        })?;
        peers.insert(peer);
    }
    Ok(peers)
}

/// How this peer admits others, as shown by `status` and the API.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionView {
    /// Whether connections need the swarm key (`false`: any machine that reaches the peer's
    /// address can join the swarm).
    pub private: bool,
    /// The swarm key's fingerprint (safe to show: it does not reveal the key).
    pub key_fingerprint: Option<String>,
    /// How many peer ids the allowlist admits, if there is one.
    pub allowlist: Option<usize>,
    /// Whether the HTTP API asks for tokens (`false`: anyone who reaches it may do anything).
    pub api_tokens: bool,
}

impl AdmissionView {
    /// One line for people: what protects this peer, or a warning that nothing does.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.key_fingerprint {
            Some(fp) if self.private => parts.push(format!("private swarm (key {fp})")),
            _ => parts.push(
                "OPEN swarm: any machine that reaches this peer can join it and run tasks (start \
                 every peer with --swarm-key)"
                    .to_string(),
            ),
        }
        if let Some(n) = self.allowlist {
            parts.push(format!("allowlist of {n} peers"));
        }
        if self.api_tokens {
            parts.push("API needs tokens".to_string());
        } else {
            parts.push("API OPEN to anyone who reaches it".to_string());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_reads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        let key = generate_key();
        write_key(&path, &key, false).unwrap();
        let back = read_key(&path).unwrap();
        assert_eq!(
            back.fingerprint().to_string(),
            key.fingerprint().to_string()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            write_key(&path, &key, false),
            Err(AdmissionError::Exists(_))
        ));
        std::fs::write(&path, "hello").unwrap();
        assert!(matches!(
            read_key(&path),
            Err(AdmissionError::BadKey { .. })
        ));
    }

    #[test]
    fn an_allowlist_names_peers_one_per_line() {
        let a = PeerId::random();
        let b = PeerId::random();
        let text = format!("# members\n{a}\n\n{b}   # the second\n");
        let peers = parse_allowlist(Path::new("allow"), &text).unwrap();
        assert_eq!(peers, BTreeSet::from([a, b]));
        let err = parse_allowlist(Path::new("allow"), &format!("{a}\nnot-a-peer\n")).unwrap_err();
        assert_eq!(err.to_string(), "allow:2: not a peer id: \"not-a-peer\"");
    }
}
