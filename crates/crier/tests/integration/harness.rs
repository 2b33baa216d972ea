//! A real Crier server on 127.0.0.1:0 with its own temporary data directory, and a client that
//! signs admin calls the way Tencent's SDKs do.

use std::sync::Arc;

use crier::config::{AppConfig, Limits};
use crier::server::{serve, AppState};
use crier::store::Store;
use crier_client::LoginOptions;
use crier_proto::usersig;
use serde_json::Value;
use tokio::sync::oneshot;

pub const APP: u64 = 1_400_000_001;
pub const OTHER_APP: u64 = 1_400_000_002;
pub const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
pub const OTHER_KEY: &str = "another app's key";
pub const ADMIN: &str = "administrator";

pub fn app_config(sdkappid: u64, key: &str) -> AppConfig {
    AppConfig {
        admins: vec![ADMIN.into()],
        daily_push_quota: 100,
        // Tests push back to back; the interval has its own test.
        min_push_interval_ms: 0,
        ..AppConfig::new(sdkappid, key)
    }
}

pub fn default_apps() -> Vec<AppConfig> {
    vec![app_config(APP, KEY), app_config(OTHER_APP, OTHER_KEY)]
}

pub struct TestServer {
    pub base: String,
    /// The server's shared state, for the fault hooks of the tests that need one.
    pub state: Arc<AppState>,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(default_apps()).await
    }

    pub async fn start_with(apps: Vec<AppConfig>) -> TestServer {
        Self::start_in(tempfile::tempdir().unwrap(), apps).await
    }

    /// Starts on an existing data directory (a restart).
    pub async fn start_in(data_dir: tempfile::TempDir, apps: Vec<AppConfig>) -> TestServer {
        Self::start_limited(data_dir, apps, Limits::default()).await
    }

    /// Starts with `limits` instead of the defaults.
    pub async fn start_limited(
        data_dir: tempfile::TempDir,
        apps: Vec<AppConfig>,
        limits: Limits,
    ) -> TestServer {
        let path = data_dir.path().to_owned();
        let state = tokio::task::spawn_blocking(move || AppState::open(&path, apps))
            .await
            .unwrap()
            .unwrap()
            .with_limits(limits);
        Self::serve_state(data_dir, state).await
    }

    /// Starts on `store` (for example one that fails on purpose) in a new data directory.
    pub async fn start_on_store(store: Arc<dyn Store>, apps: Vec<AppConfig>) -> TestServer {
        let state = tokio::task::spawn_blocking(move || AppState::with_store(store, apps))
            .await
            .unwrap()
            .unwrap();
        Self::serve_state(tempfile::tempdir().unwrap(), state).await
    }

    /// Starts a node on the store and bus `config` names (a cluster node, for example).
    pub async fn start_node(config: crier::config::Config) -> TestServer {
        let state = crier::server::open_state(&config).await.unwrap();
        Self::serve_state(tempfile::tempdir().unwrap(), state).await
    }

    async fn serve_state(data_dir: tempfile::TempDir, state: AppState) -> TestServer {
        let state = Arc::new(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = signal.await;
        }));
        TestServer {
            base,
            state,
            data_dir,
            shutdown: Some(shutdown),
            task: Some(task),
            http: reqwest::Client::new(),
        }
    }

    /// Stops gracefully and hands back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
        self.data_dir
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// How `identifier` of the test app logs in to this server's WebSocket.
    pub fn login_options(&self, identifier: &str) -> LoginOptions {
        login_options_at(&self.base, identifier)
    }

    pub fn admin(&self) -> Admin<'_> {
        self.admin_of(APP, KEY, ADMIN)
    }

    pub fn admin_of<'a>(&'a self, sdkappid: u64, key: &str, identifier: &str) -> Admin<'a> {
        let sig = usersig::sign(sdkappid, key, identifier, 86_400, crier::clock::now_secs());
        Admin { server: self, query: format!("sdkappid={sdkappid}&identifier={identifier}&usersig={sig}&random=99&contenttype=json") }
    }

    /// POSTs `body` as-is to `/v4/{path}?{query}` and returns the parsed envelope.
    pub async fn post_raw(&self, path: &str, query: &str, body: impl Into<reqwest::Body>) -> Value {
        let response = self
            .http
            .post(format!("{}/v4/{path}?{query}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "every answer is HTTP 200");
        response.json().await.unwrap()
    }
}

pub struct Admin<'a> {
    pub server: &'a TestServer,
    pub query: String,
}

impl Admin<'_> {
    pub async fn call(&self, path: &str, body: Value) -> Value {
        self.server
            .post_raw(path, &self.query, body.to_string())
            .await
    }

    /// Calls and asserts success.
    pub async fn ok(&self, path: &str, body: Value) -> Value {
        let answer = self.call(path, body).await;
        assert_eq!(answer["ActionStatus"], "OK", "{path}: {answer}");
        assert_eq!(answer["ErrorCode"], 0);
        assert_eq!(answer["ErrorInfo"], "");
        answer
    }

    /// Calls and asserts failure with `code` and a non-empty ErrorInfo.
    pub async fn fails(&self, path: &str, body: Value, code: u32) -> Value {
        let answer = self.call(path, body).await;
        assert_eq!(answer["ActionStatus"], "FAIL", "{path}: {answer}");
        assert_eq!(answer["ErrorCode"], code, "{path}: {answer}");
        assert!(!answer["ErrorInfo"].as_str().unwrap().is_empty());
        answer
    }

    /// Pushes `body`, asserting it is accepted; answers its TaskId.
    pub async fn push(&self, body: Value) -> String {
        self.ok("all_member_push/im_push", body).await["TaskId"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn import(&self, accounts: &[&str]) {
        self.ok(
            "im_open_login_svc/multiaccount_import",
            serde_json::json!({ "Accounts": accounts }),
        )
        .await;
    }

    pub async fn tags_of(&self, account: &str) -> Value {
        self.ok(
            "all_member_push/im_get_tag",
            serde_json::json!({"To_Account": [account]}),
        )
        .await["UserTags"][0]["Tags"]
            .clone()
    }
}

/// How `identifier` of the test app logs in to the WebSocket of the server at `base` (the
/// platform left to the server's default).
pub fn login_options_at(base: &str, identifier: &str) -> LoginOptions {
    LoginOptions {
        url: format!("{}/v4/ws", base.replace("http://", "ws://")),
        sdkappid: APP,
        identifier: identifier.into(),
        user_sig: usersig::sign(APP, KEY, identifier, 3_600, crier::clock::now_secs()),
        platform: None,
    }
}

/// A text message body, as in Tencent's examples.
pub fn text_push(msg_random: u32, text: &str) -> Value {
    serde_json::json!({
        "MsgRandom": msg_random,
        "MsgLifeTime": 120,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]
    })
}
