//! The libp2p side of a peer: transport, behaviours and their settings.
//!
//! TCP, then (with a swarm key) the private-network handshake, then noise and yamux; identify (so
//! peers learn each other's listen addresses); gossipsub for load reports, tuned for swarms of a
//! handful to a few hundred peers; request-response with [`crate::codec`] for every direct
//! message; an allowlist of peer ids when the operator keeps one ([`crate::admission`]); and
//! connection limits, so that no peer, and no crowd of them, can hold more than its share. Owns
//! only construction: the event loop in [`crate::runtime`] drives the swarm.

use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, Swarm, SwarmBuilder, Transport, allow_block_list, connection_limits, gossipsub,
    identify, noise, request_response, tcp, yamux,
};

use crate::codec::{Codec, PROTOCOL};

/// The gossipsub topic of load reports.
pub const LOAD_TOPIC: &str = "taskswarm/load/1";

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    #![allow(missing_docs)] // the derive generates an undocumented event enum
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::{allow_block_list, connection_limits, gossipsub, identify, request_response};

    use crate::codec::Codec;

    /// Every behaviour a peer runs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Refuses connections beyond the limits (per peer, in total, pending).
        pub limits: connection_limits::Behaviour,
        /// Admits only the listed peers, when the operator keeps an allowlist.
        pub allowlist: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
        /// Learns peers' listen addresses and agent versions.
        pub identify: identify::Behaviour,
        /// Carries load reports to every peer.
        pub gossipsub: gossipsub::Behaviour,
        /// Carries direct messages.
        pub messages: request_response::Behaviour<Codec>,
    }
}

/// Why the swarm could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport could not be set up.
    #[error("transport: {0}")]
    Transport(String),
    /// Gossipsub rejected its settings.
    #[error("gossipsub: {0}")]
    Gossipsub(String),
}

/// Who may connect, as the swarm enforces it.
#[derive(Clone, Default)]
pub struct Admission {
    /// The swarm key: without it, nobody can complete a connection.
    pub swarm_key: Option<PreSharedKey>,
    /// The peer ids admitted, if only some are.
    pub allowlist: Option<std::collections::BTreeSet<PeerId>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field(
                "swarm_key",
                &self.swarm_key.as_ref().map(|k| k.fingerprint().to_string()),
            )
            .field("allowlist", &self.allowlist.as_ref().map(|a| a.len()))
            .finish()
    }
}

/// At most this many connections to or from one peer (one each way, and one being replaced).
const MAX_PER_PEER: u32 = 3;
/// At most this many connections in all, each way.
const MAX_ESTABLISHED: u32 = 1024;
/// At most this many incoming connections still in their handshakes.
const MAX_PENDING_INCOMING: u32 = 128;

/// Builds a swarm for `key` with the behaviours above, subscribed to the load topic.
pub fn build(
    key: libp2p::identity::Keypair,
    admission: &Admission,
) -> Result<Swarm<Behaviour>, BuildError> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(200))
        .heartbeat_initial_delay(Duration::from_millis(50))
        .mesh_n(4)
        .mesh_n_low(2)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .flood_publish(true)
        .max_transmit_size(256 * 1024)
        .build()
        .map_err(|e| BuildError::Gossipsub(e.to_string()))?;
    let psk = admission.swarm_key;
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
            let tcp = match psk {
                // The private-network handshake runs first, on the raw socket: a stranger without
                // the key gets nothing it can decrypt, and nothing it sends reaches noise.
                Some(psk) => either::Either::Left(
                    tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)),
                ),
                None => either::Either::Right(tcp),
            };
            Ok(tcp
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer))))
        })
        .map_err(|e| BuildError::Transport(e.to_string()))?
        .with_behaviour(|key| {
            let identify = identify::Behaviour::new(identify::Config::new(
                "/taskswarm/id/1".into(),
                key.public(),
            ));
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            let messages = request_response::Behaviour::with_codec(
                Codec,
                [(PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(10))
                    .with_max_concurrent_streams(4096),
            );
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(MAX_PER_PEER))
                    .with_max_established_incoming(Some(MAX_ESTABLISHED))
                    .with_max_established_outgoing(Some(MAX_ESTABLISHED))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
            );
            let allowlist = admission.allowlist.as_ref().map(|peers| {
                let mut list =
                    allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
                for peer in peers {
                    list.allow_peer(*peer);
                }
                list
            });
            Ok(Behaviour {
                limits,
                allowlist: Toggle::from(allowlist),
                identify,
                gossipsub,
                messages,
            })
        })
        .map_err(|e| BuildError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&gossipsub::IdentTopic::new(LOAD_TOPIC))
        .map_err(|e| BuildError::Gossipsub(e.to_string()))?;
    Ok(swarm)
}
