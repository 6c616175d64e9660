//! Logs and traces.
//!
//! Logs: human-readable lines by default, JSON lines with
//! `CHATCORE_LOG_FORMAT=json` (each line carries the fields of the spans it
//! is in: a request's `request_id`, `method`, `route`, `status`). The level
//! filter is `RUST_LOG` (default `info`).
//!
//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g.
//! `http://collector:4318`), spans are exported over OTLP/HTTP with JSON
//! bodies to `{endpoint}/v1/traces` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! names the full URL instead; `OTEL_SERVICE_NAME` defaults to
//! `chatcore`). Every request span is exported, and within it a `chat` span
//! per turn with `tenant`, `bot`, `provider`, `model`, the token counts,
//! `ttft_ms` and `status` (see `chatcore::engine`). The batch of spans still
//! queued is sent when the server stops ([`Telemetry::shutdown`]).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// What [`init`] installed; keep it until the process ends.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }

    /// Sends the spans still queued and stops the exporter. (On a thread
    /// of its own: the exporter's HTTP client is a blocking one, which must
    /// not run on the async runtime's threads.)
    pub fn shutdown(&self) {
        if let Some(p) = self.traces.clone() {
            let done = std::thread::spawn(move || p.shutdown()).join();
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "could not flush the last spans");
            }
        }
    }
}

/// The OTLP tracer provider, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
/// traces endpoint) is set.
fn otlp() -> Option<SdkTracerProvider> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return None;
    }
    // The exporter's client is reqwest's, built (like the providers') on
    // rustls with the `ring` provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP export is off: {e}");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "chatcore".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(name)
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the process's subscriber (and the OTLP exporter when
/// configured).
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Built on a thread of its own: the exporter's blocking HTTP client must
    // not be created on the async runtime's threads.
    let traces = std::thread::spawn(otlp).join().ok().flatten();
    let otel = traces
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("chatcore")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .init(),
    }
    Telemetry { traces }
}
