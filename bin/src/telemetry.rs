//! Logging and tracing: `tracing` with an env-filter (`RUST_LOG` wins over `log.level`), as
//! human-readable text or JSON lines. Both filters are checked the same way
//! ([`LogFilter::parse`]): one that would silence the server is refused at start.

use tracing_subscriber::EnvFilter;

use crate::settings::{LogFilter, LogFormat, LogSettings, SettingsError};

/// The filter in force: `RUST_LOG` when set and not empty, else `log.level`.
///
/// # Errors
/// A `RUST_LOG` that is not a usable filter (the message names it).
pub fn filter(settings: &LogSettings) -> Result<EnvFilter, SettingsError> {
    let (key, filter) = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.trim().is_empty() => (
            "RUST_LOG",
            LogFilter::parse(&from_env).map_err(|m| SettingsError::new("RUST_LOG", m))?,
        ),
        _ => ("log.level", settings.level.clone()),
    };
    EnvFilter::try_new(filter.as_str()).map_err(|e| SettingsError::new(key, e.to_string()))
}

/// Installs the global subscriber. Call once, from `main`.
///
/// # Errors
/// An invalid `RUST_LOG`, or a subscriber already installed.
pub fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(settings)?)
        .with_target(true);
    let installed = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}
