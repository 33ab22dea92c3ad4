//! Key files and the mapping between taskswarm peer keys and libp2p peer ids.
//!
//! A peer's identity is one ed25519 key: the protocol signs with it and libp2p authenticates
//! connections with it, so a [`PeerKey`] and a [`PeerId`] name the same peer one-to-one. The key
//! lives in a file holding the 32-byte secret seed as hex, readable only by its owner.

use std::io;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity;
use taskswarm_protocol::{Keypair, PeerKey};

/// Why a key could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("key file {0} does not hold a 32-byte ed25519 secret as 64 hex digits")]
    Malformed(PathBuf),
}

/// Loads the key in `path`, or creates one there (mode 0600) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut seed)
                .map_err(|_| KeyError::Malformed(path.to_path_buf()))?;
            Ok(Keypair::from_secret(seed))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate(&mut rand::rng());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io_err)?;
            }
            write_private(path, &hex::encode(key.secret_bytes())).map_err(io_err)?;
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The libp2p key pair for a taskswarm key pair (the same ed25519 key).
pub fn libp2p_keypair(key: &Keypair) -> identity::Keypair {
    // A 32-byte seed is always a valid ed25519 secret.
    #[allow(clippy::expect_used)]
    identity::Keypair::ed25519_from_bytes(key.secret_bytes()).expect("32-byte ed25519 secret")
}

/// The libp2p peer id of a taskswarm peer key; `None` if the bytes are not a valid ed25519 key.
pub fn peer_id(key: &PeerKey) -> Option<PeerId> {
    let public = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(identity::PublicKey::from(public).to_peer_id())
}

/// The taskswarm peer key behind a libp2p peer id, if it is an ed25519 id (ids of other key
/// types are not taskswarm peers).
pub fn peer_key(id: &PeerId) -> Option<PeerKey> {
    let multihash = id.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed = public.try_into_ed25519().ok()?;
    Some(PeerKey::from_bytes(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys_and_peer_ids_map_one_to_one() {
        let key = Keypair::from_secret([4; 32]);
        let id = peer_id(&key.public()).unwrap();
        assert_eq!(id, libp2p_keypair(&key).public().to_peer_id());
        assert_eq!(peer_key(&id), Some(key.public()));
    }

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public(), b.public());
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyError::Malformed(_))));
    }
}
