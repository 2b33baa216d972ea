//! Local stand-ins for the notification vendors: real servers on `127.0.0.1:0` that speak the
//! vendors' protocol shapes, check credentials as the vendor would, record every request, and
//! answer as scripted per device token.
//!
//! - [`apns::FakeApns`]: HTTP/2 over TLS (a CA made at test time), ES256 provider tokens;
//! - [`fcm::FakeFcm`]: the OAuth2 token endpoint (JWT bearer grant) and `messages:send`;
//! - [`webhook::FakeWebhook`]: checks `X-Crier-Signature`;
//! - [`callback::FakeCallbackReceiver`]: an app server taking `Push.AllMemberPush` callbacks.
//!
//! Common API: `start().await`, `config()` (the provider's config struct), `config_toml()` (the
//! `[app.<provider>]` table, to place after an `[[app]]` table), `requests()`, `count()`,
//! `respond_to(token, answer)` (every time), `respond_once(token, answer)` (next time, before
//! the standing answer), `wait_for(n, timeout)` and `set_recording(false)` (count only, for big
//! runs).
#![allow(dead_code)]

pub mod apns;
pub mod callback;
pub mod fcm;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: String,
    /// Names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The body as JSON, when it is.
    pub json: Option<Value>,
    /// The device token the request is for (`""` when none, e.g. an FCM token request).
    pub token: String,
    /// Whether the credentials checked out: the APNs JWT, the FCM access token or assertion,
    /// the webhook HMAC.
    pub verified: bool,
    /// Why not, when `verified` is false.
    pub rejection: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn is_http2(&self) -> bool {
        self.version == "HTTP/2.0"
    }
}

/// How the fake answers one request: a status, a JSON body, maybe `Retry-After`, maybe late.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub retry_after: Option<u64>,
    pub delay: Option<Duration>,
}

impl Answer {
    /// The vendor's success answer (each fake fills in its usual body).
    pub fn ok() -> Answer {
        Answer::status(200)
    }

    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            body: None,
            retry_after: None,
            delay: None,
        }
    }

    pub fn json(status: u16, body: Value) -> Answer {
        Answer {
            body: Some(body),
            ..Answer::status(status)
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Answer {
        self.retry_after = Some(seconds);
        self
    }

    /// Answer only after `delay` (a slow vendor).
    pub fn delay(mut self, delay: Duration) -> Answer {
        self.delay = Some(delay);
        self
    }
}

/// Scripted answers per device token: one-shot answers first, in order, then the standing one.
#[derive(Debug, Default)]
struct Script {
    once: HashMap<String, VecDeque<Answer>>,
    always: HashMap<String, Answer>,
}

impl Script {
    fn next(&mut self, token: &str) -> Option<Answer> {
        if let Some(queue) = self.once.get_mut(token) {
            if let Some(answer) = queue.pop_front() {
                return Some(answer);
            }
        }
        self.always.get(token).cloned()
    }
}

/// What every fake keeps: the requests, their count (watchable), the script.
pub struct Recorder {
    requests: Mutex<Vec<Recorded>>,
    count: watch::Sender<usize>,
    recording: AtomicBool,
    script: Mutex<Script>,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            recording: AtomicBool::new(true),
            script: Mutex::new(Script::default()),
        })
    }

    fn record(&self, request: Recorded) {
        if self.recording.load(Ordering::Relaxed) {
            self.requests.lock().push(request);
        }
        self.count.send_modify(|count| *count += 1);
    }

    fn answer_for(&self, token: &str) -> Option<Answer> {
        self.script.lock().next(token)
    }

    pub fn respond_to(&self, token: &str, answer: Answer) {
        self.script.lock().always.insert(token.to_owned(), answer);
    }

    pub fn respond_once(&self, token: &str, answer: Answer) {
        self.script
            .lock()
            .once
            .entry(token.to_owned())
            .or_default()
            .push_back(answer);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }

    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    pub fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Waits until `n` requests have arrived in all (recorded or not); panics after `timeout`.
    pub async fn wait_for_named(&self, what: &str, n: usize, timeout: Duration) -> Vec<Recorded> {
        let mut count = self.count.subscribe();
        let reached = tokio::time::timeout(timeout, count.wait_for(|count| *count >= n)).await;
        if reached.is_err() {
            let got: Vec<String> = self
                .requests()
                .iter()
                .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
                .collect();
            panic!(
                "{what}: {n} requests expected within {timeout:?}, {} arrived: {got:#?}",
                self.count()
            );
        }
        self.requests()
    }
}

/// The parts of a request a fake's handler looks at.
pub(crate) struct Received {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The record of this request, to be completed by the handler.
    pub fn recorded(&self, token: &str, status: u16) -> Recorded {
        Recorded {
            method: self.method.clone(),
            path: self.path.clone(),
            version: self.version.clone(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            json: self.json(),
            token: token.to_owned(),
            verified: false,
            rejection: None,
            status,
        }
    }
}

/// A handler's reply.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn new(status: u16, body: Option<Value>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            delay: None,
        }
    }

    /// The scripted answer, with `default_body` when the script gave none.
    pub fn from_answer(answer: &Answer, default_body: Option<Value>) -> Reply {
        let mut reply = Reply::new(answer.status, answer.body.clone().or(default_body));
        if let Some(seconds) = answer.retry_after {
            reply.headers.push(("retry-after", seconds.to_string()));
        }
        reply.delay = answer.delay;
        reply
    }
}

pub(crate) type Handler = Arc<dyn Fn(Received) -> Reply + Send + Sync>;

/// A server on 127.0.0.1:0, HTTP/1.1 and HTTP/2 (over TLS when `tls` is given, where ALPN
/// offers both); dropping it stops the server and its connections.
pub(crate) struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_connection(TokioIo::new(stream), handler).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(stream), handler).await,
                    }
                });
                // Reap finished connections so a long run does not keep them all.
                while connections.try_join_next().is_some() {}
            }
        });
        Server { addr, task }
    }
}

async fn serve_connection<I>(io: I, handler: Handler)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handle(request, handler).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

async fn handle(request: Request<Incoming>, handler: Handler) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let incoming = Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let reply = handler(incoming);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    let body = match &reply.body {
        Some(body) => {
            response = response.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    response.body(Full::new(body)).unwrap()
}

/// `application/x-www-form-urlencoded` pairs.
pub(crate) fn form_pairs(body: &[u8]) -> HashMap<String, String> {
    let mut url = reqwest::Url::parse("http://form.invalid/").unwrap();
    url.set_query(Some(&String::from_utf8_lossy(body)));
    url.query_pairs().into_owned().collect()
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
