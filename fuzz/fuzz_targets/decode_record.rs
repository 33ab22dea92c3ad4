//! Any bytes as a stored or received sealed record: decoding it and checking its spec and seal
//! never panic, and a record that checks re-encodes to the bytes of a record that checks too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskswarm_protocol::SealedRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = SealedRecord::from_bytes(data)
        && sealed.check().is_ok()
    {
        let again = SealedRecord::from_bytes(&sealed.to_bytes()).expect("it decodes");
        assert!(again.check().is_ok());
    }
});
