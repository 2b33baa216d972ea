//! Configuration: defaults < file (TOML) < `CRIER_*` environment < command-line flags.
//!
//! The file is validated once at start: unknown keys, a missing key or an app named twice are
//! refused with the line of the problem. Secret keys never appear in `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod providers;

/// Request bodies past this are refused before parsing (the contract's 1 MiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./crier-data";
/// Where the development app lives when no configuration file names any app.
pub const DEV_APP_FILE: &str = "dev-app.toml";

#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretKey(pub String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

fn default_admins() -> Vec<String> {
    vec!["administrator".into()]
}
fn default_true() -> bool {
    true
}
fn default_daily_push_quota() -> u64 {
    100
}
fn default_min_push_interval_ms() -> u64 {
    1000
}
fn default_max_tags_per_user() -> usize {
    100
}

fn default_notification_lease_secs() -> u64 {
    30
}

/// Tencent's default cap on callback requests to an app.
fn default_callback_qps() -> u32 {
    1000
}

/// Tencent's documented rates for `batch` range from 10 to 40 calls per second by edition.
fn default_batch_calls_per_second() -> u32 {
    30
}

/// One `[[app]]` table: an isolated tenant.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub sdkappid: u64,
    pub secret_key: SecretKey,
    #[serde(default = "default_admins")]
    pub admins: Vec<String>,
    #[serde(default = "default_true")]
    pub push_enabled: bool,
    #[serde(default = "default_daily_push_quota")]
    pub daily_push_quota: u64,
    #[serde(default = "default_min_push_interval_ms")]
    pub min_push_interval_ms: u64,
    /// Tencent's limit is 100 tags per account.
    #[serde(default = "default_max_tags_per_user")]
    pub max_tags_per_user: usize,
    /// Offline notifications through APNs (`[app.apns]`), FCM (`[app.fcm]`) and an operator's
    /// webhook (`[app.webhook]`); an app without them sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<providers::ApnsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fcm: Option<providers::FcmConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<providers::WebhookConfig>,
    /// How long a node holds a notification job without storing progress before another node
    /// may take it over (in a cluster: how long a dead node's run waits). Default 30 s.
    #[serde(default = "default_notification_lease_secs")]
    pub notification_lease_secs: u64,
    /// Where `Push.AllMemberPush` delivery events of `timpush` tasks are POSTed (timpush.md
    /// §8); none are sent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Signs each callback (`RequestTime` and `Sign` in its query) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_token: Option<SecretKey>,
    /// Callback requests per second at most; the rest wait in the queue.
    #[serde(default = "default_callback_qps")]
    pub callback_qps: u32,
    /// `v4/timpush/batch` calls per second (90024 past it).
    #[serde(default = "default_batch_calls_per_second")]
    pub batch_calls_per_second: u32,
}

impl AppConfig {
    /// An app with Tencent's default limits and no notification providers.
    pub fn new(sdkappid: u64, secret_key: impl Into<String>) -> AppConfig {
        AppConfig {
            sdkappid,
            secret_key: SecretKey(secret_key.into()),
            admins: default_admins(),
            push_enabled: true,
            daily_push_quota: default_daily_push_quota(),
            min_push_interval_ms: default_min_push_interval_ms(),
            max_tags_per_user: default_max_tags_per_user(),
            apns: None,
            fcm: None,
            webhook: None,
            notification_lease_secs: default_notification_lease_secs(),
            callback_url: None,
            callback_token: None,
            callback_qps: default_callback_qps(),
            batch_calls_per_second: default_batch_calls_per_second(),
        }
    }

    pub fn is_admin(&self, identifier: &str) -> bool {
        self.admins.iter().any(|admin| admin == identifier)
    }

