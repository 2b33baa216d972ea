//! TLS to the server, as libpq's `sslmode` and `sslrootcert` URL parameters ask for it.
//!
//! The `postgres` crate knows `sslmode` disable, prefer and require only, and refuses any
//! parameter it does not know; libpq's users also write `verify-ca`, `verify-full` and
//! `sslrootcert`. So both parameters are taken out of the URL here, the rest of it is handed
//! to the crate, and what the mode means is set on the crate's config (whether to encrypt)
//! and in the connector's certificate verifier (whom to trust):
//!
//! | `sslmode`            | encrypted                  | the server's certificate                  |
//! |----------------------|----------------------------|-------------------------------------------|
//! | `disable`            | never                      | -                                         |
//! | `allow`, `prefer`    | when the server offers it  | as `require`                              |
//! | `require`            | always                     | not checked; with `sslrootcert`, as `verify-ca` |
//! | `verify-ca`          | always                     | signed by a root of `sslrootcert`         |
//! | `verify-full`        | always                     | `verify-ca`, and it names the host        |
//!
//! `prefer` is the default, as in libpq. Unchecked, `require` still encrypts, and the
//! handshake still proves the server holds the key of the certificate it shows; it does not
//! prove whose certificate that is. Without `sslrootcert` the verifying modes trust the
//! system's roots (libpq would read `~/.postgresql/root.crt`); `sslrootcert=system` says so
//! explicitly and, as in libpq, asks for `verify-full`. `allow` (libpq: plain first, TLS if
//! the server insists) is taken as `prefer`, the one of the crate's modes that connects to
//! the same servers. The key/value form (`host=... sslmode=...`) is handed to the crate as it
//! is, so it has the crate's three modes.

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(value: &str) -> Result<Mode, String> {
        Ok(match value {
            "disable" => Mode::Disable,
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    /// What the crate parsed itself (from the key/value form, or its default).
    fn from_wire(mode: SslMode) -> Mode {
        match mode {
            SslMode::Disable => Mode::Disable,
            SslMode::Require => Mode::Require,
            _ => Mode::Prefer,
        }
    }

    /// Whether the crate is to encrypt: the verifying modes encrypt always.
    fn wire(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// Where the roots that sign the server's certificate come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Roots {
    /// No `sslrootcert`.
    Unnamed,
    /// `sslrootcert=system`.
    System,
    File(PathBuf),
}

/// The TLS parameters of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsParams {
    /// `None`: as the crate parses the rest (its default is `prefer`).
    pub mode: Option<Mode>,
    pub roots: Roots,
}

/// Takes `sslmode` and `sslrootcert` out of `url`: what is left (for the crate to parse) and
/// what they said. A URL that names neither is handed back as it is.
pub(super) fn take_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut mode = None;
    let mut roots = Roots::Unnamed;
    let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) else {
        return Ok((url.to_owned(), TlsParams { mode, roots }));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = |name: &str| {
            percent_decode_str(value)
                .decode_utf8()
                .map(|value| value.into_owned())
                .map_err(|_| format!("{name} is not UTF-8 once percent-decoded"))
        };
        match key {
            "sslmode" => mode = Some(Mode::parse(&decoded("sslmode")?)?),
            "sslrootcert" => {
                roots = match decoded("sslrootcert")?.as_str() {
                    "" => {
                        return Err(
                            "sslrootcert is empty: name a PEM file of CA certificates".into()
                        )
                    }
                    "system" => Roots::System,
                    path => Roots::File(PathBuf::from(path)),
                }
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    if roots == Roots::System {
        if mode.is_some_and(|mode| mode != Mode::VerifyFull) {
            return Err("sslrootcert=system asks for sslmode=verify-full (as in libpq)".into());
        }
        mode = Some(Mode::VerifyFull);
    }
    Ok((rest, TlsParams { mode, roots }))
}

impl TlsParams {
    /// Sets on `config` whether to encrypt, and makes the connector that checks the server's
    /// certificate as `self.mode` asks. Reads `sslrootcert` (or the system's roots) when the
    /// mode verifies.
    pub(super) fn apply(&self, config: &mut postgres::Config) -> Result<MakeRustlsConnect, String> {
        let mode = self
            .mode
            .unwrap_or_else(|| Mode::from_wire(config.get_ssl_mode()));
        config.ssl_mode(mode.wire());
        // One crypto provider for the whole program: `ring`, as reqwest's and the gateway's.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, &self.roots) {
            (Mode::Disable, _) | (Mode::Prefer | Mode::Require, Roots::Unnamed) => {
                Arc::new(AnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                })
            }
            (Mode::Prefer | Mode::Require | Mode::VerifyCa, roots) => Arc::new(SignedByRoots {
                roots: Arc::new(load_roots(roots)?),
                algorithms: provider.signature_verification_algorithms,
            }),
            (Mode::VerifyFull, roots) => WebPkiServerVerifier::builder_with_provider(
                Arc::new(load_roots(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("sslrootcert: {e}"))?,
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(client))
    }
}

fn load_roots(roots: &Roots) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Unnamed | Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(ToString::to_string);
                return Err(format!(
                    "no system root certificates to verify the server with ({}): name a PEM file of CA certificates in sslrootcert",
                    why.as_deref().unwrap_or("none found")
                ));
            }
        }
        Roots::File(path) => {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| format!("sslrootcert {shown}: cannot read it: {e}"))?;
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate
                    .map_err(|e| format!("sslrootcert {shown}: not PEM certificates: {e}"))?;
                store
                    .add(certificate)
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
            }
            if store.is_empty() {
                return Err(format!("sslrootcert {shown}: holds no PEM certificate"));
            }
        }
    }
    Ok(store)
}

/// `require` without roots, as libpq: any certificate, though the handshake's signatures are
/// still checked against it.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

/// `verify-ca`: a chain up to one of `roots`, whatever names the certificate holds.
#[derive(Debug)]
struct SignedByRoots {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for SignedByRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
