//! What the three providers share: building their HTTP client, reading `Retry-After`, turning a
//! transport error into an [`Outcome`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::Outcome;

/// What is escaped in a URL path segment made of a device token or project id: everything but
/// RFC 3986's unreserved characters, so that a token can never add a segment or a query.
pub(crate) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Time allowed to open a connection (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for one whole request, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a provider's client speaks HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// HTTP/2 only (APNs): over TLS, ALPN offers `h2` alone; over plain HTTP, prior knowledge.
    Http2Only,
    /// Whatever the server agrees to (ALPN offers `h2` and `http/1.1`).
    Any,
}

/// A client with rustls, the built-in web PKI roots plus `ca_file` (PEM, one or more
/// certificates) when given, and bounded connect and request times.
pub(crate) fn client(
    provider: &str,
    ca_file: Option<&Path>,
    version: Version,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT);
    if version == Version::Http2Only {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("{provider}: reading ca_file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{provider}: ca_file {} is not PEM", path.display()))?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "{provider}: ca_file {} holds no certificate",
            path.display()
        );
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build()
        .with_context(|| format!("{provider}: building the HTTP client"))
}

/// The `Retry-After` header, in delta-seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A request that did not get an answer (connect, TLS, timeout, reset) is worth retrying.
pub(crate) fn transport_error(provider: &str, error: &reqwest::Error) -> Outcome {
    Outcome::Retry {
        after: None,
        reason: format!("{provider}: {}", error_chain(error)),
    }
}

/// An error with its causes, `a: b: c`, as reqwest's own message alone says little.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most `max` characters of an answer's body, for a reason that stays readable in logs.
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let body = body.trim();
    match body.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &body[..cut]),
        None => body.to_owned(),
    }
}

/// `OfflinePushInfo.<section>.<field>` as a string, when present and not empty.
pub(crate) fn info_str<'a>(
    info: &'a serde_json::Value,
    section: &str,
    field: &str,
) -> Option<&'a str> {
    info.get(section)?
        .get(field)?
        .as_str()
        .filter(|text| !text.is_empty())
}

/// `OfflinePushInfo.<section>.<field>` as an integer (a number, or a string holding one).
pub(crate) fn info_int(info: &serde_json::Value, section: &str, field: &str) -> Option<i64> {
    let value = info.get(section)?.get(field)?;
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|text| text.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let after = retry_after(&headers).unwrap();
        assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn excerpt_cuts_on_characters() {
        assert_eq!(excerpt("  short ", 10), "short");
        assert_eq!(excerpt("ééééé", 3), "ééé...");
    }

    #[test]
    fn info_fields_tolerate_strings_and_absence() {
        let info = serde_json::json!({"ApnsInfo": {"BadgeMode": "1", "Sound": "", "Title": "t"}});
        assert_eq!(info_int(&info, "ApnsInfo", "BadgeMode"), Some(1));
        assert_eq!(info_str(&info, "ApnsInfo", "Sound"), None);
        assert_eq!(info_str(&info, "ApnsInfo", "Title"), Some("t"));
        assert_eq!(
            info_str(&serde_json::Value::Null, "ApnsInfo", "Title"),
            None
        );
    }
}
