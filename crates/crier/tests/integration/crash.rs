//! Whatever Crier acknowledged survives `kill -9` and a restart.

use serde_json::{json, Value};

use crate::harness::*;
use crate::process::*;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_and_pushes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "daily_push_quota = 3");

    // Phase 1: writes, then a graceful stop (which snapshots the directory).
    let server = ServerProcess::start(&config, &data);
    let accounts: Vec<String> = (0..300).map(|n| format!("user{n}")).collect();
    for chunk in accounts.chunks(100) {
        admin_ok(
            &server.base,
            "im_open_login_svc/multiaccount_import",
            json!({ "Accounts": chunk }),
        )
        .await;
    }
    admin_ok(
        &server.base,
        "all_member_push/im_set_attr_name",
        json!({"AttrNames": {"0": "city"}}),
    )
    .await;
    admin_ok(
        &server.base,
        "all_member_push/im_add_tag",
        json!({"UserTags": [{"To_Account": "user1", "Tags": ["before-snapshot"]}]}),
    )
    .await;
    assert!(server.terminate().success());

    // Phase 2: more writes and pushes after the snapshot, then kill -9.
    let server = ServerProcess::start(&config, &data);
    let users: Vec<Value> = (0..100).map(|n| json!({"To_Account": format!("user{n}"), "Tags": ["stock-a", format!("t{}", n % 7)]})).collect();
    admin_ok(
        &server.base,
        "all_member_push/im_add_tag",
        json!({ "UserTags": users }),
    )
    .await;
    admin_ok(
        &server.base,
        "all_member_push/im_set_attr",
        json!({"UserAttrs": [{"To_Account": "user2", "Attrs": {"city": "Shenzhen"}}]}),
    )
    .await;
    admin_ok(
        &server.base,
        "all_member_push/im_remove_tag",
        json!({"UserTags": [{"To_Account": "user3", "Tags": ["stock-a"]}]}),
    )
    .await;
    admin_ok(
        &server.base,
        "im_open_login_svc/account_delete",
        json!({"DeleteItem": [{"UserID": "user299"}]}),
    )
    .await;
    let mut task_ids = Vec::new();
    for n in 0..3 {
        let mut push = text_push(n, "hello");
        push["Condition"] = json!({"TagsAnd": ["stock-a"]});
        task_ids.push(
            admin_ok(&server.base, "all_member_push/im_push", push).await["TaskId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    server.kill_9();

    // Phase 3: everything acknowledged is there.
    let server = ServerProcess::start(&config, &data);
    let tags = admin_ok(
        &server.base,
        "all_member_push/im_get_tag",
        json!({"To_Account": ["user1", "user3"]}),
    )
    .await;
    assert_eq!(
        tags["UserTags"][0]["Tags"],
        json!(["before-snapshot", "stock-a", "t1"])
    );
    assert_eq!(tags["UserTags"][1]["Tags"], json!(["t3"]));
    let attrs = admin_ok(
        &server.base,
        "all_member_push/im_get_attr",
        json!({"To_Account": ["user2"]}),
    )
    .await;
    assert_eq!(attrs["UserAttrs"][0]["Attrs"], json!({"city": "Shenzhen"}));
    let check = admin_ok(
        &server.base,
        "im_open_login_svc/account_check",
        json!({"CheckItem": [{"UserID": "user298"}, {"UserID": "user299"}]}),
    )
    .await;
    assert_eq!(check["ResultItem"][0]["AccountStatus"], "Imported");
    assert_eq!(check["ResultItem"][1]["AccountStatus"], "NotImported");
    // The daily quota of 3 was used before the crash and stays used.
    assert_eq!(
        admin_call(
            &server.base,
            "all_member_push/im_push",
            text_push(9, "again")
        )
        .await["ErrorCode"],
        90047
    );
    // The three pushes that used it are the ones answered, with the audience they had.
    for task_id in &task_ids {
        let report = admin_ok(
            &server.base,
            "crier/task_report",
            json!({ "TaskId": task_id }),
        )
        .await;
        assert_eq!(
            report["Report"]["AudienceSize"], 99,
            "user0..user99 minus user3 hold stock-a: {report}"
        );
    }
    server.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_with_an_app_named_twice_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        "[[app]]\nsdkappid = 1\nsecret_key = \"a\"\n\n[[app]]\nsdkappid = 1\nsecret_key = \"b\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(crier_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 5") && stderr.contains("already defined"),
        "{stderr}"
    );
}
