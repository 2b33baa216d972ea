//! A PostgreSQL server of a test's own, with TLS on under a certificate the test made and
//! signed: the machine's server has a certificate the tests neither chose nor can sign for,
//! so only this one shows what the verifying `sslmode`s accept and refuse.
//!
//! It runs Debian's binaries (`/usr/lib/postgresql/N/bin`, the newest N) in a temporary
//! directory, on a free port of 127.0.0.1, with trust authentication. PostgreSQL refuses to
//! run as root, so when the tests do, it runs as the `postgres` user, made owner of the
//! directory. It is stopped when dropped.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The only name the server's certificate holds: connecting to 127.0.0.1 instead shows a
/// name that does not match.
pub const CERTIFICATE_HOST: &str = "localhost";

pub struct TlsServer {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca: PathBuf,
    /// PEM of a CA that signed nothing the server shows.
    pub unrelated_ca: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: TempDir,
}

impl TlsServer {
    /// A running server; `None`, with the reason printed, where PostgreSQL's binaries (or,
    /// for root, a `postgres` user) are missing. Anything else that fails panics.
    pub fn start() -> Option<TlsServer> {
        let found = newest_bin_dir().and_then(|bin| Ok((bin, user_to_run_as()?)));
        let (bin, run_as) = match found {
            Ok(found) => found,
            Err(reason) => {
                eprintln!("skipped: cannot run a PostgreSQL server of the test's own: {reason}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut server = TlsServer {
            port,
            ca: dir.path().join("ca.pem"),
            unrelated_ca: dir.path().join("unrelated-ca.pem"),
            data: dir.path().join("data"),
            bin,
            run_as,
            dir,
        };
        server.write_certificates();
        server.chown(server.dir.path());
        server.run(
            "initdb",
            &[
                "-D",
                path(&server.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-N",
            ],
        );
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{dir}'\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             fsync = off\n",
            dir = path(server.dir.path()),
        );
        let conf = server.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("initdb's postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("writing postgresql.conf");
        let log = server.dir.path().join("server.log");
        let started = server.try_run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path(&server.data),
                "-l",
                path(&log),
            ],
        );
        if let Err(error) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            // Nothing to stop: keep `drop` from trying.
            server.data = PathBuf::new();
            panic!("the test's PostgreSQL did not start: {error}\n{log}");
        }
        Some(server)
    }

    /// A URL of the `postgres` database on this server, through `host`.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres:s3cret@{host}:{}/postgres?{params}",
            self.port
        )
    }

    /// A CA, a certificate it signed for `CERTIFICATE_HOST` and its key (readable by the
    /// server's user only, or PostgreSQL refuses it), and a second CA.
    fn write_certificates(&self) {
        let (ca, ca_key) = certificate_authority("Crier test PostgreSQL CA");
        let (unrelated, _) = certificate_authority("Crier unrelated CA");
        let server_key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(vec![CERTIFICATE_HOST.to_owned()])
            .expect("certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CERTIFICATE_HOST);
        let server_cert = params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("the server's certificate");
        let dir = self.dir.path();
        std::fs::write(&self.ca, ca.pem()).expect("writing the CA");
        std::fs::write(&self.unrelated_ca, unrelated.pem()).expect("writing the unrelated CA");
        std::fs::write(dir.join("server.crt"), server_cert.pem()).expect("writing server.crt");
        let key_file = dir.join("server.key");
        std::fs::write(&key_file, server_key.serialize_pem()).expect("writing server.key");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("server.key 0600");
        self.chown(&key_file);
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output = command
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(error) = self.try_run(program, args) {
            panic!("{error}");
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if self.data.as_os_str().is_empty() {
            return;
        }
        // `fast` ends the sessions still open (a store's pool) instead of waiting for them.
        let stopped = self.try_run(
            "pg_ctl",
            &["stop", "-w", "-m", "fast", "-D", path(&self.data)],
        );
        if let Err(error) = stopped {
            eprintln!("cannot stop the test's PostgreSQL: {error}");
        }
    }
}

fn certificate_authority(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let certificate = params.self_signed(&key).expect("a CA certificate");
    (certificate, key)
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// `/usr/lib/postgresql/N/bin` of the highest N that has `initdb` and `pg_ctl`.
fn newest_bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no initdb and pg_ctl under {}", root.display()))
}

/// `None` when the tests are not root: PostgreSQL runs as whoever runs them.
fn user_to_run_as() -> Result<Option<(u32, u32)>, String> {
    let id = |args: &[&str]| -> Result<u32, String> {
        let output = Command::new("id")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run id: {e}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| {
                format!(
                    "id {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    };
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let uid = id(&["-u", "postgres"]).map_err(|e| format!("root, and no postgres user ({e})"))?;
    let gid = id(&["-g", "postgres"])?;
    Ok(Some((uid, gid)))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}
