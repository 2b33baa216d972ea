//! UserSig v2: the token Tencent's signing libraries make, and its verification.
//!
//! A token is zlib-deflated JSON, standard base64 with `+`→`*`, `/`→`-`, `=`→`_`. The JSON
//! carries the identifier, sdkappid, issue time, lifetime and `TLS.sig`, an HMAC-SHA256 keyed
//! with the app's secret key string over a fixed text (see [`signed_content`]).
//!
//! [`sign`] produces the same bytes as Tencent's Python library (`tls-sig-api-v2`): the same
//! key order, Python's `json.dumps` spacing and ASCII escaping, and zlib at its default level
//! through the real zlib. [`verify`] never compares tokens as text, because libraries differ
//! in key order, spacing and even whether they compress at all (Go stores raw blocks).

use std::io::Read;

use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::codes;

/// Default lifetime of a token made by [`sign`]: 180 days, as in Tencent's libraries.
pub const DEFAULT_EXPIRE_SECONDS: u64 = 180 * 86_400;

/// A decoded inflated token is a few hundred bytes; anything past this is not a UserSig.
const MAX_INFLATED_BYTES: u64 = 64 * 1024;

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused; each maps to the code Tencent answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    #[error("usersig is empty: sign one for this identifier with the app's secret key")]
    Empty,
    #[error("usersig is malformed ({0}): pass the token exactly as the signing library made it")]
    Malformed(String),
    #[error("usersig signature does not match: it was not made with this app's secret key, or it was altered")]
    BadSignature,
    #[error("usersig was made for identifier {token:?}, not {expected:?}: sign one for the identifier you send")]
    IdentifierMismatch { token: String, expected: String },
    #[error(
        "usersig was made for sdkappid {token}, not {expected}: sign one with this app's sdkappid"
    )]
    AppMismatch { token: u64, expected: u64 },
    #[error("usersig expired at {expired_at} (unix seconds): sign a new one")]
    Expired { expired_at: u64 },
}

impl UserSigError {
    pub fn code(&self) -> u32 {
        match self {
            UserSigError::Empty => codes::USERSIG_EMPTY,
            UserSigError::Malformed(_) => codes::USERSIG_MALFORMED,
            UserSigError::BadSignature => codes::USERSIG_BAD_SIGNATURE,
            UserSigError::IdentifierMismatch { .. } => codes::USERSIG_IDENTIFIER_MISMATCH,
            UserSigError::AppMismatch { .. } => codes::USERSIG_APP_MISMATCH,
            UserSigError::Expired { .. } => codes::USERSIG_EXPIRED,
        }
    }
}

/// The fields of a decoded token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigDoc {
    pub identifier: String,
    pub sdkappid: u64,
    pub time: u64,
    pub expire: u64,
    /// Base64 text as carried in the token; it is signed as text.
    pub userbuf: Option<String>,
    pub sig: String,
}

