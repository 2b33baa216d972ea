//! The WebSocket frame parsers: `ClientFrame` as the gateway reads every text frame a client
//! sends (before and after login), and `ServerFrame::parse` as the client library reads the
//! server's frames.
//!
//! Nothing may panic. A frame that parses serializes to a frame that parses back to the same
//! value, and the `Error` frame the gateway answers a malformed one with (its `ErrorInfo` quotes
//! the parser) is itself a frame a client can read.
#![no_main]

use crier_proto::protocol::{ClientFrame, ServerFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // tungstenite hands the gateway only valid UTF-8 text; bytes are tried too, in case a
    // transport ever passes them through.
    let from_bytes = serde_json::from_slice::<ClientFrame>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let frame = serde_json::from_str::<ClientFrame>(text);
    assert_eq!(frame.as_ref().ok(), from_bytes.as_ref().ok());
    match frame {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("frames serialize");
            let back: ClientFrame = serde_json::from_str(&again).expect("a written frame parses");
            assert_eq!(back, frame);
        }
        Err(error) => {
            let answer = ServerFrame::Error {
                error_code: 90001,
                error_info: format!(
                    "malformed frame: {error}; frames are JSON objects with a Type field"
                ),
            };
            let written = serde_json::to_string(&answer).expect("frames serialize");
            let read = ServerFrame::parse(&written).expect("the error frame parses");
            assert!(matches!(
                read,
                ServerFrame::Error {
                    error_code: 90001,
                    ..
                }
            ));
        }
    }
    if let Ok(server_frame) = ServerFrame::parse(text) {
        let written = serde_json::to_string(&server_frame).expect("frames serialize");
        let read = ServerFrame::parse(&written).expect("a written frame parses");
        assert_eq!(
            serde_json::to_string(&read).expect("frames serialize"),
            written
        );
    }
});
