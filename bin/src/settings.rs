//! Settings: built-in defaults, then the config file (`allsource.toml` in the working directory,
//! or `--config PATH`), then environment variables `ALLSOURCE__SECTION__KEY`, then command-line
//! flags. Validated once at start, with messages that name the key and the allowed values.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

/// Every setting of the server. Field names are the config keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub cache: CacheSettings,
    /// Development mode: authentication off (once it exists), loud warning at start.
    #[serde(default)]
    pub dev: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `server.host`: address to listen on.
    pub host: String,
    /// `server.port`: port to listen on (0 = any free port).
    pub port: u16,
    /// `server.max_body_bytes`: largest request body accepted.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `storage.backend`: `embedded` (default), `memory` or `postgres`.
    pub backend: String,
    /// `storage.data_dir`: where the embedded store keeps its files (created if missing).
    pub data_dir: PathBuf,
    /// `storage.durability`: `fsync` (default), `interval` or `none`.
    pub durability: String,
    /// `storage.fsync_interval_ms`: with `durability = "interval"`, how often to sync.
    pub fsync_interval_ms: u64,
    /// `storage.segment_bytes`: WAL segment size before it is sealed into Parquet.
    pub segment_bytes: u64,
    /// `storage.postgres.*`: the postgres backend's connection.
    pub postgres: PostgresSettings,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `storage.postgres.url`: connection URL of the database holding the events.
    pub url: String,
    /// `storage.postgres.max_connections`: size of the connection pool.
    pub max_connections: u32,
    /// `storage.postgres.acquire_timeout_ms`: how long a request waits for a connection
    /// before answering 503.
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// `limits.max_event_bytes`: payload + metadata of one event.
    pub max_event_bytes: usize,
    /// `limits.max_batch_events`: events in one batch.
    pub max_batch_events: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// `cache.enabled`: cache events by id and stream prefixes in front of the postgres
    /// backend (the embedded and memory backends read from memory already).
    pub enabled: bool,
    /// `cache.max_capacity`: events held in the cache.
    pub max_capacity: u64,
    /// `cache.ttl_seconds`: how long an entry lives (bounds memory, not staleness: cached
    /// entries are immutable facts and never stale).
    pub ttl_seconds: u64,
    /// `cache.max_states`: folded entity states kept in memory (every backend), so a state
    /// read folds only the events since; 0 turns it off.
    pub max_states: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `log.level`: a tracing filter (`info`, `debug`, `allsource=debug,tower_http=info`).
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// `log.format`: `text` (default) or `json`.
    pub format: String,
}

/// The storage backend, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Memory,
    Postgres,
}

/// The durability mode, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurabilityMode {
    Fsync,
    Interval(u64),
    None,
}

/// A setting that cannot be used; the message names the key and what is allowed.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl SettingsError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub port: Option<u16>,
    pub host: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub dev: bool,
}

const DEFAULTS: &str = r#"
dev = false

[server]
host = "127.0.0.1"
port = 3900
max_body_bytes = 67108864

[storage]
backend = "embedded"
data_dir = "./data"
durability = "fsync"
fsync_interval_ms = 10
segment_bytes = 67108864

[storage.postgres]
url = "postgres://postgres@127.0.0.1:5432/allsource"
max_connections = 16
acquire_timeout_ms = 5000

[limits]
max_event_bytes = 1048576
max_batch_events = 10000

[cache]
enabled = true
max_capacity = 100000
ttl_seconds = 300
max_states = 100000

[log]
level = "info"
format = "text"
"#;

impl Settings {
    /// Loads defaults → `config_file` (or `./allsource.toml` if it exists) → environment →
    /// `overrides`, and validates the result.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an unknown key, a value of the wrong type, or a
    /// value outside its allowed set.
    pub fn load(config_file: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        Self::load_from(
            config_file,
            overrides,
            Environment::with_prefix("ALLSOURCE"),
        )
    }

