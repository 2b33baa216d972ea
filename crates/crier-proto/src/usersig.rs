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
//!
//! The signed text is newline-separated `TLS.name:value` lines, so the signature covers the
//! fields only if no field can hold a line of another: a token whose identifier held
//! `\nTLS.sdkappid:…` and whose userbuf held the rest could be re-read as an admin's. Tencent's
//! libraries sign whatever identifier they are given, so [`verify`] (and through it the REST
//! API and the WebSocket login) refuses every token whose fields are not of their type: an
//! identifier of 1 to 32 bytes without control characters, numbers in decimal, a base64
//! userbuf. With those, the signed text has exactly one reading.

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
use crate::echo::echo;

/// Default lifetime of a token made by [`sign`]: 180 days, as in Tencent's libraries.
pub const DEFAULT_EXPIRE_SECONDS: u64 = 180 * 86_400;

/// A decoded inflated token is a few hundred bytes; anything past this is not a UserSig.
const MAX_INFLATED_BYTES: u64 = 64 * 1024;

/// Longest identifier (Tencent's UserID limit), both the one a caller claims and the one in a
/// token.
pub const MAX_IDENTIFIER_BYTES: usize = 32;

/// How far past the server's clock a token's `TLS.time` may lie: signers' clocks drift a
/// little, but a token issued years ahead would outlive every lifetime its signer meant.
pub const MAX_FUTURE_SECS: u64 = 300;

/// The only `TLS.ver` of tokens signed with an HMAC (version 1 used ECDSA keys).
const VERSION: &str = "2.0";

/// Bytes of an HMAC-SHA256.
const SIG_BYTES: usize = 32;

const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token was refused; each maps to the code Tencent answers with.
///
/// The contract (`rest-api.md` §2) names codes for an empty token (70002), a malformed one
/// (70003), a wrong HMAC (70009), another identifier (70013), another app (70014) and an expired
/// token (70001). The refusals it does not name answer 70003, "malformed": an identifier no
/// account can have (no valid token exists for it, and the WebSocket login already answers 70003
/// for one), a field not of its type, and a `TLS.time` from the future (no correct signer makes
/// one, and 70001 would tell the caller to re-sign on the same wrong clock).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserSigError {
    #[error("usersig is empty: sign one for this identifier with the app's secret key")]
    Empty,
    #[error("usersig is malformed ({0}): pass the token exactly as the signing library made it")]
    Malformed(String),
    /// `place` is `identifier` (the caller's claim) or `TLS.identifier` (inside the token).
    #[error("{place} {identifier} {problem}: an identifier is 1 to 32 bytes without control characters; use and sign one like that")]
    BadIdentifier {
        place: &'static str,
        /// Quoted and shortened for the message.
        identifier: String,
        problem: &'static str,
    },
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
    #[error("usersig was issued at {time} (unix seconds), more than 300 seconds after this server's clock ({now}): sign it on a host whose clock is right")]
    IssuedInFuture { time: u64, now: u64 },
}

impl UserSigError {
    pub fn code(&self) -> u32 {
        match self {
            UserSigError::Empty => codes::USERSIG_EMPTY,
            UserSigError::Malformed(_)
            | UserSigError::BadIdentifier { .. }
            | UserSigError::IssuedInFuture { .. } => codes::USERSIG_MALFORMED,
            UserSigError::BadSignature => codes::USERSIG_BAD_SIGNATURE,
            UserSigError::IdentifierMismatch { .. } => codes::USERSIG_IDENTIFIER_MISMATCH,
            UserSigError::AppMismatch { .. } => codes::USERSIG_APP_MISMATCH,
            UserSigError::Expired { .. } => codes::USERSIG_EXPIRED,
        }
    }
}

/// Refuses an identifier no account can have: empty, over [`MAX_IDENTIFIER_BYTES`], or holding
/// a control character (below U+0020, U+007F to U+009F; a newline among them). [`verify`] checks
/// both the claimed identifier and the token's; a tool that prints tokens should check before
/// signing, since [`sign`] signs anything, as Tencent's libraries do.
pub fn check_identifier(identifier: &str) -> Result<(), UserSigError> {
    identifier_problem(identifier).map_or(Ok(()), |problem| {
        Err(UserSigError::BadIdentifier {
            place: "identifier",
            identifier: echo(identifier).to_string(),
            problem,
        })
    })
}

