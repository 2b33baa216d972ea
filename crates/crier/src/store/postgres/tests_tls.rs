//! TLS to the server: how `sslmode` and `sslrootcert` are read, that `require` encrypts on the
//! machine's server (which has `ssl = on`), and what the verifying modes accept and refuse on
//! a server of the test's own whose certificate the test signed.

use std::path::{Path, PathBuf};

use super::tests::{with_server, PostgresFactory};
use super::tls::{take_tls_params, Mode, Roots, TlsParams};
use super::tls_server::{TlsServer, CERTIFICATE_HOST};
use super::*;
use crate::store::conformance::StoreFactory;

/// Whether the connection a store call runs on is encrypted, as the server sees it.
fn encrypted(store: &PostgresStore) -> bool {
    store
        .run(|client| {
            let row = client.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?;
            column(&row, 0)
        })
        .unwrap()
}

/// Why `url` cannot be opened; the password of the test URLs must not be in it.
fn refusal(url: &str) -> String {
    match PostgresStore::open(url) {
        Ok(_) => panic!("{} opened", redacted(url)),
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains("s3cret"), "{message}");
            message
        }
        Err(other) => panic!("{other:?}"),
    }
}

fn params(mode: Option<Mode>, roots: Roots) -> TlsParams {
    TlsParams { mode, roots }
}

#[test]
fn sslmode_and_sslrootcert_are_taken_out_of_the_url_and_the_rest_is_kept() {
    let file = |path: &str| Roots::File(PathBuf::from(path));
    let cases = [
        (
            "postgres://crier:pw@db:5432/crier",
            "postgres://crier:pw@db:5432/crier",
            params(None, Roots::Unnamed),
        ),
        (
            "postgres://crier@db/crier?sslmode=require",
            "postgres://crier@db/crier",
            params(Some(Mode::Require), Roots::Unnamed),
        ),
        (
            "postgresql://db/crier?application_name=crier&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&connect_timeout=5",
            "postgresql://db/crier?application_name=crier&connect_timeout=5",
            params(Some(Mode::VerifyFull), file("/etc/ca x.pem")),
        ),
        (
            "postgres://db/crier?sslrootcert=/etc/ca.pem&sslmode=verify-ca",
            "postgres://db/crier",
            params(Some(Mode::VerifyCa), file("/etc/ca.pem")),
        ),
        (
            "postgres://db/crier?sslmode=allow",
            "postgres://db/crier",
            params(Some(Mode::Prefer), Roots::Unnamed),
        ),
        (
            "postgres://db/crier?sslmode=disable",
            "postgres://db/crier",
            params(Some(Mode::Disable), Roots::Unnamed),
        ),
        // As libpq: the system's roots ask for verify-full.
        (
            "postgres://db/crier?sslrootcert=system",
            "postgres://db/crier",
            params(Some(Mode::VerifyFull), Roots::System),
        ),
        // The key/value form is the crate's to read.
        (
            "host=db sslmode=require dbname=crier",
            "host=db sslmode=require dbname=crier",
            params(None, Roots::Unnamed),
        ),
    ];
    for (url, rest, expected) in cases {
        assert_eq!(
            take_tls_params(url).unwrap(),
            (rest.to_owned(), expected),
            "{url}"
        );
    }
    for (url, names) in [
        ("postgres://db/crier?sslmode=verify-everything", "sslmode"),
        ("postgres://db/crier?sslmode=", "sslmode"),
        ("postgres://db/crier?sslrootcert=", "sslrootcert"),
        (
            "postgres://db/crier?sslrootcert=system&sslmode=require",
            "sslrootcert=system",
        ),
        (
            "postgres://db/crier?sslrootcert=system&sslmode=verify-ca",
            "sslrootcert=system",
        ),
        ("postgres://db/crier?sslmode=%FF", "sslmode"),
    ] {
        let error = take_tls_params(url).unwrap_err();
        assert!(error.contains(names), "{url}: {error}");
    }
}

#[test]
fn a_bad_sslmode_or_an_unreadable_sslrootcert_is_refused_before_connecting() {
    // Nothing listens on port 9: a refusal that names the parameter was made before any
    // connection was tried.
    let base = "postgres://crier:s3cret@127.0.0.1:9/crier";
    let message = refusal(&format!("{base}?sslmode=verify_full"));
    assert!(
        message.contains("sslmode \"verify_full\" is not one of"),
        "{message}"
    );
    assert!(message.contains("invalid PostgreSQL URL"), "{message}");

    let missing = "/nonexistent/crier-ca.pem";
    let message = refusal(&format!("{base}?sslmode=verify-ca&sslrootcert={missing}"));
    assert!(
        message.contains(&format!("sslrootcert {missing}: cannot read it")),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    let message = refusal(&format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        empty.display()
    ));
    assert!(message.contains("holds no PEM certificate"), "{message}");

    // What the crate itself refuses is still told, the password still hidden.
    let message = refusal(&format!("{base}?sslmode=require&sslcert=/x.pem"));
    assert!(message.contains("unknown option `sslcert`"), "{message}");
}

