//! The UserSig decoder and verifier, from both sides.
//!
//! The first byte picks what the rest is:
//! - even: token text, as a client sends it. `verify` must not panic, and a token it accepts
//!   must be for the identifier and sdkappid asked and unexpired.
//! - odd: an identifier that a careless app signs for whoever asks (Tencent's libraries sign
//!   any identifier). The token must not verify for any other identifier, and no re-reading
//!   of its signed text as other fields (the newline-separated content leaves room for that)
//!   may give a token that verifies for another identifier.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crier_proto::usersig;
use flate2::write::ZlibEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const APP: u64 = 1_400_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const IDENTIFIER: &str = "xiaojun";
/// Inside the lifetime of the spec's test vectors, so they reach the HMAC check.
const NOW: u64 = 1_700_000_000;
const EXPIRE: u64 = 86_400;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode.is_multiple_of(2) {
        check_token(text);
    } else {
        check_signed_identifier(text);
    }
});

fn check_token(token: &str) {
    let decoded = usersig::decode(token);
    match usersig::verify(token, APP, IDENTIFIER, KEY, NOW) {
        Ok(doc) => {
            assert_eq!(doc.identifier, IDENTIFIER);
            assert_eq!(doc.sdkappid, APP);
            assert!(
                NOW <= doc.expires_at(),
                "accepted an expired token: {doc:?}"
            );
            assert_eq!(decoded.as_ref().ok(), Some(&doc));
        }
        Err(error) => {
            // Every refusal carries a public UserSig code (spec §2), never an internal one.
            assert!(
                (60000..80000).contains(&error.code()),
                "undocumented code {} for {error:?}",
                error.code()
            );
            if let Err(decode_error) = &decoded {
                assert_eq!(&error, decode_error);
            }
        }
    }
}

fn check_signed_identifier(identifier: &str) {
    let token = usersig::sign(APP, KEY, identifier, EXPIRE, NOW);
    if let Ok(doc) = usersig::verify(&token, APP, identifier, KEY, NOW) {
        assert_eq!(doc.identifier, identifier);
    }
    if identifier != IDENTIFIER {
        assert!(
            usersig::verify(&token, APP, IDENTIFIER, KEY, NOW).is_err(),
            "a token signed for {identifier:?} verified for {IDENTIFIER:?}"
        );
    }
    let Ok(doc) = usersig::decode(&token) else {
        return;
    };
    let content = usersig::signed_content(identifier, APP, NOW, EXPIRE, None);
    for forged in rereadings(&content) {
        if forged.identifier == identifier {
            continue;
        }
        let repacked = pack(&forged, &doc.sig);
        let verdict = usersig::verify(
            &repacked,
            forged.sdkappid,
            &forged.identifier,
            KEY,
            forged.time,
        );
        assert!(
            verdict.is_err(),
            "the signature of identifier {identifier:?} verifies re-packed as {forged:?}"
        );
    }
}

/// The fields a signed text could be read back as, besides the ones it was made from.
#[derive(Debug)]
struct Fields {
    identifier: String,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf: Option<String>,
}

/// Every way `content` splits into fields whose `signed_content` is `content` again: the
/// identifier may end at any `\nTLS.sdkappid:`; the numbers are then fixed, and whatever is
/// left is the userbuf.
fn rereadings(content: &str) -> Vec<Fields> {
    const MARK: &str = "\nTLS.sdkappid:";
    let Some(body) = content.strip_prefix("TLS.identifier:") else {
        return Vec::new();
    };
    body.match_indices(MARK)
        .filter_map(|(end, _)| {
            let identifier = &body[..end];
            let rest = &body[end + MARK.len()..];
            let (sdkappid, rest) = number_then(rest, "\nTLS.time:")?;
            let (time, rest) = number_then(rest, "\nTLS.expire:")?;
            let (expire, rest) = number_then(rest, "\n")?;
            let userbuf = match rest {
                "" => None,
                _ => Some(
                    rest.strip_prefix("TLS.userbuf:")?
                        .strip_suffix('\n')?
                        .to_owned(),
                ),
            };
            let fields = Fields {
                identifier: identifier.to_owned(),
                sdkappid,
                time,
                expire,
                userbuf,
            };
            let again = usersig::signed_content(
                &fields.identifier,
                sdkappid,
                time,
                expire,
                fields.userbuf.as_deref(),
            );
            (again == content).then_some(fields)
        })
        .collect()
}

/// A decimal `u64` as `format!` writes it, then `separator`. Inlined so that each field has
/// coverage counters of its own: the fuzzer then sees each field it gets right as progress.
#[inline(always)]
fn number_then<'a>(text: &'a str, separator: &str) -> Option<(u64, &'a str)> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text[..digits].parse().ok()?;
    let rest = text[digits..].strip_prefix(separator)?;
    (number.to_string() == text[..digits]).then_some((number, rest))
}

/// A token carrying `fields` and the signature `sig`, encoded as Tencent's libraries do.
fn pack(fields: &Fields, sig: &str) -> String {
    let mut json = Map::new();
    json.insert("TLS.ver".into(), "2.0".into());
    json.insert("TLS.identifier".into(), fields.identifier.clone().into());
    json.insert("TLS.sdkappid".into(), fields.sdkappid.into());
    json.insert("TLS.expire".into(), fields.expire.into());
    json.insert("TLS.time".into(), fields.time.into());
    if let Some(userbuf) = &fields.userbuf {
        json.insert("TLS.userbuf".into(), userbuf.clone().into());
    }
    json.insert("TLS.sig".into(), sig.into());
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    std::io::Write::write_all(&mut encoder, Value::Object(json).to_string().as_bytes())
        .expect("writing to a Vec cannot fail");
    let deflated = encoder.finish().expect("writing to a Vec cannot fail");
    STANDARD
        .encode(deflated)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}
