//! Fuzz the frame parser: arbitrary bytes as frames under fixed keys, then as STREAM payloads.
//! Nothing may panic; every input must be accepted or refused with an error.
#![no_main]

use fog_htx::frame::{DEFAULT_MAX_FRAME, FrameType, Opener, Sealer, decode_stream, encode_stream};
use fog_htx::keys::DirectionKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = DirectionKeys::from_secret([3; 32]);
    // Raw bytes as a sequence of frames.
    let mut opener = Opener::new(keys.clone(), DEFAULT_MAX_FRAME);
    let mut rest = data;
    while rest.len() >= 3 {
        let Ok(len) = opener.frame_len([rest[0], rest[1], rest[2]]) else {
            break;
        };
        if len > rest.len() {
            let _ = opener.open(rest);
            break;
        }
        if opener.open(&rest[..len]).is_err() {
            break;
        }
        rest = &rest[len..];
    }
    // Raw bytes as STREAM plaintext.
    if let Ok((fin, offset, body)) = decode_stream(data) {
        assert_eq!(encode_stream(fin, offset, body), data);
    }
    // A valid frame with one byte of the input XORed in somewhere must never open.
    if let Some((&first, tail)) = data.split_first() {
        let mut sealer = Sealer::new(keys.clone());
        let mut frame = Vec::new();
        sealer.seal(
            FrameType::Stream,
            1,
            0,
            &encode_stream(false, 0, tail),
            &mut frame,
        );
        let i = first as usize % frame.len();
        let flip = if tail.first().copied().unwrap_or(1) == 0 {
            1
        } else {
            tail.first().copied().unwrap_or(1)
        };
        frame[i] ^= flip;
        assert!(Opener::new(keys, usize::MAX >> 8).open(&frame).is_err());
    }
});
