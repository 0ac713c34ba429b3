//! Fuzz snapshot decoding: arbitrary bytes fed to the reader in fuzz-chosen chunk sizes. Nothing
//! may panic or allocate beyond the frame limit; a snapshot the reader accepts is exactly what
//! the writer makes of the records it read (the format has one encoding).
#![no_main]

use fog_proto::snapshot::{SnapshotReader, SnapshotWriter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    let mut reader = SnapshotReader::default();
    let mut records = Vec::new();
    for piece in bytes.chunks(usize::from(chunk).max(1)) {
        match reader.push(piece) {
            Ok(more) => records.extend(more),
            Err(_) => return,
        }
    }
    let Ok(seq) = reader.finished() else {
        return;
    };
    let app = reader.app().expect("an accepted snapshot has a header").to_string();
    let mut writer = SnapshotWriter::new(&app, seq);
    for (key, value) in &records {
        writer.record(key, value);
    }
    assert_eq!(&writer.finish()[..], bytes, "an accepted snapshot re-encodes differently");
});