/// A store on a fresh database of the machine's server through `params`, or `None` (and the
/// reason printed) when that server has TLS off.
fn machine_store(factory: &PostgresFactory, params: &str) -> Option<PostgresStore> {
    let mut admin = super::tests::connect(&factory.url).unwrap();
    let ssl: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
    if ssl != "on" {
        eprintln!("skipped: the PostgreSQL server of the tests has ssl = {ssl}");
        return None;
    }
    let separator = if factory.url.contains('?') { '&' } else { '?' };
    Some(PostgresStore::open(&format!("{}{separator}{params}", factory.url)).unwrap())
}

#[test]
fn require_and_the_default_encrypt_on_a_server_with_tls_and_disable_does_not() {
    with_server(|| {
        let factory = PostgresFactory::create();
        for (params, expected) in [
            ("sslmode=require", true),
            ("application_name=crier", true),
            ("sslmode=prefer", true),
            ("sslmode=disable", false),
        ] {
            let Some(store) = machine_store(&factory, params) else {
                return;
            };
            assert_eq!(encrypted(&store), expected, "{params}");
            // Every pooled connection, not only the first: a call that took a second one.
            let Ok(held) = store.connection() else {
                panic!("{params}: no second connection");
            };
            assert_eq!(encrypted(&store), expected, "{params}, a second connection");
            drop(held);
        }
    });
}

#[test]
fn verify_ca_with_a_ca_that_did_not_sign_the_servers_certificate_is_refused() {
    with_server(|| {
        let factory = PostgresFactory::create();
        let dir = tempfile::tempdir().unwrap();
        let unrelated = dir.path().join("unrelated.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&unrelated, ca.self_signed(&key).unwrap().pem()).unwrap();
        let Some(_) = machine_store(&factory, "sslmode=require") else {
            return;
        };
        for mode in ["verify-ca", "verify-full", "require"] {
            let url = format!(
                "{}?sslmode={mode}&sslrootcert={}",
                factory.url,
                unrelated.display()
            );
            let message = refusal(&url);
            assert!(
                message.contains("invalid peer certificate"),
                "{mode}: {message}"
            );
        }
    });
}

fn url_with_ca(server: &TlsServer, host: &str, mode: &str, ca: &Path) -> String {
    server.url(
        host,
        &format!("sslmode={mode}&sslrootcert={}", ca.display()),
    )
}

#[test]
fn verify_full_asks_for_the_ca_that_signed_the_certificate_and_the_host_it_names() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let store = PostgresStore::open(&url_with_ca(
        &server,
        CERTIFICATE_HOST,
        "verify-full",
        &server.ca,
    ))
    .unwrap();
    assert!(encrypted(&store));
    drop(store);

    // The same certificate reached through an address it does not name.
    let message = refusal(&url_with_ca(
        &server,
        "127.0.0.1",
        "verify-full",
        &server.ca,
    ));
    assert!(message.contains("not valid for name"), "{message}");
    let message = refusal(&url_with_ca(
        &server,
        CERTIFICATE_HOST,
        "verify-full",
        &server.unrelated_ca,
    ));
    assert!(message.contains("UnknownIssuer"), "{message}");
    // The system's roots did not sign it either.
    let message = refusal(&server.url(CERTIFICATE_HOST, "sslmode=verify-full"));
    assert!(message.contains("invalid peer certificate"), "{message}");
}

#[test]
fn verify_ca_asks_for_the_ca_whatever_the_host_and_require_asks_nothing_without_one() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let store =
        PostgresStore::open(&url_with_ca(&server, "127.0.0.1", "verify-ca", &server.ca)).unwrap();
    assert!(encrypted(&store));
    drop(store);
    let message = refusal(&url_with_ca(
        &server,
        "127.0.0.1",
        "verify-ca",
        &server.unrelated_ca,
    ));
    assert!(message.contains("UnknownIssuer"), "{message}");

    let store = PostgresStore::open(&server.url("127.0.0.1", "sslmode=require")).unwrap();
    assert!(encrypted(&store));
    drop(store);
    // As libpq: require with a root certificate checks the chain as verify-ca does.
    let message = refusal(&url_with_ca(
        &server,
        "127.0.0.1",
        "require",
        &server.unrelated_ca,
    ));
    assert!(message.contains("UnknownIssuer"), "{message}");
    let store =
        PostgresStore::open(&url_with_ca(&server, "127.0.0.1", "require", &server.ca)).unwrap();
    assert!(encrypted(&store));
    drop(store);
    let store = PostgresStore::open(&server.url("127.0.0.1", "sslmode=disable")).unwrap();
    assert!(!encrypted(&store));
}