    fn load_from(
        config_file: Option<&Path>,
        overrides: Overrides,
        env: Environment,
    ) -> anyhow::Result<Self> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        builder = match config_file {
            Some(path) => {
                if !path.exists() {
                    anyhow::bail!("config file {} does not exist", path.display());
                }
                builder.add_source(File::from(path).format(FileFormat::Toml))
            }
            None => {
                builder.add_source(File::new("allsource.toml", FileFormat::Toml).required(false))
            }
        };
        builder = builder.add_source(env.prefix_separator("__").separator("__").try_parsing(true));
        if let Some(port) = overrides.port {
            builder = builder.set_override("server.port", port)?;
        }
        if let Some(host) = overrides.host {
            builder = builder.set_override("server.host", host)?;
        }
        if let Some(dir) = overrides.data_dir {
            builder = builder.set_override("storage.data_dir", dir.to_string_lossy().as_ref())?;
        }
        if overrides.dev {
            builder = builder.set_override("dev", true)?;
        }
        let settings: Settings = builder
            .build()?
            .try_deserialize()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings for tests: memory-safe defaults, port 0, the given data dir, no file, no env.
    pub fn for_tests(data_dir: &Path) -> Self {
        let mut settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()
            .and_then(Config::try_deserialize)
            .unwrap_or_else(|e| unreachable!("built-in defaults are valid: {e}"));
        settings.server.port = 0;
        settings.storage.data_dir = data_dir.to_path_buf();
        settings
    }

