//! `crier serve` asks glibc's allocator for transparent huge pages by starting itself over
//! with `GLIBC_TUNABLES` set (`huge_pages.rs`), unless told not to.

use serde_json::json;

use crate::process::{admin_call, write_config, ServerProcess};

fn environment_of(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    bytes
        .split(|&b| b == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

const ASKED: &str = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1";

#[tokio::test]
async fn serve_starts_over_asking_for_huge_pages_unless_told_not_to() {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        eprintln!(
            "skipped: GLIBC_TUNABLES is set for the tests, and serve leaves it to whoever set it"
        );
        return;
    }
    let kernel =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !cfg!(target_env = "gnu") || !kernel.contains("[madvise]") {
        eprintln!("skipped: serve asks only on glibc where the kernel gives huge pages on request (here {kernel:?})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let data = dir.path().join("data");

    let server = ServerProcess::start(&config, &data);
    assert!(
        environment_of(server.pid()).iter().any(|e| e == ASKED),
        "serve did not start over with {ASKED}"
    );
    // The process started over is the server: it answers, and stops cleanly.
    let imported = admin_call(
        &server.base,
        "im_open_login_svc/account_import",
        json!({"UserID": "heap-test"}),
    )
    .await;
    assert_eq!(imported["ActionStatus"], "OK", "{imported}");
    assert!(server.terminate().success());

    let server = ServerProcess::start_with(&config, &data, &["--huge-pages", "off"]);
    assert!(
        !environment_of(server.pid())
            .iter()
            .any(|e| e.starts_with("GLIBC_TUNABLES=")),
        "--huge-pages off still started over"
    );
    assert!(server.terminate().success());
}