    /// Checks the callback keys; answers the problem in words.
    fn validate_callback(&self) -> Result<(), String> {
        if let Some(url) = &self.callback_url {
            let parsed = reqwest::Url::parse(url).map_err(|e| {
                format!("callback_url {url:?} is not a URL ({e}); write it as https://host/path")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                return Err(format!(
                    "callback_url {url:?} must be an http:// or https:// URL with a host"
                ));
            }
        }
        if self.callback_token.as_ref().is_some_and(|t| t.0.is_empty()) {
            return Err("callback_token is empty; remove it to send unsigned callbacks".into());
        }
        if self.callback_qps == 0 {
            return Err("callback_qps must be at least 1".into());
        }
        Ok(())
    }
}

/// What one client may cost the server, and how long it may take: the `[limits]` table.
/// Every connection is counted from accept to close, WebSocket sessions included.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections open at once. 0 (the default) derives it from the process's
    /// open-file limit, keeping a fiftieth of it (at least 256) for the store, log and providers
    /// (they use a few dozen): at the usual limit of 20,000, a server takes 19,536 clients.
    pub max_connections: usize,
    /// Connections past `max_connections` that may still be served, but only for `/healthz`,
    /// `/metrics` and signed admin calls, so an operator can look in while clients crowd it.
    pub reserved_connections: usize,
    /// Time to send a request's headers, from the connection's first byte or the first byte
    /// after the previous answer.
    pub header_timeout_secs: u64,
    /// Time to send a request's body, once its signature is checked.
    pub body_timeout_secs: u64,
    /// An HTTP connection with no request in flight and nothing sent is closed after this.
    pub idle_timeout_secs: u64,
    /// Bytes of request bodies held in memory at once, over all requests; past it, a request
    /// is refused (91000) instead of the server growing.
    pub request_body_budget_bytes: usize,
    /// Concurrent streams a client may open on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// On SIGTERM, how long requests in flight may take before they are cut and the store is
    /// flushed anyway.
    pub shutdown_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 0,
            reserved_connections: 64,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            idle_timeout_secs: 60,
            request_body_budget_bytes: 64 * 1024 * 1024,
            http2_max_streams: 32,
            shutdown_timeout_secs: 10,
        }
    }
}

impl Limits {
    /// `max_connections` with 0 resolved against `open_files`, the soft open-file limit.
    pub fn connection_cap(&self, open_files: Option<u64>) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let Some(open_files) = open_files else {
            return 10_000;
        };
        let headroom = (open_files / 50).max(256);
        let cap = open_files.saturating_sub(headroom + self.reserved_connections as u64);
        (cap as usize).max(16)
    }

    /// Checks what no server could work with; answers the problem in words.
    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
        ] {
            if value == 0 {
                return Err(format!("[limits] {name} must be at least 1"));
            }
        }
        if self.request_body_budget_bytes < MAX_REQUEST_BODY_BYTES {
            return Err(format!(
                "[limits] request_body_budget_bytes must be at least {} (one largest request)",
                MAX_REQUEST_BODY_BYTES
            ));
        }
        if self.http2_max_streams == 0 {
            return Err("[limits] http2_max_streams must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    bus: Option<String>,
    node_id: Option<String>,
    bus_subject_prefix: Option<String>,
    #[serde(default)]
    limits: Option<toml::Spanned<Limits>>,
    #[serde(default, rename = "app")]
    apps: Vec<toml::Spanned<AppConfig>>,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `postgres://...` for a store shared by several nodes; `None`: the embedded SQLite
    /// store under `data_dir`.
    pub store: Option<BackendUrl>,
    /// `nats://...` for the bus between nodes; `None`: in-process (a single node).
    pub bus: Option<BackendUrl>,
    /// This node's name in announcements and job leases; made up at start when not given.
    pub node_id: Option<String>,
    /// NATS subjects start with this (several clusters may share one NATS server).
    pub bus_subject_prefix: String,
    pub apps: Vec<AppConfig>,
    pub limits: Limits,
}

/// What the command line and environment said; `None` leaves the file or the default.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub shutdown_timeout_secs: Option<u64>,
    pub store: Option<String>,
    pub bus: Option<String>,
    pub node_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("listen address {0:?} is not HOST:PORT (for example 127.0.0.1:8080)")]
    Listen(String),
    #[error("{what} {url} is not one of: {expected}")]
    Backend {
        what: &'static str,
        url: BackendUrl,
        expected: &'static str,
    },
}

/// A backend's URL (`postgres://user:password@host/db`, `nats://host:4222`). Shown with
/// its password replaced, in logs, errors and `Debug` alike.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendUrl(String);

