//! Any bytes as a direct message: decoding never panics, and what decodes encodes back to a
//! value that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskswarm_protocol::{Message, wire};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = wire::decode::<Message>(data) {
        let again = wire::encode(&message);
        let back: Message = wire::decode(&again).expect("an encoded message decodes");
        assert_eq!(back, message);
        let _ = message.kind();
    }
});
