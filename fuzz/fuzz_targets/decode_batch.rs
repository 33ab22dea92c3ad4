//! Any bytes as a request body: a batch of frames, each a message. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskswarm_protocol::{Batch, Message, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = wire::decode::<Batch>(data) {
        for frame in &batch.frames {
            let _ = wire::decode::<Message>(frame);
        }
    }
});
