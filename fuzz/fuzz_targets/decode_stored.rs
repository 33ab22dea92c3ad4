//! Any bytes as a stored lease or a kept result, and a task's envelope: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskswarm_protocol::record::{HeldEntry, OutboxEntry};
use taskswarm_protocol::{Envelope, Task, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(held) = wire::decode::<HeldEntry>(data) {
        let _ = Task::from_envelope(held.envelope);
    }
    let _ = wire::decode::<OutboxEntry>(data);
    if let Ok(envelope) = wire::decode::<Envelope>(data) {
        let _ = Task::from_envelope(envelope);
    }
});
