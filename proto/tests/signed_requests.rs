//! Property-based runs (proptest, a few hundred cases, part of the suite) over the control
//! plane's signed-request parsing: whatever a header says, `verify` answers without panicking,
//! and a genuine header changed in any one place is refused or still names the same signer and
//! nonce (so the replay guard and per-key limits cannot be dodged by re-spelling a header).

use fog_proto::auth::{self, Identity};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The value of `name=` in a header.
fn part<'a>(header: &'a str, name: &str) -> &'a str {
    header
        .split(',')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_header_is_answered_without_panicking(header in "\\PC{0,600}", meta in "\\PC{0,40}") {
        let body = auth::sha256_hex(b"");
        prop_assert!(auth::verify(Some(&header), "POST", "/v1/apps", &body, &meta, NOW).is_err());
    }

    #[test]
    fn a_header_of_the_right_shape_with_random_fields_is_refused(
        key in "[0-9a-fA-F]{0,70}",
        ts in "[+0-9]{0,22}",
        nonce in "[0-9a-fA-F]{0,40}",
        sig in "[0-9a-fA-F]{0,130}",
    ) {
        let header = format!("key={key},ts={ts},nonce={nonce},sig={sig}");
        let body = auth::sha256_hex(b"x");
        prop_assert!(auth::verify(Some(&header), "POST", "/v1/apps", &body, "", NOW).is_err());
    }

    #[test]
    fn a_changed_header_is_refused_or_names_the_same_signer_and_nonce(
        method in prop::sample::select(vec!["POST", "DELETE"]),
        path in "/v1/[a-z0-9/-]{0,24}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        meta in "[ -~]{0,24}",
        at in any::<prop::sample::Index>(),
        replacement in prop::sample::select(
            "0123456789abcdefABCDEF,=+- xkeytsnoncsig".chars().collect::<Vec<_>>()
        ),
    ) {
        let signer = Identity::generate();
        let body = auth::sha256_hex(&body);
        let header = signer.sign(method, &path, NOW, &body, &meta);
        let signed = auth::verify(Some(&header), method, &path, &body, &meta, NOW).unwrap();
        prop_assert_eq!(&signed.key, &signer.public_hex());
        prop_assert_eq!(signed.nonce.as_str(), part(&header, "nonce"));

        let mut chars: Vec<char> = header.chars().collect();
        let i = at.index(chars.len());
        chars[i] = replacement;
        let changed: String = chars.into_iter().collect();
        if let Ok(other) = auth::verify(Some(&changed), method, &path, &body, &meta, NOW) {
            prop_assert_eq!(other.key, signed.key);
            prop_assert_eq!(other.nonce, signed.nonce);
        }
        // The same header never verifies for another request.
        let elsewhere = format!("{path}x");
        prop_assert!(auth::verify(Some(&header), method, &elsewhere, &body, &meta, NOW).is_err());
    }
}