impl BackendUrl {
    pub fn new(url: impl Into<String>) -> BackendUrl {
        BackendUrl(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn scheme(&self) -> &str {
        self.0.split("://").next().unwrap_or_default()
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str(&self.0);
        };
        // The password sits between the first ':' and the last '@' of the authority.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let rest = match authority.rfind('@') {
            Some(at) => {
                let user = authority[..at].split(':').next().unwrap_or_default();
                let hidden = if authority[..at].contains(':') {
                    ":***"
                } else {
                    ""
                };
                write!(f, "{scheme}://{user}{hidden}@")?;
                &rest[at + 1..]
            }
            None => {
                write!(f, "{scheme}://")?;
                rest
            }
        };
        // libpq takes the password as a parameter too: `?password=...`.
        let Some((path, query)) = rest.split_once('?') else {
            return f.write_str(rest);
        };
        write!(f, "{path}?")?;
        for (index, pair) in query.split('&').enumerate() {
            let separator = if index == 0 { "" } else { "&" };
            match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    write!(f, "{separator}{key}=***")?
                }
                _ => write!(f, "{separator}{pair}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a configuration file's text; `path` only names it in messages.
fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let file: FileConfig = toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map(|span| format!("line {}: ", line_of(text, span.start)))
            .unwrap_or_default();
        invalid(format!("{place}{}", e.message()))
    })?;
    if let Some(limits) = &file.limits {
        limits.get_ref().validate().map_err(|message| {
            invalid(format!(
                "line {}: {message}",
                line_of(text, limits.span().start)
            ))
        })?;
    }
    let mut seen = BTreeMap::new();
    for app in &file.apps {
        let line = line_of(text, app.span().start);
        if let Some(first) = seen.insert(app.get_ref().sdkappid, line) {
            return Err(invalid(format!(
                "line {line}: app {} is already defined at line {first}; each sdkappid may appear once",
                app.get_ref().sdkappid
            )));
        }
        if app.get_ref().secret_key.0.is_empty() {
            return Err(invalid(format!(
                "line {line}: app {} has an empty secret_key",
                app.get_ref().sdkappid
            )));
        }
        app.get_ref().validate_callback().map_err(|message| {
            invalid(format!(
                "line {line}: app {}: {message}",
                app.get_ref().sdkappid
            ))
        })?;
    }
    Ok(file)
}

impl Config {
    /// Resolves the configuration. Apps come from the file; with no file and none there,
    /// the caller creates the development app (see [`load_or_create_dev_app`]).
    pub fn resolve(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut file = match &overrides.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some(parse_file(path, &text)?)
            }
            None => None,
        };
        let listen = overrides
            .listen
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.listen.clone()))
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let data_dir = overrides
            .data_dir
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.data_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut limits = file
            .as_mut()
            .and_then(|f| f.limits.take())
            .map(toml::Spanned::into_inner)
            .unwrap_or_default();
        if let Some(max_connections) = overrides.max_connections {
            limits.max_connections = max_connections;
        }
        if let Some(secs) = overrides.shutdown_timeout_secs {
            limits.shutdown_timeout_secs = secs;
        }
        let from_file = |pick: fn(&FileConfig) -> Option<String>| file.as_ref().and_then(pick);
        let store = overrides
            .store
            .clone()
            .or_else(|| from_file(|f| f.store.clone()))
            .map(BackendUrl::new);
        let store = match store {
            Some(url) if url.scheme() == "sqlite" => None,
            Some(url) if matches!(url.scheme(), "postgres" | "postgresql") => Some(url),
            Some(url) => {
                return Err(ConfigError::Backend {
                    what: "store",
                    url,
                    expected: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, or sqlite:// (the embedded store under data_dir)",
                })
            }
            None => None,
        };
        let bus = overrides
            .bus
            .clone()
            .or_else(|| from_file(|f| f.bus.clone()))
            .map(BackendUrl::new);
        if let Some(url) = bus.as_ref().filter(|url| url.scheme() != "nats") {
            return Err(ConfigError::Backend {
                what: "bus",
                url: url.clone(),
                expected: "nats://HOST[:PORT]",
            });
        }
        let node_id = overrides
            .node_id
            .clone()
            .or_else(|| from_file(|f| f.node_id.clone()));
        let bus_subject_prefix =
            from_file(|f| f.bus_subject_prefix.clone()).unwrap_or_else(|| "crier".to_owned());
        let apps = file
            .map(|f| f.apps.into_iter().map(toml::Spanned::into_inner).collect())
            .unwrap_or_default();
        Ok(Config {
            listen: listen.parse().map_err(|_| ConfigError::Listen(listen))?,
            data_dir,
            store,
            bus,
            node_id,
            bus_subject_prefix,
            apps,
            limits,
        })
    }
}