impl SigDoc {
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// The exact text `TLS.sig` is the HMAC of.
pub fn signed_content(
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf: Option<&str>,
) -> String {
    let mut text = format!("TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n");
    if let Some(userbuf) = userbuf {
        text.push_str("TLS.userbuf:");
        text.push_str(userbuf);
        text.push('\n');
    }
    text
}

fn hmac_of(key: &str, content: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac accepts keys of any length");
    mac.update(content.as_bytes());
    mac
}

/// Makes a token valid from `now` for `expire` seconds.
pub fn sign(sdkappid: u64, key: &str, identifier: &str, expire: u64, now: u64) -> String {
    sign_with_userbuf(sdkappid, key, identifier, expire, now, None)
}

/// Makes a token carrying `userbuf` (any bytes; base64-encoded inside the token).
pub fn sign_with_userbuf(
    sdkappid: u64,
    key: &str,
    identifier: &str,
    expire: u64,
    now: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let userbuf = userbuf.map(|bytes| STANDARD.encode(bytes));
    let content = signed_content(identifier, sdkappid, now, expire, userbuf.as_deref());
    let sig = STANDARD.encode(hmac_of(key, &content).finalize().into_bytes());

    // Field order and `json.dumps` spacing as in Tencent's Python library.
    let mut json = format!(
        "{{\"TLS.ver\": \"2.0\", \"TLS.identifier\": {}, \"TLS.sdkappid\": {sdkappid}, \"TLS.expire\": {expire}, \"TLS.time\": {now}",
        python_json_string(identifier)
    );
    if let Some(userbuf) = &userbuf {
        json.push_str(&format!(
            ", \"TLS.userbuf\": {}",
            python_json_string(userbuf)
        ));
    }
    json.push_str(&format!(", \"TLS.sig\": {}}}", python_json_string(&sig)));

    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    std::io::Write::write_all(&mut encoder, json.as_bytes()).expect("writing to a Vec cannot fail");
    let deflated = encoder.finish().expect("writing to a Vec cannot fail");
    to_token_alphabet(&STANDARD.encode(deflated))
}

fn to_token_alphabet(base64: &str) -> String {
    base64
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}

fn from_token_alphabet(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect()
}

/// Python's `json.dumps` string form: ASCII only, non-ASCII as `\uXXXX` (surrogate pairs).
fn python_json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Decodes a token without checking its signature.
pub fn decode(token: &str) -> Result<SigDoc, UserSigError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(UserSigError::Empty);
    }
    let deflated = LENIENT_BASE64
        .decode(from_token_alphabet(token).trim_end_matches('='))
        .map_err(|e| UserSigError::Malformed(format!("not base64: {e}")))?;
    let mut inflated = Vec::new();
    ZlibDecoder::new(deflated.as_slice())
        .take(MAX_INFLATED_BYTES)
        .read_to_end(&mut inflated)
        .map_err(|e| UserSigError::Malformed(format!("not a zlib stream: {e}")))?;
    let json: serde_json::Value = serde_json::from_slice(&inflated)
        .map_err(|e| UserSigError::Malformed(format!("not JSON: {e}")))?;
    let object = json
        .as_object()
        .ok_or_else(|| UserSigError::Malformed("not a JSON object".into()))?;

    let text_field = |name: &str| -> Result<String, UserSigError> {
        match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(UserSigError::Malformed(format!("{name} is not a string"))),
            None => Err(UserSigError::Malformed(format!("{name} is missing"))),
        }
    };
    // Some libraries write numbers as JSON numbers, some as decimal strings.
    let number_field = |name: &str| -> Result<u64, UserSigError> {
        match object.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(|| {
                UserSigError::Malformed(format!("{name} is not a non-negative integer"))
            }),
            Some(serde_json::Value::String(s)) => s.parse().map_err(|_| {
                UserSigError::Malformed(format!("{name} is not a non-negative integer"))
            }),
            Some(_) => Err(UserSigError::Malformed(format!("{name} is not a number"))),
            None => Err(UserSigError::Malformed(format!("{name} is missing"))),
        }
    };

    Ok(SigDoc {
        identifier: text_field("TLS.identifier")?,
        sdkappid: number_field("TLS.sdkappid")?,
        time: number_field("TLS.time")?,
        expire: number_field("TLS.expire")?,
        userbuf: match object.get("TLS.userbuf") {
            None | Some(serde_json::Value::Null) => None,
            Some(_) => Some(text_field("TLS.userbuf")?),
        },
        sig: text_field("TLS.sig")?,
    })
}

