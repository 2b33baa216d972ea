//! What a hostile client can do to the server's edge, and what it gets: stalled headers and
//! bodies and idle connections are closed after their timeouts, an unauthenticated body is
//! never read, request bodies share a budget, the connection cap keeps a reserve for health
//! checks and admin calls, and SIGTERM finishes within its deadline whatever clients do.

use std::time::{Duration, Instant};

use crier::config::Limits;
use crier_proto::usersig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::process::*;

const MIB: u64 = 1024 * 1024;

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

fn signed_query() -> String {
    let sig = usersig::sign(APP, KEY, ADMIN, 600, crier::clock::now_secs());
    format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json")
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(addr_of(base)).await.unwrap()
}

/// A signed `im_add_tag` that declares `declared` body bytes, sends `sent` and stalls.
async fn stalled_signed_body(base: &str, declared: usize, sent: &[u8]) -> TcpStream {
    let mut stream = connect(base).await;
    let head = format!(
        "POST /v4/all_member_push/im_add_tag?{} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n",
        signed_query()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

/// Calls `im_get_attr_name` every 20 ms, up to `tries` times, until it answers `code`;
/// answers the last envelope.
async fn call_until(server: &TestServer, code: u32, tries: usize) -> Value {
    let mut answer = Value::Null;
    for _ in 0..tries {
        answer = server
            .admin()
            .call("all_member_push/im_get_attr_name", json!({}))
            .await;
        if answer["ErrorCode"] == code {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answer
}

/// Reads until the server closes; answers how long that took, or `None` if it did not
/// within `limit`, and what it sent.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()?;
    Some((started.elapsed(), got))
}

/// The JSON envelope at the end of a raw HTTP/1.1 answer.
fn envelope(raw: &[u8]) -> Value {
    let text = String::from_utf8_lossy(raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("no envelope ({e}) in {text:?}"))
}

fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

async fn start(limits: Limits) -> TestServer {
    TestServer::start_limited(tempfile::tempdir().unwrap(), default_apps(), limits).await
}

fn refusals(metrics: &str, kind: &str) -> u64 {
    let prefix = format!("crier_refusals_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in metrics"))
}

#[tokio::test]
async fn partial_headers_and_idle_connections_are_closed_after_their_timeouts() {
    let server = start(limits(|l| {
        l.header_timeout_secs = 1;
        l.idle_timeout_secs = 2;
    }))
    .await;
    let mut slowloris = connect(&server.base).await;
    slowloris
        .write_all(b"POST /v4/all_member_push/im_get_tag HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = connect(&server.base).await;

    let (took, _) = closed_within(&mut slowloris, Duration::from_secs(20))
        .await
        .expect("a connection stuck in its headers is closed");
    println!("partial headers closed after {took:?} (header timeout 1 s)");
    let (took, _) = closed_within(&mut silent, Duration::from_secs(20))
        .await
        .expect("a connection that never sends is closed");
    println!("silent connection closed after {took:?} (idle timeout 2 s)");
    let metrics = server.metrics().await;
    assert!(refusals(&metrics, "header_timeout") >= 1, "{metrics}");
    assert!(refusals(&metrics, "idle") >= 1, "{metrics}");
    // An honest client on the same server is served as before.
    server
        .admin()
        .ok("all_member_push/im_get_attr_name", json!({}))
        .await;
}

#[tokio::test]
async fn a_stalled_body_is_answered_and_closed_after_the_body_timeout() {
    let server = start(limits(|l| l.body_timeout_secs = 1)).await;
    let mut stalled = stalled_signed_body(&server.base, 1000, b"{\"UserTags\":").await;
    let (_, answer) = closed_within(&mut stalled, Duration::from_secs(20))
        .await
        .expect("a stalled body ends the request and the connection");
    let answer = envelope(&answer);
    assert_eq!(answer["ErrorCode"], 90001, "{answer}");
    assert!(
        answer["ErrorInfo"]
            .as_str()
            .unwrap()
            .contains("did not arrive within 1 seconds"),
        "{answer}"
    );
    assert!(refusals(&server.metrics().await, "body_timeout") >= 1);
}

#[tokio::test]
async fn an_unauthenticated_body_is_refused_before_a_byte_of_it_is_read() {
    let server = start(Limits::default()).await;
    for (query, code) in [
        (
            format!("sdkappid={APP}&identifier={ADMIN}&usersig=forged&random=1"),
            70003,
        ),
        (format!("sdkappid={APP}&identifier={ADMIN}&random=1"), 70002),
        ("identifier=x".to_owned(), 60012),
    ] {
        let mut client = connect(&server.base).await;
        // A whole megabyte declared, none of it sent: the answer must not wait for it.
        let head = format!(
            "POST /v4/all_member_push/im_add_tag?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048000\r\n\r\n"
        );
        client.write_all(head.as_bytes()).await.unwrap();
        let (_, answer) = closed_within(&mut client, Duration::from_secs(5))
            .await
            .expect("answered and closed without the body");
        assert_eq!(envelope(&answer)["ErrorCode"], code, "{query}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_is_reported_as_unreadable_not_as_too_large() {
    let server = start(Limits::default()).await;
    let mut client = connect(&server.base).await;
    let request = format!(
        "POST /v4/all_member_push/im_get_tag?{} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n{{}}\r\n0\r\n\r\n",
        signed_query()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let (_, answer) = closed_within(&mut client, Duration::from_secs(5))
        .await
        .unwrap();
    let answer = envelope(&answer);
    assert_eq!(answer["ErrorCode"], 90001, "{answer}");
    let info = answer["ErrorInfo"].as_str().unwrap();
    assert!(info.contains("could not be read"), "{info}");
    assert!(!info.contains("larger than"), "{info}");
}

#[tokio::test]
async fn bodies_share_a_budget_and_the_excess_is_shed_with_an_envelope() {
    let server = start(limits(|l| {
        l.request_body_budget_bytes = crier::api::MAX_BODY_BYTES;
        l.body_timeout_secs = 30;
    }))
    .await;
    // One signed call sends all but the last byte of the largest body and stalls: what it
    // sent holds the budget.
    let largest = crier::api::MAX_BODY_BYTES;
    let hog = stalled_signed_body(&server.base, largest, &vec![b' '; largest - 1]).await;
    let shed = call_until(&server, 91000, 100).await;
    assert_eq!(shed["ErrorCode"], 91000, "{shed}");
    assert!(shed["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("too many request bodies"));
    assert!(refusals(&server.metrics().await, "body_budget") >= 1);

    // A body that declares a megabyte and sends little holds only what it sent: it does not
    // starve the calls behind it (at this budget, one declared megabyte would).
    let declarer = stalled_signed_body(&server.base, largest, b"{").await;
    drop(hog);
    let answer = call_until(&server, 0, 250).await;
    assert_eq!(answer["ErrorCode"], 0, "{answer}");
    drop(declarer);
}

#[tokio::test]
async fn the_budget_comes_back_when_a_stalled_body_leaves() {
    let server = start(limits(|l| {
        l.request_body_budget_bytes = crier::api::MAX_BODY_BYTES;
    }))
    .await;
    let largest = crier::api::MAX_BODY_BYTES;
    let hog = stalled_signed_body(&server.base, largest, &vec![b' '; largest - 1]).await;
    let shed = call_until(&server, 91000, 100).await;
    assert_eq!(shed["ErrorCode"], 91000, "{shed}");

    // When the hog goes, its share comes back.
    drop(hog);
    let answer = call_until(&server, 0, 250).await;
    assert_eq!(answer["ErrorCode"], 0, "{answer}");
}

#[tokio::test]
async fn at_the_connection_cap_clients_are_refused_fast_and_the_reserve_serves_health_and_admin() {
    let server = start(limits(|l| {
        l.max_connections = 8;
        l.reserved_connections = 2;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect(&server.base).await);
    }
    let mut reserve = vec![connect(&server.base).await, connect(&server.base).await];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = connect(&server.base).await;
    let (took, _) = closed_within(&mut refused, Duration::from_secs(2))
        .await
        .expect("past the cap and its reserve, a connection is closed at once");
    println!("over the cap: closed after {took:?}");

    // The reserve is for a quick look: idle reserve connections go in seconds.
    for conn in &mut reserve {
        closed_within(conn, Duration::from_secs(20))
            .await
            .expect("an idle reserve connection is closed");
    }
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server
        .admin()
        .ok("all_member_push/im_get_attr_name", json!({}))
        .await;
    let refused_session = tokio_tungstenite::connect_async(format!(
        "{}/v4/ws",
        server.base.replace("http://", "ws://")
    ))
    .await;
    match refused_session {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("a WebSocket in the reserve must be refused, got {other:?}"),
    }
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(refusals(&metrics, "connection_cap") >= 1, "{metrics}");
    assert!(refusals(&metrics, "reserve_only") >= 1, "{metrics}");
    // The connections under the cap were never disturbed.
    for conn in &mut held {
        let mut byte = [0u8; 1];
        let still_open =
            tokio::time::timeout(Duration::from_millis(10), conn.read(&mut byte)).await;
        assert!(still_open.is_err(), "a connection under the cap was closed");
    }
}

fn config_with_limits(dir: &std::path::Path, limits: &str) -> std::path::PathBuf {
    let path = dir.join("crier.toml");
    let text = format!(
        "[limits]\n{limits}\n\n[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_stalled_clients_stops_within_its_deadline_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The body timeout is far past the deadline: only the deadline can end the stalled body.
    let config = config_with_limits(
        dir.path(),
        "body_timeout_secs = 300\nheader_timeout_secs = 300",
    );
    let server = ServerProcess::start_with(&config, &data, &["--shutdown-timeout", "2"]);
    admin_ok(
        &server.base,
        "im_open_login_svc/multiaccount_import",
        json!({"Accounts": ["ann", "bob"]}),
    )
    .await;
    admin_ok(
        &server.base,
        "all_member_push/im_add_tag",
        json!({"UserTags": [{"To_Account": "ann", "Tags": ["kept"]}]}),
    )
    .await;
    let _stalled_body = stalled_signed_body(&server.base, 1000, b"{").await;
    let mut mid_headers = connect(&server.base).await;
    mid_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHos")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    println!(
        "stopped {:?} after SIGTERM (deadline 2 s)",
        started.elapsed()
    );
    assert!(status.success(), "{status}");

    let server = ServerProcess::start(&config, &data);
    let tags = admin_ok(
        &server.base,
        "all_member_push/im_get_tag",
        json!({"To_Account": ["ann"]}),
    )
    .await;
    assert_eq!(tags["UserTags"][0]["Tags"], json!(["kept"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_unauthenticated_megabyte_bodies_do_not_grow_the_server() {
    const CLIENTS: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config, &data);
    let pid = server.pid();
    let before = rss_bytes(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    static BODY: [u8; 1_040_000] = [b' '; 1_040_000];
    let base = server.base.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let Ok(mut client) = TcpStream::connect(addr_of(&base)).await else {
                    return;
                };
                let head = format!(
                    "POST /v4/all_member_push/im_add_tag?sdkappid={APP}&identifier={ADMIN}&usersig=eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__&random=1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    BODY.len()
                );
                if client.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                // Send what the server takes of the megabyte, then stall until it closes.
                let _ = tokio::time::timeout(Duration::from_secs(5), client.write_all(&BODY)).await;
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    while let Ok(n) = client.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    // Over HTTP/2 (h2c), one connection: 200 streams of unauthenticated megabytes.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let streams: Vec<_> = (0..200)
        .map(|_| {
            let request = h2
                .post(format!(
                    "{base}/v4/all_member_push/im_add_tag?sdkappid={APP}&identifier={ADMIN}&usersig=forged"
                ))
                .body(&BODY[..])
                .send();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), request).await;
            })
        })
        .collect();
    for stream in streams {
        stream.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let after = rss_bytes(pid);
    println!(
        "server RSS with {CLIENTS} unauthenticated ~1 MiB bodies over HTTP/1.1 and 200 over one HTTP/2 connection: before {} MiB, peak {} MiB, after {} MiB",
        before / MIB,
        peak / MIB,
        after / MIB
    );
    assert!(
        peak.saturating_sub(before) < 200 * MIB,
        "the server grew by {} MiB",
        (peak - before) / MIB
    );
    server.kill_9();
}