/// The development app kept in the data directory: read it, or create it on first start.
/// Answers the app and whether it was just created.
pub fn load_or_create_dev_app(data_dir: &Path) -> Result<(AppConfig, bool), ConfigError> {
    let path = data_dir.join(DEV_APP_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut file = parse_file(&path, &text)?;
        if file.apps.len() == 1 {
            return Ok((file.apps.remove(0).into_inner(), false));
        }
        return Err(ConfigError::Invalid {
            path,
            message: "expected exactly one [[app]]".into(),
        });
    }
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let key: String = (0..32)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect();
    let app = AppConfig::new(rng.gen_range(1_400_000_000..1_500_000_000), key);
    let text = toml::to_string(&DevAppFile {
        app: vec![app.clone()],
    })
    .expect("an app serializes");
    let write_error = |source| ConfigError::Read {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(write_error)?;
    write_owner_only(
        &path,
        &format!("# The development app crier created on first start.\n{text}"),
    )
    .map_err(write_error)?;
    Ok((app, true))
}

#[derive(Serialize)]
struct DevAppFile {
    app: Vec<AppConfig>,
}

fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod backend_url_tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = BackendUrl::new("postgres://crier:s3cr@t@db.internal:5432/crier");
        assert_eq!(
            url.to_string(),
            "postgres://crier:***@db.internal:5432/crier"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(
            url.expose(),
            "postgres://crier:s3cr@t@db.internal:5432/crier"
        );
        assert_eq!(
            BackendUrl::new("postgres://postgres@127.0.0.1/db").to_string(),
            "postgres://postgres@127.0.0.1/db"
        );
        assert_eq!(
            BackendUrl::new("nats://127.0.0.1:4222").to_string(),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            BackendUrl::new(
                "postgres://crier@db/crier?sslmode=require&PASSWORD=s3cr@t&sslrootcert=/ca.pem"
            )
            .to_string(),
            "postgres://crier@db/crier?sslmode=require&PASSWORD=***&sslrootcert=/ca.pem"
        );
        assert_eq!(
            BackendUrl::new("postgres://crier:s3cr@t@db/crier?password=s3cr@t").to_string(),
            "postgres://crier:***@db/crier?password=***"
        );
        assert_eq!(
            BackendUrl::new("postgres://db?password=s3cr@t").to_string(),
            "postgres://db?password=***"
        );
    }

    #[test]
    fn store_and_bus_come_from_flags_over_the_file_and_unknown_schemes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crier.toml");
        std::fs::write(
            &file,
            "store = \"postgres://a@h/db\"\nbus = \"nats://h:4222\"\nnode_id = \"n1\"\n",
        )
        .unwrap();
        let mut overrides = Overrides {
            config_file: Some(file),
            ..Overrides::default()
        };
        let config = Config::resolve(&overrides).unwrap();
        assert_eq!(config.store.unwrap().expose(), "postgres://a@h/db");
        assert_eq!(config.bus.unwrap().expose(), "nats://h:4222");
        assert_eq!(config.node_id.as_deref(), Some("n1"));
        overrides.store = Some("sqlite://".into());
        assert!(Config::resolve(&overrides).unwrap().store.is_none());
        overrides.store = Some("mysql://x".into());
        let refused = Config::resolve(&overrides).unwrap_err().to_string();
        assert!(refused.contains("postgres://"), "{refused}");
        overrides.store = None;
        overrides.bus = Some("redis://x".into());
        assert!(Config::resolve(&overrides).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        parse_file(Path::new("crier.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let file = parse("[[app]]\nsdkappid = 1400000001\nsecret_key = \"k\"\n").unwrap();
        let app = file.apps[0].get_ref();
        assert_eq!(
            (
                app.daily_push_quota,
                app.min_push_interval_ms,
                app.push_enabled
            ),
            (100, 1000, true)
        );
        assert_eq!(app.admins, ["administrator"]);
        assert_eq!(format!("{:?}", app.secret_key), "SecretKey(<redacted>)");
    }

    #[test]
    fn refusals_name_the_line() {
        let twice = "[[app]]\nsdkappid = 1\nsecret_key = \"k\"\n\n[[app]]\nsdkappid = 1\nsecret_key = \"j\"\n";
        assert!(
            parse(twice)
                .unwrap_err()
                .contains("line 5: app 1 is already defined at line 1"),
            "{}",
            parse(twice).unwrap_err()
        );
        let missing = "[[app]]\nsdkappid = 1\n";
        assert!(
            parse(missing).unwrap_err().contains("secret_key"),
            "{}",
            parse(missing).unwrap_err()
        );
        let unknown = "[[app]]\nsdkappid = 1\nsecret_key = \"k\"\npush_enable = true\n";
        assert!(
            parse(unknown).unwrap_err().contains("line 4"),
            "{}",
            parse(unknown).unwrap_err()
        );
        assert!(parse("[[app]\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn callback_keys_parse_with_a_redacted_token_and_bad_values_name_the_line() {
        let file = parse("[[app]]\nsdkappid = 1\nsecret_key = \"k\"\n").unwrap();
        let app = file.apps[0].get_ref();
        assert_eq!(
            (app.callback_url.as_deref(), app.callback_qps),
            (None, 1000)
        );
        let file = parse(
            "[[app]]\nsdkappid = 1\nsecret_key = \"k\"\ncallback_url = \"https://app.example.com/cb\"\ncallback_token = \"tok-secret\"\ncallback_qps = 20\n",
        )
        .unwrap();
        let app = file.apps[0].get_ref();
        assert_eq!(
            app.callback_url.as_deref(),
            Some("https://app.example.com/cb")
        );
        assert_eq!(app.callback_qps, 20);
        assert!(!format!("{app:?}").contains("tok-secret"));
        for (line, why) in [
            ("callback_url = \"app.example.com/cb\"", "callback_url"),
            ("callback_url = \"ftp://app.example.com/cb\"", "http://"),
            ("callback_token = \"\"", "callback_token is empty"),
            ("callback_qps = 0", "callback_qps"),
        ] {
            let text = format!("\n[[app]]\nsdkappid = 1\nsecret_key = \"k\"\n{line}\n");
            let refused = parse(&text).unwrap_err();
            assert!(
                refused.contains("line 2") && refused.contains(why),
                "{line}: {refused}"
            );
        }
    }

    #[test]
    fn limits_default_when_absent_and_refuse_what_no_server_could_work_with() {
        let file = parse("[[app]]\nsdkappid = 1\nsecret_key = \"k\"\n").unwrap();
        assert!(file.limits.is_none());
        let file = parse("[limits]\nbody_timeout_secs = 5\n").unwrap();
        let limits = file.limits.unwrap().into_inner();
        assert_eq!(limits.body_timeout_secs, 5);
        assert_eq!(
            limits.header_timeout_secs,
            Limits::default().header_timeout_secs
        );
        let zero = parse("listen = \"127.0.0.1:1\"\n\n[limits]\nheader_timeout_secs = 0\n");
        assert!(zero.as_ref().unwrap_err().contains("line 3"), "{zero:?}");
        let unknown = parse("[limits]\nheader_timeout = 5\n").unwrap_err();
        assert!(unknown.contains("line 2"), "{unknown}");
    }

    #[test]
    fn the_connection_cap_keeps_headroom_below_the_open_file_limit() {
        let limits = Limits::default();
        let cap = limits.connection_cap(Some(20_000));
        assert_eq!(cap, 20_000 - 400 - limits.reserved_connections);
        assert_eq!(limits.connection_cap(Some(1024)), 1024 - 256 - 64);
        let set = Limits {
            max_connections: 100,
            ..Limits::default()
        };
        assert_eq!(set.connection_cap(Some(20_000)), 100);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crier.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            config_file: Some(path),
            listen: Some("127.0.0.1:9001".into()),
            ..Overrides::default()
        };
        let config = Config::resolve(&overrides).unwrap();
        assert_eq!(config.listen.port(), 9001);
        let overrides = Overrides {
            shutdown_timeout_secs: Some(3),
            ..overrides
        };
        assert_eq!(
            Config::resolve(&overrides)
                .unwrap()
                .limits
                .shutdown_timeout_secs,
            3
        );
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
    }

    #[test]
    fn the_dev_app_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_create_dev_app(dir.path()).unwrap();
        let (again, created_again) = load_or_create_dev_app(dir.path()).unwrap();
        assert!(created && !created_again);
        assert_eq!(first, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_APP_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
