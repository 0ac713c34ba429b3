//! Fuzz site bundles as the control plane and hosts read them: arbitrary bytes parsed. Nothing
//! may panic, and the contents of an accepted bundle are exactly the bytes its manifest lists.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((manifest, offset)) = fog_proto::bundle::parse(data) else {
        return;
    };
    let listed: u64 = manifest
        .check()
        .expect("an accepted manifest checks")
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert_eq!(listed, (data.len() - offset) as u64);
});
