//! Logs and trace export of the `ork` process.
//!
//! Client commands log warnings as text to stderr. `ork server` and `ork dev`
//! choose the format (`--log-format text|json`; JSON lines carry the fields
//! of the request's span, such as `run_id` and `task_run_id`) and, with
//! `--otlp-endpoint` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), export
//! traces over OTLP/gRPC: the RPC and state-transaction spans through the
//! `tracing` layer, and the run and attempt spans through the server's
//! [`SpanSink`]. `RUST_LOG` overrides the log filter.

use clap::ValueEnum;
use ork_server::telemetry::SpanSink;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span's fields (run and task ids).
    Json,
}

/// What stays alive while the process runs, flushed when it is dropped.
pub struct Telemetry {
    /// Where the server sends run and attempt spans.
    pub spans: Option<SpanSink>,
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("ork: could not export the last spans: {e}");
        }
    }
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Client commands: warnings as text on stderr, so they never mix with data.
pub fn init_client() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("warn"))
        .with_writer(std::io::stderr)
        .try_init();
}

/// `ork server` / `ork dev`: the chosen log format, and OTLP export when an
/// endpoint is given.
pub fn init_server(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let fmt = tracing_subscriber::Layer::with_filter(fmt, filter("warn"));
    let registry = tracing_subscriber::registry().with(fmt);
    match otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        None => {
            registry.try_init()?;
            Ok(Telemetry {
                spans: None,
                #[cfg(feature = "otlp")]
                provider: None,
            })
        }
        #[cfg(feature = "otlp")]
        Some(endpoint) => otlp::init(registry, endpoint),
        #[cfg(not(feature = "otlp"))]
        Some(_) => anyhow::bail!(
            "this ork was built without the `otlp` feature; rebuild with it to export traces"
        ),
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use anyhow::Context as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanProcessor as _};
    use ork_server::telemetry::SpanSink;
    use tracing::Subscriber;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::util::SubscriberInitExt as _;

    use super::Telemetry;

    fn exporter(endpoint: &str) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("--otlp-endpoint {endpoint}: cannot set up the OTLP exporter"))
    }

    pub(super) fn init<S>(registry: S, endpoint: &str) -> anyhow::Result<Telemetry>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
    {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!(
                "--otlp-endpoint {endpoint}: give the collector's OTLP/gRPC URL, e.g. http://127.0.0.1:4317"
            );
        }
        let resource = Resource::builder().with_service_name("ork").build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter(endpoint)?)
            .with_resource(resource.clone())
            .build();
        // The server's own spans (RPCs, state transactions) at info; nothing
        // from the libraries underneath.
        let targets = Targets::new()
            .with_target("ork_server", LevelFilter::INFO)
            .with_default(LevelFilter::OFF);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ork"))
            .with_filter(targets);
        registry.with(layer).try_init()?;
        let mut runs = BatchSpanProcessor::builder(exporter(endpoint)?).build();
        runs.set_resource(&resource);
        Ok(Telemetry {
            spans: Some(SpanSink::new(runs)),
            provider: Some(provider),
        })
    }
}
