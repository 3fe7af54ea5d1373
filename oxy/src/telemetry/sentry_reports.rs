//! Panic reports to Sentry, over BoringSSL-free rustls (no OpenSSL, no native-tls).

use crate::settings::SentrySettings;

/// Starts the Sentry client when a DSN is configured; keep the guard alive until exit
/// (dropping it flushes pending reports). Panics are reported from then on.
pub fn init(
    settings: &SentrySettings,
    app_name: &str,
    app_version: &str,
) -> Option<sentry::ClientInitGuard> {
    if settings.dsn.is_empty() {
        return None;
    }
    let dsn = match settings.dsn.parse() {
        Ok(dsn) => dsn,
        Err(e) => {
            tracing::error!(error = %e, "telemetry.sentry.dsn is not a DSN; no reports will be sent");
            return None;
        }
    };
    // reqwest's rustls needs a process-wide crypto provider; an earlier install is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut options = sentry::ClientOptions::new();
    options.dsn = Some(dsn);
    options.release = Some(format!("{app_name}@{app_version}").into());
    options.environment = Some(settings.environment.clone().into());
    options.event_sampling_strategy =
        sentry::EventSamplingStrategy::FixedRate(settings.sample_rate.clamp(0.0, 1.0));
    let guard = sentry::init(options);
    tracing::info!(environment = %settings.environment, "Sentry panic reports enabled");
    Some(guard)
}