fn identifier_problem(identifier: &str) -> Option<&'static str> {
    if identifier.is_empty() {
        Some("is empty")
    } else if identifier.len() > MAX_IDENTIFIER_BYTES {
        Some("is longer than 32 bytes")
    } else if identifier.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
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
    encode(&SigDoc {
        identifier: identifier.to_owned(),
        sdkappid,
        time: now,
        expire,
        userbuf,
        sig,
    })
}

/// Packs `doc` into a token as Tencent's Python library does, as given: nothing is signed or
/// checked. For tests and tools that must build the tokens a signer would not.
pub fn encode(doc: &SigDoc) -> String {
    // Field order and `json.dumps` spacing as in Tencent's Python library.
    let mut json = format!(
        "{{\"TLS.ver\": \"{VERSION}\", \"TLS.identifier\": {}, \"TLS.sdkappid\": {}, \"TLS.expire\": {}, \"TLS.time\": {}",
        python_json_string(&doc.identifier),
        doc.sdkappid,
        doc.expire,
        doc.time,
    );
    if let Some(userbuf) = &doc.userbuf {
        json.push_str(&format!(
            ", \"TLS.userbuf\": {}",
            python_json_string(userbuf)
        ));
    }
    json.push_str(&format!(
        ", \"TLS.sig\": {}}}",
        python_json_string(&doc.sig)
    ));

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

/// The JSON object inside a token, unchecked.
fn inflate(token: &str) -> Result<serde_json::Map<String, serde_json::Value>, UserSigError> {
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
    match json {
        serde_json::Value::Object(object) => Ok(object),
        _ => Err(UserSigError::Malformed("not a JSON object".into())),
    }
}

/// Decodes a token and checks each field is of its type, without checking its signature.
pub fn decode(token: &str) -> Result<SigDoc, UserSigError> {
    let object = inflate(token)?;
    let malformed = |what: String| UserSigError::Malformed(what);

    let text_field = |name: &str| -> Result<String, UserSigError> {
        match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(malformed(format!("{name} is not a string"))),
            None => Err(malformed(format!("{name} is missing"))),
        }
    };
    // Some libraries write numbers as JSON numbers; PHP's writes a decimal string when it was
    // given one. Either way the value is signed in canonical decimal, so any other spelling
    // ("+5", "05", "5.0") is refused rather than read as a number it does not spell.
    let number_field = |name: &str| -> Result<u64, UserSigError> {
        let not_a_number = || malformed(format!("{name} is not a non-negative integer"));
        match object.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(not_a_number),
            Some(serde_json::Value::String(s)) => {
                let canonical = !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                canonical
                    .then(|| s.parse().ok())
                    .flatten()
                    .ok_or_else(not_a_number)
            }
            Some(_) => Err(not_a_number()),
            None => Err(malformed(format!("{name} is missing"))),
        }
    };

    let version = text_field("TLS.ver")?;
    if version != VERSION {
        return Err(malformed(format!(
            "TLS.ver is {}, not \"{VERSION}\"",
            echo(&version)
        )));
    }
    let identifier = text_field("TLS.identifier")?;
    if let Some(problem) = identifier_problem(&identifier) {
        return Err(UserSigError::BadIdentifier {
            place: "TLS.identifier",
            identifier: echo(&identifier).to_string(),
            problem,
        });
    }
    let userbuf = match object.get("TLS.userbuf") {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => {
            let userbuf = text_field("TLS.userbuf")?;
            // Every signer writes it with padding; strict decoding leaves it one spelling.
            STANDARD
                .decode(&userbuf)
                .map_err(|_| malformed("TLS.userbuf is not standard base64".into()))?;
            Some(userbuf)
        }
    };
    let sig = text_field("TLS.sig")?;
    sig_bytes(&sig)?;
    Ok(SigDoc {
        identifier,
        sdkappid: number_field("TLS.sdkappid")?,
        time: number_field("TLS.time")?,
        expire: number_field("TLS.expire")?,
        userbuf,
        sig,
    })
}

