//! Paths of the example and hostile guest components, built from `guest-examples/` by this
//! crate's build script for the tests, the benches and the demo.
//!
//! Each hostile guest documents its contract (the status and reason a Fog host must give) at the
//! top of its `src/lib.rs`.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The components and files the `fog` binary embeds, so `fog up --demo` and `fog publish DIR`
/// need nothing beside it.
pub mod shipped {
    include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
}

/// The bytes of the component at `path` (one of this crate's constants).
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("reading guest {path}: {err}"))
}
