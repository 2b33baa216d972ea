//! A fake FCM HTTP v1 over plain HTTP: the OAuth2 token endpoint (`POST /token`, JWT bearer
//! grant, the RS256 assertion checked against the fixture's public key) and `POST
//! /v1/projects/<project>/messages:send` (the bearer must be a token it issued and has not
//! revoked; 401 `UNAUTHENTICATED` otherwise, as Google answers).
//!
//! The service account is the committed test-only fixture
//! `tests/fixtures/notify/fcm-service-account.json`, copied with `token_uri` pointing here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier::notify::fcm::{FcmConfig, GRANT_TYPE, SCOPE};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{form_pairs, Answer, Received, Recorded, Recorder, Reply, Server};

pub const PROJECT_ID: &str = "crier-test";
pub const CLIENT_EMAIL: &str = "crier-test@crier-test.iam.gserviceaccount.com";
const SERVICE_ACCOUNT: &str = include_str!("../../fixtures/notify/fcm-service-account.json");
const PUBLIC_KEY: &str = include_str!("../../fixtures/notify/fcm-test-key.pub.pem");

/// 404 `NOT_FOUND` with `errorCode: UNREGISTERED`, as FCM answers for a token that is gone.
pub fn unregistered() -> Answer {
    error(404, "NOT_FOUND", Some("UNREGISTERED"))
}

/// A Google API error body, with an FCM `errorCode` detail when given.
pub fn error(status: u16, status_name: &str, error_code: Option<&str>) -> Answer {
    let details: Vec<Value> = error_code
        .map(|code| {
            json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                   "errorCode": code})
        })
        .into_iter()
        .collect();
    Answer::json(
        status,
        json!({"error": {"code": status, "message": format!("fake FCM says {status_name}"),
                         "status": status_name, "details": details}}),
    )
}

struct Tokens {
    issued: AtomicU64,
    valid: Mutex<HashSet<String>>,
    /// Lifetime announced in `expires_in`.
    expires_in: AtomicU64,
}

pub struct FakeFcm {
    sends: Arc<Recorder>,
    token_requests: Arc<Recorder>,
    tokens: Arc<Tokens>,
    server: Server,
    config: FcmConfig,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for FakeFcm {
    type Target = Recorder;

    /// The `messages:send` requests.
    fn deref(&self) -> &Recorder {
        &self.sends
    }
}

impl FakeFcm {
    pub async fn start() -> FakeFcm {
        let sends = Recorder::new();
        let token_requests = Recorder::new();
        let tokens = Arc::new(Tokens {
            issued: AtomicU64::new(0),
            valid: Mutex::new(HashSet::new()),
            expires_in: AtomicU64::new(3599),
        });
        let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        // The token endpoint's URL is the assertion's audience, known once the port is.
        let audience = Arc::new(Mutex::new(String::new()));
        let handler = {
            let (sends, token_requests, tokens, audience) = (
                sends.clone(),
                token_requests.clone(),
                tokens.clone(),
                audience.clone(),
            );
            Arc::new(move |request: Received| {
                if request.path.split('?').next() == Some("/token") {
                    token_endpoint(&token_requests, &tokens, &key, &audience.lock(), request)
                } else {
                    send_endpoint(&sends, &tokens, request)
                }
            })
        };
        let server = Server::start(None, handler).await;
        let base = format!("http://127.0.0.1:{}", server.addr.port());
        let token_uri = format!("{base}/token");
        audience.lock().clone_from(&token_uri);

        let dir = tempfile::tempdir().unwrap();
        let mut account: Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
        account["token_uri"] = json!(token_uri);
        let service_account_file = dir.path().join("service-account.json");
        std::fs::write(&service_account_file, account.to_string()).unwrap();
        let config = FcmConfig {
            service_account_file,
            endpoint: base,
            token_uri: None,
            ca_file: None,
            rate_per_sec: None,
        };
        FakeFcm {
            sends,
            token_requests,
            tokens,
            server,
            config,
            _dir: dir,
        }
    }

    pub fn config(&self) -> FcmConfig {
        self.config.clone()
    }

