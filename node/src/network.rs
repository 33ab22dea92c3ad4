//! The libp2p side of a peer: transport, behaviours and their settings.
//!
//! TCP with noise and yamux; identify (so peers learn each other's listen addresses); gossipsub
//! for load reports, tuned for swarms of a handful to a few hundred peers; request-response with
//! [`crate::codec`] for every direct message. Owns only construction: the event loop in
//! [`crate::runtime`] drives the swarm.

use std::time::Duration;

use libp2p::{Swarm, SwarmBuilder, gossipsub, identify, noise, request_response, tcp, yamux};

use crate::codec::{Codec, PROTOCOL};

/// The gossipsub topic of load reports.
pub const LOAD_TOPIC: &str = "taskswarm/load/1";

pub use behaviour::{Behaviour, BehaviourEvent};

mod behaviour {
    #![allow(missing_docs)] // the derive generates an undocumented event enum
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{gossipsub, identify, request_response};

    use crate::codec::Codec;

    /// Every behaviour a peer runs.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
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

/// Builds a swarm for `key` with the behaviours above, subscribed to the load topic.
pub fn build(key: libp2p::identity::Keypair) -> Result<Swarm<Behaviour>, BuildError> {
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
    let mut swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
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
            Ok(Behaviour {
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
