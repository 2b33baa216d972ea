//! `crier listen` and `crier push` as processes, the way the README's walkthrough runs them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::harness::{ADMIN, APP, KEY};
use crate::process::{crier_binary, write_config, ServerProcess};

struct ListenProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ListenProcess {
    fn start(server: &ServerProcess, identifier: &str, count: u32) -> ListenProcess {
        let mut child = Command::new(crier_binary())
            .args([
                "listen",
                "--url",
                &server.base,
                "--sdkappid",
                &APP.to_string(),
            ])
            .args(["--key", KEY, "--identifier", identifier])
            .args(["--count", &count.to_string()])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ListenProcess { child, lines }
    }

    async fn next_push(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a push line within 10 s")
            .unwrap()
            .expect("crier listen still running");
        serde_json::from_str(&line).unwrap()
    }

    async fn exits_cleanly(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("crier listen exits after --count pushes")
            .unwrap();
        assert!(status.success(), "crier listen exited with {status}");
    }
}

async fn crier_push(server: &ServerProcess, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(crier_binary())
        .args([
            "push",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
        ])
        .args(["--key", key])
        .args(args)
        .output()
        .await
        .unwrap()
}

async fn pushed(server: &ServerProcess, args: &[&str]) -> String {
    let output = crier_push(server, KEY, args).await;
    assert!(
        output.status.success(),
        "crier push failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn wait_until_online(admin: &crier_client::Admin, accounts: &[&str]) {
    wait_until_all(admin, accounts, "Online").await;
}

async fn wait_until_all(admin: &crier_client::Admin, accounts: &[&str], status: &str) {
    for _ in 0..100 {
        let answer = admin
            .call(
                "openim/query_online_status",
                &json!({"To_Account": accounts}),
            )
            .await
            .unwrap();
        let online = answer.rest["QueryResult"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["Status"] == status)
            .count();
        if online == accounts.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{accounts:?} never all became {status}");
}

fn text_of(push: &Value) -> &str {
    push["MsgBody"][0]["MsgContent"]["Text"].as_str().unwrap()
}

#[tokio::test]
async fn crier_listen_prints_and_acks_what_crier_push_sends() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = (write_config(dir.path(), ""), dir.path().join("data"));
    let server = ServerProcess::start(&config, &data);
    let admin = crier_client::Admin::new(&server.base, APP, KEY, ADMIN);
    let tagged = admin
        .call(
            "all_member_push/im_add_tag",
            &json!({"UserTags": [{"To_Account": "ann", "Tags": ["vip"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(tagged.error_code, 0, "{}", tagged.error_info);

    let mut ann = ListenProcess::start(&server, "ann", 2);
    let mut ben = ListenProcess::start(&server, "ben", 1);
    wait_until_online(&admin, &["ann", "ben"]).await;

    let for_vips = pushed(
        &server,
        &[
            "--text",
            "for vips",
            "--tags-or",
            "vip",
            "--lifetime",
            "3600",
        ],
    )
    .await;
    let for_all = pushed(&server, &["--text", "for all", "--lifetime", "3600"]).await;
    assert!(for_vips.starts_with(&format!("{APP}_")), "{for_vips}");

    let first = ann.next_push().await;
    assert_eq!(
        (first["TaskId"].as_str().unwrap(), text_of(&first)),
        (for_vips.as_str(), "for vips")
    );
    assert_eq!(first["Offline"], false);
    assert_eq!(ann.next_push().await["TaskId"], for_all.as_str());
    let only = ben.next_push().await;
    assert_eq!(
        (only["TaskId"].as_str().unwrap(), text_of(&only)),
        (for_all.as_str(), "for all")
    );
    ann.exits_cleanly().await;
    ben.exits_cleanly().await;

    // Both pushes were acknowledged, so a new session of ann's gets only what comes next.
    // Online pushes reach who is online when they are accepted: the old session must be gone
    // and the new one in before the push, or "online" could mean the session that just ended.
    wait_until_all(&admin, &["ann"], "Offline").await;
    let mut again = ListenProcess::start(&server, "ann", 1);
    wait_until_online(&admin, &["ann"]).await;
    let next = pushed(&server, &["--text", "after the acks"]).await;
    assert_eq!(again.next_push().await["TaskId"], next.as_str());
    again.exits_cleanly().await;

    // The report of the first push: both listeners had it online, and both acknowledged it.
    let report = crier_tasks(&server, &for_all).await;
    assert_eq!(report["TaskId"], for_all.as_str());
    assert_eq!(report["AudienceSize"], 2);
    assert_eq!(report["DeliveredOnline"], 2);
    assert_eq!(report["Acknowledged"], 2);
    assert_eq!(report["Notifications"]["State"], "None");

    // The report is the same after kill -9 and a restart (acks and counts are stored within
    // a batch window of 20 ms).
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill_9();
    let server = ServerProcess::start(&config, &data);
    assert_eq!(crier_tasks(&server, &for_all).await, report);
    server.terminate();
}

/// `crier tasks TASK_ID`: the push's report, as JSON.
async fn crier_tasks(server: &ServerProcess, task_id: &str) -> Value {
    let output = Command::new(crier_binary())
        .args([
            "tasks",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
        ])
        .args(["--key", KEY, task_id])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn crier_push_reports_a_refusal_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&write_config(dir.path(), ""), &dir.path().join("data"));
    let refused = crier_push(
        &server,
        KEY,
        &["--text", "x", "--tags-or", "a", "--attrs-or", "k=v"],
    )
    .await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("90039"), "{stderr}");
    assert!(refused.stdout.is_empty());

    let wrong_key = crier_push(&server, "not the key", &["--text", "x"]).await;
    assert!(!wrong_key.status.success());
    assert!(String::from_utf8_lossy(&wrong_key.stderr).contains("ErrorCode 70"));
    server.terminate();
}

#[tokio::test]
async fn crier_revoke_recalls_a_timpush_push_and_crier_listen_prints_the_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = (write_config(dir.path(), ""), dir.path().join("data"));
    let server = ServerProcess::start(&config, &data);
    let admin = crier_client::Admin::new(&server.base, APP, KEY, ADMIN);
    let tagged = admin
        .call(
            "all_member_push/im_add_tag",
            &json!({"UserTags": [{"To_Account": "ben", "Tags": ["opted_out"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(tagged.error_code, 0, "{}", tagged.error_info);
    let mut ann = ListenProcess::start(&server, "ann", 2);
    let mut ben = ListenProcess::start(&server, "ben", 1);
    wait_until_online(&admin, &["ann", "ben"]).await;

    let task_id = pushed(
        &server,
        &[
            "--text",
            "sale today",
            "--timpush",
            "--tags-not",
            "opted_out",
        ],
    )
    .await;
    let push = ann.next_push().await;
    assert_eq!(
        (push["TaskId"].as_str().unwrap(), text_of(&push)),
        (task_id.as_str(), "sale today")
    );
    let revoked = Command::new(crier_binary())
        .args([
            "revoke",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
        ])
        .args(["--key", KEY, &task_id, "--title", "Correction"])
        .output()
        .await
        .unwrap();
    assert!(
        revoked.status.success(),
        "crier revoke failed: {}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let line = ann.next_push().await;
    assert_eq!(
        line,
        json!({"Type": "Revoke", "TaskId": task_id, "OfflinePushInfo": {"Title": "Correction"}})
    );
    // ben was left out by --tags-not, so the next push is the first he gets.
    let next = pushed(&server, &["--text", "next", "--online-only"]).await;
    assert_eq!(ben.next_push().await["TaskId"], next.as_str());
    assert_eq!(ann.next_push().await["TaskId"], next.as_str());
    ann.exits_cleanly().await;
    ben.exits_cleanly().await;

    // A second revoke is refused, with Tencent's code on stderr and a failing exit.
    let again = Command::new(crier_binary())
        .args([
            "revoke",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
        ])
        .args(["--key", KEY, &task_id, "--desc", "again"])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("9005"), "{stderr}");
    server.terminate();
}