    /// `[app.fcm]` and its keys, for a config file (after the `[[app]]` it belongs to).
    pub fn config_toml(&self) -> String {
        format!("[app.fcm]\n{}", toml::to_string(&self.config).unwrap())
    }

    /// Waits until `n` sends have arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.sends
            .wait_for_named("fake FCM sends", n, timeout)
            .await
    }

    /// The requests to the token endpoint.
    pub fn token_requests(&self) -> Vec<Recorded> {
        self.token_requests.requests()
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens.issued.load(Ordering::Relaxed)
    }

    /// Makes every access token issued so far invalid (sends with them get 401).
    pub fn revoke_tokens(&self) {
        self.tokens.valid.lock().clear();
    }

    /// The `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.tokens.expires_in.store(seconds, Ordering::Relaxed);
    }
}

fn check_assertion(
    key: &DecodingKey,
    audience: &str,
    form: &std::collections::HashMap<String, String>,
) -> Result<(), String> {
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return Err(format!("grant_type is {:?}", form.get("grant_type")));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_audience(&[audience]);
    let token = jsonwebtoken::decode::<Value>(assertion, key, &validation)
        .map_err(|error| format!("assertion does not verify: {error}"))?;
    if token.claims["scope"] != SCOPE {
        return Err(format!("scope is {}", token.claims["scope"]));
    }
    let (iat, exp) = (&token.claims["iat"], &token.claims["exp"]);
    match (iat.as_u64(), exp.as_u64()) {
        (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600 => Ok(()),
        _ => Err(format!(
            "iat {iat} and exp {exp} are not a lifetime of at most an hour"
        )),
    }
}

fn token_endpoint(
    recorder: &Recorder,
    tokens: &Tokens,
    key: &DecodingKey,
    audience: &str,
    request: Received,
) -> Reply {
    let form = form_pairs(&request.body);
    let checked = if request.method != "POST" {
        Err(format!("method {}", request.method))
    } else {
        check_assertion(key, audience, &form)
    };
    let mut recorded = request.recorded("", 200);
    match checked {
        Ok(()) => {
            let n = tokens.issued.fetch_add(1, Ordering::Relaxed) + 1;
            let token = format!("ya29.fake-access-token-{n}");
            tokens.valid.lock().insert(token.clone());
            recorded.verified = true;
            recorder.record(recorded);
            Reply::new(
                200,
                Some(json!({"access_token": token,
                            "expires_in": tokens.expires_in.load(Ordering::Relaxed),
                            "token_type": "Bearer"})),
            )
        }
        Err(why) => {
            recorded.status = 400;
            recorded.rejection = Some(why.clone());
            recorder.record(recorded);
            Reply::new(
                400,
                Some(json!({"error": "invalid_grant", "error_description": why})),
            )
        }
    }
}

fn send_endpoint(recorder: &Recorder, tokens: &Tokens, request: Received) -> Reply {
    let json = request.json();
    let device = json
        .as_ref()
        .and_then(|body| body["message"]["token"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut recorded = request.recorded(&device, 200);
    let expected_path = format!("/v1/projects/{PROJECT_ID}/messages:send");
    if request.method != "POST" || request.path != expected_path {
        recorded.status = 404;
        recorder.record(recorded);
        return error(404, "NOT_FOUND", None).into_reply();
    }
    let bearer = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("Bearer "));
    if !bearer.is_some_and(|token| tokens.valid.lock().contains(token)) {
        recorded.status = 401;
        recorded.rejection = Some(format!("bearer {bearer:?} is not a valid access token"));
        recorder.record(recorded);
        return error(401, "UNAUTHENTICATED", None).into_reply();
    }
    recorded.verified = true;
    if device.is_empty() {
        recorded.status = 400;
        recorder.record(recorded);
        return error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")).into_reply();
    }
    let answer = recorder.answer_for(&device).unwrap_or_else(Answer::ok);
    recorded.status = answer.status;
    recorder.record(recorded);
    let name = format!("projects/{PROJECT_ID}/messages/{}", recorder.count());
    let success = (answer.status == 200).then(|| json!({ "name": name }));
    Reply::from_answer(&answer, success)
}

impl Answer {
    fn into_reply(self) -> Reply {
        Reply::from_answer(&self, None)
    }
}
