//! The real `crier` binary as a child process, for what only a process can show: `kill -9`,
//! signals, the command line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test; `CRIER_TEST_BINARY` runs the same tests against another build
/// (an older commit, to see a test fail before its fix).
pub fn crier_binary() -> String {
    std::env::var("CRIER_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crier").to_owned())
}

pub struct ServerProcess {
    pub child: Child,
    pub base: String,
}

/// A test that fails (panics) before stopping its server must not leave it running.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a config file naming the test apps into `dir`.
pub fn write_config(dir: &Path, extra_app_lines: &str) -> std::path::PathBuf {
    use crate::harness::{ADMIN, APP, KEY};
    let path = dir.join("crier.toml");
    let text = format!(
        "[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\n{extra_app_lines}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl ServerProcess {
    /// Starts `crier serve` on port 0 and learns the bound address from its JSON log.
    pub fn start(config: &Path, data_dir: &Path) -> ServerProcess {
        Self::start_with(config, data_dir, &[])
    }

    /// Like [`ServerProcess::start`], with more `serve` flags.
    pub fn start_with(config: &Path, data_dir: &Path, flags: &[&str]) -> ServerProcess {
        let mut child = Command::new(crier_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--config",
            ])
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crier starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("crier logs until it listens").unwrap();
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "listening" {
                break event["addr"].as_str().unwrap().to_owned();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..100 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("crier did not stop within 10 s of SIGTERM");
    }
}

/// An admin call to a server process, signed the way Tencent's SDKs sign; answers the envelope.
pub async fn admin_call(base: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    use crate::harness::{ADMIN, APP, KEY};
    let sig = crier_proto::usersig::sign(APP, KEY, ADMIN, 600, crier::clock::now_secs());
    let url = format!(
        "{base}/v4/{path}?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
    );
    reqwest::Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// [`admin_call`], asserting that it succeeded.
pub async fn admin_ok(base: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let answer = admin_call(base, path, body).await;
    assert_eq!(answer["ActionStatus"], "OK", "{path}: {answer}");
    answer
}

/// A process's resident memory in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}
