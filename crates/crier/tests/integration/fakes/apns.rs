//! A fake APNs: HTTP/2 over TLS with a certificate from a CA made at start, `POST
//! /3/device/<token>`, provider tokens (ES256 JWT) checked against the public half of a `.p8`
//! key also made at start. Like Apple it answers 403 to a bad token and 400 to a wrong topic or
//! push type; on HTTP/1.1 (which Apple does not speak) it answers 400 `BadHttpVersion`.

use std::sync::Arc;
use std::time::Duration;

use crier::notify::apns::ApnsConfig;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use tokio_rustls::rustls;

use super::{now_secs, Answer, Received, Recorded, Recorder, Reply, Server};

pub const KEY_ID: &str = "CRIERKEY01";
pub const TEAM_ID: &str = "CRIERTEAM1";
pub const TOPIC: &str = "com.example.crier";

/// 410 `Unregistered`, as Apple answers for an uninstalled app.
pub fn unregistered() -> Answer {
    Answer::json(
        410,
        json!({"reason": "Unregistered", "timestamp": now_secs() * 1000}),
    )
}

/// An error answer with Apple's `{"reason": ...}` body.
pub fn reason(status: u16, reason: &str) -> Answer {
    Answer::json(status, json!({ "reason": reason }))
}

pub struct FakeApns {
    recorder: Arc<Recorder>,
    server: Server,
    config: ApnsConfig,
    /// Holds the CA certificate and the `.p8` key for as long as the fake lives.
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for FakeApns {
    type Target = Recorder;

    fn deref(&self) -> &Recorder {
        &self.recorder
    }
}

impl FakeApns {
    pub async fn start() -> FakeApns {
        let dir = tempfile::tempdir().unwrap();

        // The CA the client is told to trust, and the server's certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Crier fake APNs CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let mut server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let server_cert = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("fake-apns-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        // The team's signing key, as Apple hands it out: PKCS#8 PEM, EC P-256.
        let signing_key = rcgen::KeyPair::generate().unwrap();
        let key_file = dir.path().join(format!("AuthKey_{KEY_ID}.p8"));
        std::fs::write(&key_file, signing_key.serialize_pem()).unwrap();
        let verifying_key = DecodingKey::from_ec_pem(signing_key.public_key_pem().as_bytes())
            .expect("the public key of the .p8");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .unwrap();
        // Offer HTTP/1.1 too, so that a client that does not ask for h2 is seen (and refused)
        // rather than failing the handshake.
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let recorder = Recorder::new();
        let handler_recorder = recorder.clone();
        let server = Server::start(
            Some(Arc::new(tls)),
            Arc::new(move |request| handle(&handler_recorder, &verifying_key, request)),
        )
        .await;
        let config = ApnsConfig {
            key_file,
            key_id: KEY_ID.to_owned(),
            team_id: TEAM_ID.to_owned(),
            topic: TOPIC.to_owned(),
            endpoint: format!("https://127.0.0.1:{}", server.addr.port()),
            ca_file: Some(ca_file),
            rate_per_sec: None,
        };
        FakeApns {
            recorder,
            server,
            config,
            _dir: dir,
        }
    }

    /// The provider config that points at this fake and trusts its CA.
    pub fn config(&self) -> ApnsConfig {
        self.config.clone()
    }

    /// `[app.apns]` and its keys, for a config file (after the `[[app]]` it belongs to).
    pub fn config_toml(&self) -> String {
        format!("[app.apns]\n{}", toml::to_string(&self.config).unwrap())
    }

    pub fn url(&self) -> String {
        self.config.endpoint.clone()
    }

    /// Waits until `n` requests have arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.recorder.wait_for_named("fake APNs", n, timeout).await
    }
}

/// The bearer JWT of a recorded request.
pub fn jwt(request: &Recorded) -> Option<&str> {
    request.header("authorization")?.strip_prefix("bearer ")
}

/// Checks a provider token as Apple does: ES256 by the team's key, `kid`, `iss`, a recent `iat`.
fn check_jwt(key: &DecodingKey, authorization: Option<&str>) -> Result<(), String> {
    let jwt = authorization
        .and_then(|value| value.strip_prefix("bearer "))
        .ok_or("no bearer authorization")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.set_issuer(&[TEAM_ID]);
    let token = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|error| format!("JWT does not verify: {error}"))?;
    if token.header.kid.as_deref() != Some(KEY_ID) {
        return Err(format!("JWT kid is {:?}", token.header.kid));
    }
    let iat = token.claims["iat"].as_u64().ok_or("JWT has no iat")?;
    let now = now_secs();
    if iat + 3600 < now || iat > now + 60 {
        return Err(format!("JWT iat {iat} is not recent (now {now})"));
    }
    Ok(())
}

fn handle(recorder: &Recorder, key: &DecodingKey, request: Received) -> Reply {
    let token = request
        .path
        .strip_prefix("/3/device/")
        .unwrap_or_default()
        .to_owned();
    let refuse = |status: u16, reason: &str, rejection: Option<String>| {
        let mut recorded = request.recorded(&token, status);
        recorded.rejection = rejection;
        recorder.record(recorded);
        Reply::new(status, Some(json!({ "reason": reason })))
    };
    if request.version != "HTTP/2.0" {
        return refuse(
            400,
            "BadHttpVersion",
            Some(format!("{} instead of HTTP/2", request.version)),
        );
    }
    if request.method != "POST" {
        return refuse(405, "MethodNotAllowed", None);
    }
    if token.is_empty() {
        return refuse(404, "BadPath", None);
    }
    if let Err(why) = check_jwt(key, request.header("authorization")) {
        return refuse(403, "InvalidProviderToken", Some(why));
    }
    let mut recorded = request.recorded(&token, 200);
    recorded.verified = true;
    let bad_request = if request.header("apns-topic") != Some(TOPIC) {
        Some("TopicDisallowed")
    } else if request.header("apns-push-type") != Some("alert") {
        Some("InvalidPushType")
    } else if recorded
        .json
        .as_ref()
        .and_then(|payload| payload.get("aps"))
        .is_none()
    {
        Some("PayloadEmpty")
    } else {
        None
    };
    if let Some(reason) = bad_request {
        recorded.status = 400;
        recorder.record(recorded);
        return Reply::new(400, Some(json!({ "reason": reason })));
    }
    let answer = recorder.answer_for(&token).unwrap_or_else(Answer::ok);
    recorded.status = answer.status;
    recorder.record(recorded);
    let mut reply = Reply::from_answer(&answer, None);
    reply.headers.push((
        "apns-id",
        format!("00000000-0000-0000-0000-{:012}", recorder.count()),
    ));
    reply
}
