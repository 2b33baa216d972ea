//! The gateway against hostile or careless clients: many sessions that never read a kept
//! backlog, frames that break the WebSocket protocol, an account registering devices without
//! end.

use std::time::Duration;

use crier_client::{Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use crier_proto::usersig;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::process::*;

fn user_sig(identifier: &str) -> String {
    usersig::sign(APP, KEY, identifier, 3_600, crier::clock::now_secs())
}

fn login_frame(identifier: &str) -> String {
    json!({"Type": "Login", "SdkAppId": APP, "Identifier": identifier, "UserSig": user_sig(identifier)})
        .to_string()
}

fn ws_url(base: &str) -> String {
    format!("{}/v4/ws", base.replace("http://", "ws://"))
}

/// A value of the server's `/metrics`.
async fn metric(base: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().unwrap())
}

const MIB: u64 = 1024 * 1024;

/// Before kept frames were shared, each login copied the whole backlog into its own buffer:
/// 300 sessions of this account took the debug server from 36 MiB to 1,884 MiB (+1,848 MiB).
/// Shared, they cost about 10 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_one_account_share_its_kept_pushes_instead_of_copying_them() {
    const KEPT: u64 = 800;
    const SESSIONS: u64 = 300;
    const BOUND: u64 = 200 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "daily_push_quota = 1000");
    let server = ServerProcess::start(&config, &dir.path().join("data"));
    let (base, pid) = (server.base.clone(), server.child.id());
    admin_ok(
        &base,
        "im_open_login_svc/multiaccount_import",
        json!({"Accounts": ["ann"]}),
    )
    .await;
    // Near the MsgBody limit of 8,000 bytes: 6 MB kept for the account. With 2 kB pushes the
    // whole catch-up (1.8 MB) fits in the kernel's send buffer of each socket (autotuned up to
    // 4 MiB) and a copy of it per session would not show in the server's RSS.
    for n in 0..KEPT {
        let text = format!("{n:04} {}", "alert text ".repeat(709));
        let body = json!({
            "MsgRandom": n,
            "MsgLifeTime": 3_600,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]
        });
        admin_ok(&base, "all_member_push/im_push", body).await;
    }

    let before = rss_bytes(pid);
    let url = ws_url(&base);
    let logins: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let tcp = small_window(&url).await;
                let (mut socket, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                    .await
                    .unwrap();
                socket
                    .send(Message::text(login_frame("ann")))
                    .await
                    .unwrap();
                // Never read: the LoginOK and the catch-up wait in the server.
                socket
            })
        })
        .collect();
    let mut sessions = Vec::new();
    for login in logins {
        sessions.push(login.await.unwrap());
    }
    // Every session has its catch-up queued once the deliveries are counted.
    let mut peak = before;
    while metric(&base, "crier_deliveries_offline_total").await < KEPT * SESSIONS {
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        peak = peak.max(rss_bytes(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(sessions);
    while metric(&base, "crier_sessions_open").await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rss_bytes(pid);
    eprintln!(
        "server RSS with {SESSIONS} sessions of one account with {KEPT} kept pushes: \
         before {} MiB, peak {} MiB (+{} MiB), after they closed {} MiB",
        before / MIB,
        peak / MIB,
        (peak - before) / MIB,
        after / MIB
    );
    assert!(
        peak - before < BOUND,
        "RSS grew by {} MiB, more than {} MiB",
        (peak - before) / MIB,
        BOUND / MIB
    );
}

/// A TCP connection to the server at `url` whose receive buffer, and so the window the
/// server may fill, stays small, as on a poor mobile link. On loopback the kernel would
/// otherwise take megabytes of unread data off the server per connection, out of sight of its
/// RSS.
async fn small_window(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// A WebSocket connection to the server, upgraded by hand so frames can be broken at will.
async fn upgraded(server: &TestServer) -> TcpStream {
    let addr = server.base.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v4/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte, so nothing after the response's head is taken from the frames.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// A client frame: `first` is the FIN/RSV/opcode byte; `masked` as a client must.
fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut frame = vec![first];
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len @ 126..=65_535 => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

/// Reads server frames until the close frame; answers its code and reason.
async fn close_code(tcp: &mut TcpStream) -> (u16, String) {
    let read = async {
        loop {
            let mut header = [0u8; 2];
            if tcp.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = match header[1] & 0x7f {
                126 => u64::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap(),
                len => u64::from(len),
            };
            let mut payload = vec![0; len as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            if header[0] & 0x0f == 0x8 {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8(payload[2..].to_vec()).unwrap()));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("a close frame within 15 s")
        .expect("the connection ended without a close frame")
}

#[tokio::test]
async fn frames_that_break_the_websocket_protocol_are_closed_with_the_rfc_6455_code() {
    let server = TestServer::start().await;
    // Each alone on a fresh connection, before any Login.
    let oversized_header = {
        // Only the header: the length alone is refused, before any of the payload is read.
        let mut frame = client_frame(0x81, &[], true);
        frame[1] = 0x80 | 127;
        frame.splice(2..2, 100_000u64.to_be_bytes());
        frame
    };
    let oversized_message = {
        // Fragments each within the frame limit, together over the message limit.
        let mut frames = client_frame(0x01, &[b' '; 40_000], true);
        frames.extend(client_frame(0x80, &[b' '; 40_000], true));
        frames
    };
    let cases: [(&str, Vec<u8>, u16); 6] = [
        (
            "invalid UTF-8 in a text frame",
            client_frame(0x81, &[b'{', 0xff, 0xfe, b'}'], true),
            1007,
        ),
        ("a frame over the size limit", oversized_header, 1009),
        ("a message over the size limit", oversized_message, 1009),
        (
            "an unmasked client frame",
            client_frame(0x81, b"{}", false),
            1002,
        ),
        (
            "a reserved bit set",
            client_frame(0x81 | 0x40, b"{}", true),
            1002,
        ),
        (
            "a fragmented control frame",
            client_frame(0x09, b"ping", true),
            1002,
        ),
    ];
    for (what, frames, expected) in cases {
        let mut tcp = upgraded(&server).await;
        tcp.write_all(&frames).await.unwrap();
        let (code, reason) = close_code(&mut tcp).await;
        assert_eq!(code, expected, "{what}: closed with {code} {reason:?}");
        assert!(!reason.is_empty(), "{what}: the reason says what was wrong");
    }

    // After login as well, with the login's frames read first.
    let mut tcp = upgraded(&server).await;
    let login = login_frame("ann");
    tcp.write_all(&client_frame(0x81, login.as_bytes(), true))
        .await
        .unwrap();
    tcp.write_all(&client_frame(0x81, &[0xc3, 0x28], true))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await.0, 1007);
}

async fn next_event(connection: &mut Connection) -> Event {
    tokio::time::timeout(Duration::from_secs(5), connection.next_event())
        .await
        .expect("an event within 5 s")
        .unwrap()
}

#[tokio::test]
async fn an_account_has_at_most_20_devices_and_the_21st_is_refused_and_not_stored() {
    let server = TestServer::start().await;
    let options = server.login_options("ann");
    let mut ann = Connection::connect(&options).await.unwrap();
    let register = |token: String| ClientFrame::RegisterDevice {
        platform: "fcm".into(),
        token,
    };
    for n in 0..20 {
        ann.send(&register(format!("token-{n}"))).await.unwrap();
    }
    // Registering one again is still a no-op, even at the cap.
    ann.send(&register("token-7".into())).await.unwrap();
    ann.send(&ClientFrame::Ping).await.unwrap();
    assert!(
        matches!(next_event(&mut ann).await, Event::Pong),
        "twenty devices are taken"
    );

    ann.send(&register("token-20".into())).await.unwrap();
    match next_event(&mut ann).await {
        Event::Error { code, info } => {
            assert_eq!(code, 90001);
            assert!(
                info.contains("20 devices") && info.contains("unregister"),
                "{info}"
            );
        }
        other => panic!("expected an Error for the 21st device, got {other:?}"),
    }
    // The session stays open.
    ann.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut ann).await, Event::Pong));
    ann.close().await.unwrap();

    // After a restart the 21st is refused at once: twenty devices of ann's were stored, and
    // it was not among them (registering a stored one again is a no-op), so they are the
    // first twenty.
    let server = TestServer::start_in(server.stop().await, default_apps()).await;
    let options = LoginOptions {
        url: ws_url(&server.base),
        ..options
    };
    let mut ann = Connection::connect(&options).await.unwrap();
    ann.send(&register("token-20".into())).await.unwrap();
    assert!(
        matches!(next_event(&mut ann).await, Event::Error { code: 90001, .. }),
        "the 21st device was not stored"
    );
    ann.send(&register("token-0".into())).await.unwrap();
    ann.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut ann).await, Event::Pong));
    ann.close().await.unwrap();
}
