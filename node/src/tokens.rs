//! API tokens: who may use a peer's HTTP API, and for what.
//!
//! A client presents a bearer token (`Authorization: Bearer tsk_…`). Each token has a name (who
//! holds it: it is recorded as the submitter of the tasks it submits) and roles:
//!
//! | role | may |
//! |---|---|
//! | `read` | see tasks, the cluster and status, wait for results |
//! | `submit` | submit tasks and jobs (and read) |
//! | `cancel` | cancel tasks (and read) |
//! | `admin` | everything, including operations on the peer itself |
//!
//! The node keeps only a SHA-256 digest of each token, in a TOML file (`DATA_DIR/tokens.toml` by
//! default) that `taskswarm token add` appends to; the token itself is printed once and never
//! stored. Tokens are 32 random bytes, so a plain digest is as strong as a slow hash would be.
//! Owns the file and the check; the API decides which role each request needs.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The prefix of every token, so that one pasted in the wrong place is recognisable.
const PREFIX: &str = "tsk_";

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// See tasks, the cluster and status; wait for results.
    Read,
    /// Submit tasks and jobs.
    Submit,
    /// Cancel tasks.
    Cancel,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, from least to most.
    pub const ALL: [Role; 4] = [Role::Read, Role::Submit, Role::Cancel, Role::Admin];

    /// Its name in files, flags and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Cancel => "cancel",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected read, submit, cancel or admin"))
    }
}

/// Why the token file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a token file.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    /// A token with this name exists already.
    #[error("a token named {0:?} exists already; remove it first (`taskswarm token remove`)")]
    Exists(String),
    /// No token has this name.
    #[error("no token is named {0:?}")]
    Unknown(String),
    /// A name is empty or has characters other than letters, digits, `-`, `_`, `.` and `@`.
    #[error("a token name is 1 to 64 letters, digits, '-', '_', '.' or '@', not {0:?}")]
    BadName(String),
}

/// One token as the node keeps it: its holder's name, its roles and the digest of the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Who holds it; recorded as the client of what it submits or cancels.
    pub name: String,
    /// What it allows.
    pub roles: BTreeSet<Role>,
    /// SHA-256 of the token, as 64 hex digits.
    pub sha256: String,
}

impl Entry {
    /// Whether this token allows what `needed` allows.
    pub fn allows(&self, needed: Role) -> bool {
        self.roles.contains(&Role::Admin)
            || self.roles.contains(&needed)
            || (needed == Role::Read && !self.roles.is_empty())
    }

    /// Its roles, for people.
    pub fn roles_text(&self) -> String {
        let roles: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        roles.join(",")
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default, rename = "token")]
    tokens: Vec<Entry>,
}

/// The tokens a peer accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads a token file.
    pub fn read(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| TokenError::Malformed {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for entry in &file.tokens {
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(&entry.sha256, &mut bytes).is_err() {
                return Err(TokenError::Malformed {
                    path: path.to_path_buf(),
                    message: format!("token {:?}: sha256 is not 64 hex digits", entry.name),
                });
            }
        }
        Ok(Self {
            entries: file.tokens,
        })
    }

    /// Whether there are none (an API with no tokens is open to anyone who reaches it).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tokens, without their secrets.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry of a presented token, if it is one of these. Compares digests in constant time.
    pub fn check(&self, presented: &str) -> Option<&Entry> {
        let want = digest(presented);
        let mut found = None;
        for entry in &self.entries {
            let mut have = [0u8; 32];
            if hex::decode_to_slice(&entry.sha256, &mut have).is_err() {
                continue;
            }
            let diff = have
                .iter()
                .zip(want.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b));
            if diff == 0 {
                found = Some(entry);
            }
        }
        found
    }

    /// Adds a token named `name` with `roles` to the file at `path` (created, readable only by its
    /// owner, if missing) and returns the token: the only time it is ever shown.
    pub fn add(path: &Path, name: &str, roles: BTreeSet<Role>) -> Result<String, TokenError> {
        check_name(name)?;
        let mut file = read_or_empty(path)?;
        if file.tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let token = format!("{PREFIX}{}", hex::encode(secret));
        file.tokens.push(Entry {
            name: name.to_string(),
            roles,
            sha256: hex::encode(digest(&token)),
        });
        write(path, &file)?;
        Ok(token)
    }

    /// Removes the token named `name` from the file at `path`.
    pub fn remove(path: &Path, name: &str) -> Result<(), TokenError> {
        let mut file = read_or_empty(path)?;
        let before = file.tokens.len();
        file.tokens.retain(|t| t.name != name);
        if file.tokens.len() == before {
            return Err(TokenError::Unknown(name.to_string()));
        }
        write(path, &file)
    }
}

fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName(name.to_string()))
    }
}

fn read_or_empty(path: &Path) -> Result<File, TokenError> {
    if !path.exists() {
        return Ok(File::default());
    }
    let tokens = Tokens::read(path)?;
    Ok(File {
        tokens: tokens.entries,
    })
}

fn write(path: &Path, file: &File) -> Result<(), TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(file).map_err(|e| TokenError::Malformed {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    out.write_all(
        b"# API tokens of a taskswarm peer (digests only; see `taskswarm token --help`)\n",
    )
    .map_err(io)?;
    out.write_all(text.as_bytes()).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_shown_once_kept_as_a_digest_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let token = Tokens::add(&path, "ci", BTreeSet::from([Role::Submit])).unwrap();
        assert!(token.starts_with(PREFIX));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token[PREFIX.len()..]), "{text}");
        let tokens = Tokens::read(&path).unwrap();
        let entry = tokens.check(&token).unwrap();
        assert_eq!(entry.name, "ci");
        assert!(entry.allows(Role::Submit) && entry.allows(Role::Read));
        assert!(!entry.allows(Role::Cancel) && !entry.allows(Role::Admin));
        assert!(tokens.check("tsk_0000").is_none());
        assert!(matches!(
            Tokens::add(&path, "ci", BTreeSet::from([Role::Read])),
            Err(TokenError::Exists(_))
        ));
        Tokens::remove(&path, "ci").unwrap();
        assert!(Tokens::read(&path).unwrap().check(&token).is_none());
    }

    #[test]
    fn admin_allows_everything_and_names_are_checked() {
        let entry = Entry {
            name: "root".into(),
            roles: BTreeSet::from([Role::Admin]),
            sha256: String::new(),
        };
        assert!(Role::ALL.iter().all(|r| entry.allows(*r)));
        assert!(matches!(check_name("a b"), Err(TokenError::BadName(_))));
        assert_eq!("cancel".parse::<Role>(), Ok(Role::Cancel));
        assert!("root".parse::<Role>().is_err());
    }
}