/// Checks `token` for the account `identifier` of app `sdkappid`, signed with `key`, at `now`.
pub fn verify(
    token: &str,
    sdkappid: u64,
    identifier: &str,
    key: &str,
    now: u64,
) -> Result<SigDoc, UserSigError> {
    let doc = decode(token)?;
    if doc.sdkappid != sdkappid {
        return Err(UserSigError::AppMismatch {
            token: doc.sdkappid,
            expected: sdkappid,
        });
    }
    if doc.identifier != identifier {
        return Err(UserSigError::IdentifierMismatch {
            token: doc.identifier,
            expected: identifier.to_owned(),
        });
    }
    if now > doc.expires_at() {
        return Err(UserSigError::Expired {
            expired_at: doc.expires_at(),
        });
    }
    let claimed = LENIENT_BASE64
        .decode(doc.sig.trim_end_matches('='))
        .map_err(|_| UserSigError::Malformed("TLS.sig is not base64".into()))?;
    let content = signed_content(
        &doc.identifier,
        doc.sdkappid,
        doc.time,
        doc.expire,
        doc.userbuf.as_deref(),
    );
    // `verify_slice` compares in constant time.
    hmac_of(key, &content)
        .verify_slice(&claimed)
        .map_err(|_| UserSigError::BadSignature)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const APP: u64 = 1_400_000_000;
    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const PYTHON_TOKEN: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__";
    const NODE_TOKEN: &str = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwhWZiflZpXlQqeKU7MSCgswUJStDEwMogMiUZOamKlkZmqOKplYUZBaBxE1NTY3gosWZ6UpWSj5ljuYp*p7l5unBxXnF2WVhVU4uAf7Ozi5JpX7O5SbuHuUhzgZJmQXaTia2SrUAohcx8g__";

    #[test]
    fn signs_byte_for_byte_like_the_python_library() {
        assert_eq!(
            sign(APP, KEY, "xiaojun", 15_552_000, 1_700_000_000),
            PYTHON_TOKEN
        );
    }

    #[test]
    fn spec_signature_vectors() {
        let mac = |id: &str, expire| {
            STANDARD.encode(
                hmac_of(KEY, &signed_content(id, APP, 1_700_000_000, expire, None))
                    .finalize()
                    .into_bytes(),
            )
        };
        assert_eq!(
            mac("xiaojun", 15_552_000),
            "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="
        );
        assert_eq!(
            mac("administrator", 86_400),
            "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60="
        );
    }

    #[test]
    fn python_and_node_tokens_verify_within_their_lifetime_only() {
        for token in [PYTHON_TOKEN, NODE_TOKEN] {
            for now in [1_700_000_000, 1_710_000_000, 1_715_552_000] {
                assert!(
                    verify(token, APP, "xiaojun", KEY, now).is_ok(),
                    "{token} at {now}"
                );
            }
            assert_eq!(
                verify(token, APP, "xiaojun", KEY, 1_715_552_001),
                Err(UserSigError::Expired {
                    expired_at: 1_715_552_000
                })
            );
        }
    }

    #[test]
    fn refusals_carry_their_codes() {
        let now = 1_700_000_001;
        assert_eq!(
            verify("", APP, "xiaojun", KEY, now).unwrap_err().code(),
            70002
        );
        assert_eq!(
            verify("@@@", APP, "xiaojun", KEY, now).unwrap_err().code(),
            70003
        );
        assert_eq!(
            verify("eJyrVgrx", APP, "xiaojun", KEY, now)
                .unwrap_err()
                .code(),
            70003
        );
        assert_eq!(
            verify(PYTHON_TOKEN, APP, "xiaojun", "other key", now)
                .unwrap_err()
                .code(),
            70009
        );
        assert_eq!(
            verify(PYTHON_TOKEN, APP, "admin", KEY, now)
                .unwrap_err()
                .code(),
            70013
        );
        assert_eq!(
            verify(PYTHON_TOKEN, APP + 1, "xiaojun", KEY, now)
                .unwrap_err()
                .code(),
            70014
        );
    }

    #[test]
    fn accepts_uncompressed_stored_blocks_and_missing_padding() {
        let json = r#"{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1700000000,"TLS.expire":15552000,"TLS.sig":"LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4="}"#;
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::none());
        std::io::Write::write_all(&mut encoder, json.as_bytes()).unwrap();
        let token = to_token_alphabet(&STANDARD.encode(encoder.finish().unwrap()));
        assert!(verify(
            token.trim_end_matches('_'),
            APP,
            "xiaojun",
            KEY,
            1_700_000_000
        )
        .is_ok());
    }

    #[test]
    fn userbuf_is_signed() {
        let token = sign_with_userbuf(APP, KEY, "xiaojun", 600, 1_700_000_000, Some(b"abc"));
        let doc = verify(&token, APP, "xiaojun", KEY, 1_700_000_100).unwrap();
        assert_eq!(doc.userbuf.as_deref(), Some("YWJj"));
    }

    #[test]
    fn python_escaping_of_non_ascii() {
        assert_eq!(python_json_string("é\"😀"), "\"\\u00e9\\\"\\ud83d\\ude00\"");
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(id in "\\PC{1,32}", app in 1u64..u32::MAX as u64, key in "[ -~]{1,64}", expire in 1u64..1_000_000_000, now in 0u64..4_000_000_000) {
            let token = sign(app, &key, &id, expire, now);
            let doc = verify(&token, app, &id, &key, now).unwrap();
            prop_assert_eq!(&doc.identifier, &id);
            prop_assert_eq!(doc.expires_at(), now + expire);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = decode(&text);
        }

        #[test]
        fn a_changed_field_is_never_accepted(id in "[a-z]{1,16}", flip in 0usize..4) {
            let token = sign(APP, KEY, &id, 600, 1_700_000_000);
            let mut doc = decode(&token).unwrap();
            match flip {
                0 => doc.time += 1,
                1 => doc.expire += 1,
                2 => doc.userbuf = Some("eA==".into()),
                _ => doc.identifier.push('x'),
            }
            let content = signed_content(&doc.identifier, doc.sdkappid, doc.time, doc.expire, doc.userbuf.as_deref());
            prop_assert!(hmac_of(KEY, &content).verify_slice(&STANDARD.decode(&doc.sig).unwrap()).is_err());
        }
    }
}
