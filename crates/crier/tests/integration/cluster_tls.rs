//! A node whose store URL asks for TLS (`sslmode=require`), on the machine's PostgreSQL
//! (which has `ssl = on`): it answers as any node does, and every connection it holds to its
//! database is encrypted, as the server reports it.

use serde_json::json;

use crate::cluster::Cluster;
use crate::harness::*;

/// Runs `run` on a plain connection of the test's own to `url`, off the runtime.
async fn on_database<T: Send + 'static>(
    url: &str,
    run: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        run(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_node_on_a_store_url_with_sslmode_require_answers_over_encrypted_connections() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let url = cluster.database_url().to_owned();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let ssl: String = on_database(&url, |client| {
        client.query_one("SHOW ssl", &[]).unwrap().get(0)
    })
    .await;
    if ssl != "on" {
        eprintln!("skipped: the PostgreSQL server of the tests has ssl = {ssl}");
        return;
    }
    let node = cluster
        .node_with_store_params("a", "?sslmode=require")
        .await;
    node.admin()
        .ok(
            "all_member_push/im_add_tag",
            json!({"UserTags": [{"To_Account": "alice", "Tags": ["vip"]}]}),
        )
        .await;
    let task_id = node.admin().push(text_push(1, "over TLS")).await;
    assert!(!task_id.is_empty());

    let (connections, encrypted): (i64, i64) = on_database(&url, move |client| {
        let row = client
            .query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s ON s.pid = a.pid \
                 WHERE a.datname = $1 AND a.pid <> pg_backend_pid()",
                &[&database],
            )
            .unwrap();
        (row.get(0), row.get(1))
    })
    .await;
    assert!(
        connections > 0,
        "the node holds no connection to its database"
    );
    assert_eq!(
        encrypted, connections,
        "every connection of the node is encrypted"
    );
}