fn sig_bytes(sig: &str) -> Result<Vec<u8>, UserSigError> {
    LENIENT_BASE64
        .decode(sig.trim_end_matches('='))
        .ok()
        .filter(|bytes| bytes.len() == SIG_BYTES)
        .ok_or_else(|| {
            UserSigError::Malformed("TLS.sig is not the base64 of a 32-byte HMAC-SHA256".into())
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
    if token.trim().is_empty() {
        return Err(UserSigError::Empty);
    }
    check_identifier(identifier)?;
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
    if doc.time > now.saturating_add(MAX_FUTURE_SECS) {
        return Err(UserSigError::IssuedInFuture {
            time: doc.time,
            now,
        });
    }
    let claimed = sig_bytes(&doc.sig)?;
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

    /// Packs hand-written JSON the way the libraries do.
    fn token_of_json(json: &str) -> String {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut encoder, json.as_bytes()).unwrap();
        to_token_alphabet(&STANDARD.encode(encoder.finish().unwrap()))
    }

    const XIAOJUN_SIG: &str = "LvA7d/Iw7gSsnskvVzBDPOCCDbuNCw4GHwTC0bip+B4=";

    #[test]
    fn a_newline_identifier_cannot_be_re_packed_into_an_admin_signature() {
        // An app that signs the identifiers its users choose, as Tencent's libraries allow.
        let chosen = "administrator\nTLS.sdkappid:1400000000\nTLS.time:1700000000\nTLS.expire:999999999\nTLS.userbuf:x";
        let token = sign(APP, KEY, chosen, 600, 1_700_000_000);
        let sig = inflate(&token).unwrap()["TLS.sig"]
            .as_str()
            .unwrap()
            .to_owned();
        // Cut at the first newline, with the rest moved into the userbuf, the signed text is
        // the same: an admin's identifier, a lifetime of 31 years.
        let forged = SigDoc {
            identifier: "administrator".into(),
            sdkappid: APP,
            time: 1_700_000_000,
            expire: 999_999_999,
            userbuf: Some("x\nTLS.sdkappid:1400000000\nTLS.time:1700000000\nTLS.expire:600".into()),
            sig,
        };
        assert_eq!(
            signed_content(
                &forged.identifier,
                forged.sdkappid,
                forged.time,
                forged.expire,
                forged.userbuf.as_deref()
            ),
            signed_content(chosen, APP, 1_700_000_000, 600, None)
        );
        let refused = verify(&encode(&forged), APP, "administrator", KEY, 1_800_000_000);
        assert_eq!(
            refused,
            Err(UserSigError::Malformed(
                "TLS.userbuf is not standard base64".into()
            ))
        );
        assert_eq!(refused.unwrap_err().code(), 70003);
        // The token made for the hostile identifier is refused too, for its own identifier.
        let refused = verify(&token, APP, chosen, KEY, 1_700_000_000).unwrap_err();
        assert!(
            matches!(
                refused,
                UserSigError::BadIdentifier {
                    place: "identifier",
                    ..
                }
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn identifiers_no_account_can_have_are_refused_claimed_or_signed() {
        let now = 1_700_000_000;
        for identifier in [
            "",
            &"a".repeat(33),
            "a\nb",
            "a\rb",
            "tab\t",
            "del\u{7f}",
            "c1\u{85}",
            "nul\0",
        ] {
            let refused = check_identifier(identifier).unwrap_err();
            assert_eq!(refused.code(), 70003, "{identifier:?}");
            // Claimed by the caller, with a valid token for someone else.
            assert_eq!(
                verify(PYTHON_TOKEN, APP, identifier, KEY, now),
                Err(refused),
                "{identifier:?}"
            );
            // Inside a token, claimed by a caller with a valid identifier.
            let token = sign(APP, KEY, identifier, 600, now);
            let inside = verify(&token, APP, "xiaojun", KEY, now).unwrap_err();
            assert!(
                matches!(
                    inside,
                    UserSigError::BadIdentifier {
                        place: "TLS.identifier",
                        ..
                    }
                ),
                "{identifier:?}: {inside:?}"
            );
        }
        let longest = "é".repeat(16);
        assert_eq!(longest.len(), 32);
        for identifier in ["a", "user with spaces", "中文账号", longest.as_str()] {
            let token = sign(APP, KEY, identifier, 600, now);
            assert!(
                verify(&token, APP, identifier, KEY, now).is_ok(),
                "{identifier:?}"
            );
        }
        let message = check_identifier(&"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(
            message.len() < 300 && message.contains("10000 bytes"),
            "{message}"
        );
    }

    #[test]
    fn every_field_is_checked_to_be_of_its_type() {
        let token = |ver: &str, app: &str, time: &str, userbuf: &str, sig: &str| {
            token_of_json(&format!(
                r#"{{"TLS.ver":{ver},"TLS.identifier":"xiaojun","TLS.sdkappid":{app},"TLS.time":{time},"TLS.expire":15552000{userbuf},"TLS.sig":{sig}}}"#
            ))
        };
        let now = 1_700_000_000;
        let sig = format!("\"{XIAOJUN_SIG}\"");
        let check = |token: String| verify(&token, APP, "xiaojun", KEY, now);
        // Decimal strings, as PHP writes what it is given, are accepted when canonical.
        assert!(check(token(
            "\"2.0\"",
            "\"1400000000\"",
            "\"1700000000\"",
            "",
            &sig
        ))
        .is_ok());
        let refused = [
            token("\"1.0\"", "1400000000", "1700000000", "", &sig),
            token("2.0", "1400000000", "1700000000", "", &sig),
            token("\"2.0\"", "\"+1400000000\"", "1700000000", "", &sig),
            token("\"2.0\"", "\"01400000000\"", "1700000000", "", &sig),
            token("\"2.0\"", "1400000000", "1700000000.0", "", &sig),
            token("\"2.0\"", "1400000000", "\"1700000000 \"", "", &sig),
            token("\"2.0\"", "1400000000", "-1", "", &sig),
            token(
                "\"2.0\"",
                "1400000000",
                "1700000000",
                r#","TLS.userbuf":"YWJj\n""#,
                &sig,
            ),
            token(
                "\"2.0\"",
                "1400000000",
                "1700000000",
                r#","TLS.userbuf":"YWJ""#,
                &sig,
            ),
            token(
                "\"2.0\"",
                "1400000000",
                "1700000000",
                r#","TLS.userbuf":"YWJ=""#,
                &sig,
            ),
            token(
                "\"2.0\"",
                "1400000000",
                "1700000000",
                r#","TLS.userbuf":7"#,
                &sig,
            ),
            token("\"2.0\"", "1400000000", "1700000000", "", "\"YWJj\""),
            token("\"2.0\"", "1400000000", "1700000000", "", "\"not base64!\""),
            token("\"2.0\"", "1400000000", "1700000000", "", "32"),
            token_of_json(&format!(
                r#"{{"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1700000000,"TLS.expire":15552000,"TLS.sig":{sig}}}"#
            )),
        ];
        for (n, token) in refused.into_iter().enumerate() {
            let error = check(token).unwrap_err();
            assert!(
                matches!(error, UserSigError::Malformed(_)),
                "case {n}: {error:?}"
            );
            assert_eq!(error.code(), 70003);
        }
    }

    #[test]
    fn a_token_issued_more_than_five_minutes_ahead_is_refused() {
        let now = 1_700_000_000;
        let ahead = |seconds| sign(APP, KEY, "xiaojun", 600, now + seconds);
        assert!(verify(&ahead(MAX_FUTURE_SECS), APP, "xiaojun", KEY, now).is_ok());
        let refused = verify(&ahead(MAX_FUTURE_SECS + 1), APP, "xiaojun", KEY, now).unwrap_err();
        assert_eq!(
            refused,
            UserSigError::IssuedInFuture {
                time: now + MAX_FUTURE_SECS + 1,
                now
            }
        );
        assert_eq!(refused.code(), 70003);
        let years = sign(
            APP,
            KEY,
            "xiaojun",
            DEFAULT_EXPIRE_SECONDS,
            now + 5 * 365 * 86_400,
        );
        assert!(verify(&years, APP, "xiaojun", KEY, now).is_err());
    }

    /// Every way to read a signed text back as token fields. The identifier may end at any
    /// "\nTLS.sdkappid:"; after it the numbers run to their newlines and a userbuf to the end.
    fn readings(content: &str) -> Vec<(String, u64, u64, u64, Option<String>)> {
        let Some(rest) = content.strip_prefix("TLS.identifier:") else {
            return Vec::new();
        };
        let mut found = Vec::new();
        'cuts: for (at, _) in rest.match_indices("\nTLS.sdkappid:") {
            let mut tail = &rest[at + 1..];
            let mut numbers = [0u64; 3];
            for (number, name) in
                numbers
                    .iter_mut()
                    .zip(["TLS.sdkappid:", "TLS.time:", "TLS.expire:"])
            {
                let Some((digits, next)) = tail.strip_prefix(name).and_then(|t| t.split_once('\n'))
                else {
                    continue 'cuts;
                };
                match digits.parse::<u64>() {
                    Ok(value) if value.to_string() == digits => *number = value,
                    _ => continue 'cuts,
                }
                tail = next;
            }
            let userbuf = match tail {
                "" => None,
                _ => match tail
                    .strip_prefix("TLS.userbuf:")
                    .and_then(|t| t.strip_suffix('\n'))
                {
                    Some(userbuf) => Some(userbuf.to_owned()),
                    None => continue,
                },
            };
            let [sdkappid, time, expire] = numbers;
            found.push((rest[..at].to_owned(), sdkappid, time, expire, userbuf));
        }
        found
    }

    /// Identifiers an attacker would ask a careless app to sign: newlines, field names, numbers,
    /// whole forged field lines, base64 text and any printable Unicode.
    fn hostile_identifier() -> impl Strategy<Value = String> {
        let number = prop_oneof![
            Just(APP.to_string()),
            Just("0".to_string()),
            "[1-9][0-9]{0,10}"
        ];
        let fragment = prop_oneof![
            "[a-z]{1,6}",
            "\\PC{1,3}",
            "[A-Za-z0-9+/=]{1,8}",
            Just("administrator".to_string()),
            prop::sample::select(vec![
                "\n",
                "TLS.",
                "TLS.sdkappid:",
                "TLS.time:",
                "TLS.expire:",
                "TLS.userbuf:",
                "\nTLS.userbuf:"
            ])
            .prop_map(String::from),
            number.clone(),
            (number.clone(), number.clone(), number).prop_map(|(app, time, expire)| {
                format!("\nTLS.sdkappid:{app}\nTLS.time:{time}\nTLS.expire:{expire}\nTLS.userbuf:")
            }),
        ];
        prop::collection::vec(fragment, 0..6).prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(id in prop_oneof!["[ -~]{1,32}", "\\PC{1,8}"], app in 1u64..u32::MAX as u64, key in "[ -~]{1,64}", expire in 1u64..1_000_000_000, now in 0u64..4_000_000_000) {
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

        #[test]
        fn no_re_packing_of_a_signed_token_verifies_for_another_identifier(
            a in hostile_identifier(),
            b in hostile_identifier(),
            userbuf in prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            time in 1_600_000_000u64..1_800_000_000,
            expire in 1u64..100_000_000,
        ) {
            let token = sign_with_userbuf(APP, KEY, &a, expire, time, userbuf.as_deref());
            let sig = inflate(&token).unwrap()["TLS.sig"].as_str().unwrap().to_owned();
            let userbuf = userbuf.map(|bytes| STANDARD.encode(bytes));
            let content = signed_content(&a, APP, time, expire, userbuf.as_deref());
            // The genuine token verifies exactly when its identifier is one an account can have.
            prop_assert_eq!(verify(&token, APP, &a, KEY, time).is_ok(), check_identifier(&a).is_ok());
            prop_assert!(a == b || verify(&token, APP, &b, KEY, time).is_err());

            let mut forgeries: Vec<SigDoc> = readings(&content)
                .into_iter()
                .map(|(identifier, sdkappid, time, expire, userbuf)| SigDoc { identifier, sdkappid, time, expire, userbuf, sig: sig.clone() })
                .collect();
            prop_assert!(!forgeries.is_empty(), "the genuine reading is one of them");
            for doc in &forgeries {
                prop_assert_eq!(&signed_content(&doc.identifier, doc.sdkappid, doc.time, doc.expire, doc.userbuf.as_deref()), &content);
            }
            forgeries.push(SigDoc { identifier: b.clone(), sdkappid: APP, time, expire, userbuf, sig });
            for doc in forgeries {
                // Checked at the forged issue time, so only the signature and the types can refuse it.
                let accepted = verify(&encode(&doc), doc.sdkappid, &doc.identifier, KEY, doc.time).is_ok();
                prop_assert!(!accepted || doc.identifier == a, "a token signed for {:?} verified for {:?}", a, doc.identifier);
            }
        }
    }
}
