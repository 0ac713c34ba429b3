//! Fuzz the control plane's API: arbitrary methods, paths, queries, headers and bodies through
//! `Control::handle`, the entry point the HTTP server calls, on a control plane with a temporary
//! sled store. Half the inputs carry a valid signature over their body, so parsing past the
//! signature check (JSON bodies, component checks, device registrations) is reached too.
//! Nothing may panic, and no input may earn a 500: bad input is the sender's fault (4xx).
#![no_main]

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use bytes::Bytes;
use fog_control::store::SledStore;
use fog_control::{Control, ControlConfig};
use fog_proto::auth::{self, AUTH_HEADER, Identity, META_HEADER};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    path: String,
    query: Option<String>,
    sign: bool,
    auth: String,
    meta: String,
    body: Vec<u8>,
}

const METHODS: [&str; 5] = ["GET", "POST", "DELETE", "PUT", "HEAD"];

fn control() -> &'static (tokio::runtime::Runtime, Arc<Control>) {
    static CONTROL: OnceLock<(tokio::runtime::Runtime, Arc<Control>)> = OnceLock::new();
    CONTROL.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(SledStore::temporary().unwrap());
        let config = ControlConfig {
            key_rate: None,
            ..ControlConfig::default()
        };
        (runtime, Control::new(store, config))
    })
}

fuzz_target!(|input: Input| {
    let method = METHODS[input.method as usize % METHODS.len()];
    let path = if input.path.starts_with('/') {
        input.path.clone()
    } else {
        format!("/v1/{}", input.path)
    };
    let uri = match &input.query {
        Some(query) => format!("{path}?{query}"),
        None => path.clone(),
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    let mut request = http::Request::builder().method(method).uri(uri);
    if let Ok(meta) = http::HeaderValue::from_str(&input.meta) {
        request = request.header(META_HEADER, meta);
    }
    let header = if input.sign {
        static SIGNER: OnceLock<Identity> = OnceLock::new();
        let signer = SIGNER.get_or_init(|| Identity::from_secret(&[7; 32]));
        let sha = auth::sha256_hex(&input.body);
        signer.sign(method, &path, auth::now_s(), &sha, &input.meta)
    } else {
        input.auth.clone()
    };
    if let Ok(header) = http::HeaderValue::from_str(&header) {
        request = request.header(AUTH_HEADER, header);
    }
    let Ok(request) = request.body(Full::new(Bytes::from(input.body))) else {
        return;
    };
    let (runtime, control) = control();
    let response = runtime.block_on(control.handle(request));
    assert_ne!(
        response.status(),
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "bad input earned a 500"
    );
});
