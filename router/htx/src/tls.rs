//! The optional outer TLS 1.3 layer: HTX inside a TLS session whose exporter is bound into the
//! Noise prologue.
//!
//! TLS here hides the inner protocol on the wire; it does not authenticate anyone. The server
//! presents a throwaway self-signed certificate and the client accepts any certificate (while
//! still checking that the server holds its key). Authentication is Noise XK's: both sides put
//! the TLS exporter (`EXPORTER-betanet-htx-v1`, 32 bytes, RFC 8446 §7.5) into the Noise
//! prologue, so if anyone terminates TLS in the middle — with any certificate — the two TLS
//! sessions export different secrets and the Noise handshake fails closed.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::HtxError;

/// The exporter label.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-betanet-htx-v1";

/// A TLS stream on the client side.
pub type ClientStream<S> = tokio_rustls::client::TlsStream<S>;
/// A TLS stream on the server side.
pub type ServerStream<S> = tokio_rustls::server::TlsStream<S>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> HtxError {
    HtxError::Handshake(format!("TLS: {e}"))
}

/// `prologue` followed by the session's exporter: what both sides give Noise.
pub fn bound_prologue(prologue: &[u8], exporter: &[u8; 32]) -> Vec<u8> {
    let mut bound = prologue.to_vec();
    bound.extend_from_slice(exporter);
    bound
}

/// Accepts any certificate, but still checks the handshake signature against it (TLS 1.3 only).
#[derive(Debug)]
struct NoiseAuthenticates(Arc<CryptoProvider>);

impl ServerCertVerifier for NoiseAuthenticates {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server side: a fresh self-signed certificate, TLS 1.3 only.
#[derive(Clone)]
pub struct Server {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A server with a new self-signed certificate for `name`.
    pub fn new(name: &str) -> Result<Server, HtxError> {
        let certified =
            rcgen::generate_simple_self_signed(vec![name.to_string()]).map_err(tls_error)?;
        let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .map_err(tls_error)?;
        Ok(Server {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Accept TLS on `socket`; returns the stream and its exporter.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: S,
    ) -> Result<(ServerStream<S>, [u8; 32]), HtxError> {
        let stream = self.acceptor.accept(socket).await.map_err(tls_error)?;
        let exporter = stream
            .get_ref()
            .1
            .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            .map_err(tls_error)?;
        Ok((stream, exporter))
    }
}

/// Open TLS 1.3 over `socket` (any certificate; Noise authenticates); returns the stream and its
/// exporter.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
) -> Result<(ClientStream<S>, [u8; 32]), HtxError> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoiseAuthenticates(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from("betanet.invalid").expect("a valid DNS name");
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, socket)
        .await
        .map_err(tls_error)?;
    let exporter = stream
        .get_ref()
        .1
        .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
        .map_err(tls_error)?;
    Ok((stream, exporter))
}