    /// Checks every value against its allowed set.
    ///
    /// # Errors
    /// The first invalid setting, naming its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.backend()?;
        self.durability()?;
        if self.server.host.trim().is_empty() {
            return Err(SettingsError::new("server.host", "must not be empty"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(SettingsError::new(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.limits.max_event_bytes == 0
            || self.limits.max_event_bytes > self.server.max_body_bytes
        {
            return Err(SettingsError::new(
                "limits.max_event_bytes",
                "must be between 1 and server.max_body_bytes",
            ));
        }
        if self.limits.max_batch_events == 0 || self.limits.max_batch_events > 100_000 {
            return Err(SettingsError::new(
                "limits.max_batch_events",
                "must be between 1 and 100000",
            ));
        }
        if self.storage.segment_bytes < 4096 {
            return Err(SettingsError::new(
                "storage.segment_bytes",
                "must be at least 4096",
            ));
        }
        if self.cache.enabled && (self.cache.max_capacity == 0 || self.cache.ttl_seconds == 0) {
            return Err(SettingsError::new(
                "cache.max_capacity",
                "cache.max_capacity and cache.ttl_seconds must be at least 1 when cache.enabled",
            ));
        }
        if self.storage.postgres.max_connections == 0 {
            return Err(SettingsError::new(
                "storage.postgres.max_connections",
                "must be at least 1",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(SettingsError::new(
                "log.format",
                format!("\"{}\" is not one of: text, json", self.log.format),
            ));
        }
        Ok(())
    }

    /// The storage backend.
    ///
    /// # Errors
    /// `storage.backend` outside its allowed values.
    pub fn backend(&self) -> Result<Backend, SettingsError> {
        match self.storage.backend.as_str() {
            "embedded" => Ok(Backend::Embedded),
            "memory" => Ok(Backend::Memory),
            "postgres" => Ok(Backend::Postgres),
            other => Err(SettingsError::new(
                "storage.backend",
                format!("\"{other}\" is not one of: embedded, memory, postgres"),
            )),
        }
    }

    /// The durability mode.
    ///
    /// # Errors
    /// `storage.durability` outside its allowed values, or a zero interval.
    pub fn durability(&self) -> Result<DurabilityMode, SettingsError> {
        match self.storage.durability.as_str() {
            "fsync" => Ok(DurabilityMode::Fsync),
            "none" => Ok(DurabilityMode::None),
            "interval" if self.storage.fsync_interval_ms > 0 => {
                Ok(DurabilityMode::Interval(self.storage.fsync_interval_ms))
            }
            "interval" => Err(SettingsError::new(
                "storage.fsync_interval_ms",
                "must be at least 1 with durability = \"interval\"",
            )),
            other => Err(SettingsError::new(
                "storage.durability",
                format!("\"{other}\" is not one of: fsync, interval, none"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::with_prefix("ALLSOURCE").source(Some(map))
    }

    fn load(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::load_from(None, Overrides::default(), env(vars))
    }

    #[test]
    fn defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.host, "127.0.0.1");
        assert_eq!(s.server.port, 3900);
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert_eq!(s.backend().unwrap(), Backend::Embedded);
        assert_eq!(s.durability().unwrap(), DurabilityMode::Fsync);
        assert_eq!(s.limits.max_event_bytes, 1024 * 1024);
        assert!(!s.dev);
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("ALLSOURCE__SERVER__PORT", "4000"),
            ("ALLSOURCE__SERVER__HOST", "0.0.0.0"),
            ("ALLSOURCE__STORAGE__BACKEND", "memory"),
            ("ALLSOURCE__STORAGE__DATA_DIR", "/var/lib/allsource"),
            ("ALLSOURCE__STORAGE__DURABILITY", "interval"),
            ("ALLSOURCE__STORAGE__FSYNC_INTERVAL_MS", "25"),
            ("ALLSOURCE__LIMITS__MAX_EVENT_BYTES", "2048"),
            (
                "ALLSOURCE__STORAGE__POSTGRES__URL",
                "postgres://u@db:5432/events",
            ),
            ("ALLSOURCE__STORAGE__POSTGRES__MAX_CONNECTIONS", "32"),
        ])
        .unwrap();
        assert_eq!(s.server.port, 4000);
        assert_eq!(s.server.host, "0.0.0.0");
        assert_eq!(s.backend().unwrap(), Backend::Memory);
        assert_eq!(s.storage.data_dir, PathBuf::from("/var/lib/allsource"));
        assert_eq!(s.durability().unwrap(), DurabilityMode::Interval(25));
        assert_eq!(s.limits.max_event_bytes, 2048);
        assert_eq!(s.storage.postgres.url, "postgres://u@db:5432/events");
        assert_eq!(s.storage.postgres.max_connections, 32);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "[server]\nport = 5000\nhost = \"::1\"\n").unwrap();
        let s = Settings::load_from(Some(&path), Overrides::default(), env(&[])).unwrap();
        assert_eq!((s.server.port, s.server.host.as_str()), (5000, "::1"));
        let s = Settings::load_from(
            Some(&path),
            Overrides::default(),
            env(&[("ALLSOURCE__SERVER__PORT", "5001")]),
        )
        .unwrap();
        assert_eq!(s.server.port, 5001);
        let s = Settings::load_from(
            Some(&path),
            Overrides {
                port: Some(5002),
                data_dir: Some("/tmp/x".into()),
                dev: true,
                host: None,
            },
            env(&[("ALLSOURCE__SERVER__PORT", "5001")]),
        )
        .unwrap();
        assert_eq!(s.server.port, 5002);
        assert_eq!(s.storage.data_dir, PathBuf::from("/tmp/x"));
        assert!(s.dev);
    }

    #[test]
    fn invalid_values_name_the_key_and_the_allowed_values() {
        let err = load(&[("ALLSOURCE__STORAGE__BACKEND", "mongo")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.backend") && err.contains("embedded, memory, postgres"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__STORAGE__DURABILITY", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage.durability") && err.contains("fsync, interval, none"),
            "{err}"
        );
        let err = load(&[("ALLSOURCE__SERVER__PORT", "seventy")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = load(&[("ALLSOURCE__SERVER__PORT", "70000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = load(&[("ALLSOURCE__LOG__FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.format"), "{err}");
        let err = load(&[
            ("ALLSOURCE__STORAGE__DURABILITY", "interval"),
            ("ALLSOURCE__STORAGE__FSYNC_INTERVAL_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("storage.fsync_interval_ms"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "[server]\nprot = 5000\n").unwrap();
        let err = Settings::load_from(Some(&path), Overrides::default(), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        let missing = dir.path().join("missing.toml");
        assert!(Settings::load_from(Some(&missing), Overrides::default(), env(&[])).is_err());
    }

    #[test]
    fn test_settings_listen_on_any_port() {
        let s = Settings::for_tests(Path::new("/tmp/t"));
        assert_eq!(s.server.port, 0);
        assert!(s.validate().is_ok());
    }
}
