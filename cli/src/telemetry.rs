//! Traces for OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, request spans (router →
//! host → guest) are batched and sent there over OTLP/HTTP (protobuf); unset, nothing is built
//! and the request path makes no spans.

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The environment variable that turns traces on (the OpenTelemetry standard one; the exporter
/// also reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`, ...).
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The tracer provider, if traces are wanted and the exporter could be built.
pub fn provider() -> Option<SdkTracerProvider> {
    std::env::var_os(ENDPOINT).filter(|v| !v.is_empty())?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
    {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("warning: {ENDPOINT} is set but no OTLP exporter could be built: {err}");
            return None;
        }
    };
    // `OTEL_SERVICE_NAME` wins when set; otherwise the role: fog-router, fog-host, ...
    let role = std::env::args().nth(1).unwrap_or_default();
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(format!("fog-{role}"));
    }
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    )
}
