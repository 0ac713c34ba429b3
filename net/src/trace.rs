//! Trace context across Fog's hops (router → host, over HTX or plain HTTP): the W3C
//! `traceparent` header from the current request's span, and the host's span made its child.
//!
//! Off unless the binary installed an OpenTelemetry exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`) and
//! called [`enable`]: until then every function here is one relaxed atomic load, and the
//! request spans are not made at all.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the request spans exported as OpenTelemetry spans (the binary's
/// exporter layer listens to this target only; logs never show it unless asked to).
pub const TARGET: &str = "fog_otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Spans are exported from now on: make request spans and propagate their context.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Put `span`'s trace context in `headers` (`traceparent`, replacing any a visitor sent).
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// Make `span` the child of the trace context in `headers`, if they carry one.
pub fn set_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // A span that is disabled (no exporter layer listening) has nothing to parent.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_injected_while_tracing_is_off() {
        let mut headers = http::HeaderMap::new();
        inject(&tracing::Span::current(), &mut headers);
        assert!(headers.is_empty());
    }
}
