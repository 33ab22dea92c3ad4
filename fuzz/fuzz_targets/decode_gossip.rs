//! Any bytes as gossip: decoding and checking the load report's signature never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskswarm_protocol::{Gossip, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(Gossip::Load(report)) = wire::decode::<Gossip>(data) {
        let _ = report.open();
    }
});
