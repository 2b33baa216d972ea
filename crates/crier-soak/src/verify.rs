//! The durability check after `kill -9` and restart: every acknowledged write is read back
//! (`im_get_tag`, `im_get_attr` for every account, 100 a call) and every TaskId answered is
//! looked up with `v4/crier/task_report`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{CallError, RestClient};
use crate::rest::{attr_map, user_items, Expected};

#[derive(Default)]
pub struct Durability {
    pub accounts_checked: usize,
    /// Accounts left out: a write to them failed in transport, so their state is unknown.
    pub accounts_uncertain: usize,
    pub tags_expected: usize,
    /// Acknowledged tags absent after the restart.
    pub tags_missing: usize,
    /// Tags present that an acknowledged removal took away (or that were never added).
    pub tags_unexpected: usize,
    pub attrs_expected: usize,
    /// Acknowledged attribute values absent or different after the restart.
    pub attrs_missing: usize,
    pub attrs_unexpected: usize,
    pub tasks_checked: usize,
    pub tasks_missing: usize,
    /// Calls of the check itself that failed (its numbers are then incomplete).
    pub check_errors: Vec<String>,
    pub examples: Vec<String>,
    pub elapsed: Duration,
}

impl Durability {
    pub fn missing(&self) -> usize {
        self.tags_missing
            + self.tags_unexpected
            + self.attrs_missing
            + self.attrs_unexpected
            + self.tasks_missing
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }
}

/// Calls `path`, retrying a little on rate refusals (90024) and transport failures: the
/// check must not miss a write because it asked too fast.
async fn call_patiently(
    client: &RestClient,
    path: &str,
    body: &Value,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.call(path, body).await {
            Ok(answer) => return Ok(answer),
            Err(CallError::Refused(90024, _)) if attempts < 200 => {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Err(CallError::Transport(_)) if attempts < 5 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(CallError::Refused(code, info)) => {
                return Err(format!("{path}: ErrorCode {code}: {info}"))
            }
            Err(CallError::Transport(why)) => return Err(format!("{path}: {why}")),
        }
    }
}

/// Compares the server with `model` (account name → expected state) and the accepted pushes.
pub async fn check(
    client: &RestClient,
    model: &BTreeMap<String, Expected>,
    task_ids: &[String],
) -> Durability {
    let started = std::time::Instant::now();
    let mut result = Durability::default();
    let certain: Vec<(&String, &Expected)> = model.iter().filter(|(_, e)| !e.uncertain).collect();
    result.accounts_uncertain = model.len() - certain.len();
    for chunk in certain.chunks(100) {
        let names: Vec<&String> = chunk.iter().map(|(n, _)| *n).collect();
        let tags = call_patiently(
            client,
            "all_member_push/im_get_tag",
            &json!({"To_Account": names}),
        )
        .await;
        let attrs = call_patiently(
            client,
            "all_member_push/im_get_attr",
            &json!({"To_Account": names}),
        )
        .await;
        let (tags, attrs) = match (tags, attrs) {
            (Ok(tags), Ok(attrs)) => (tags, attrs),
            (Err(e), _) | (_, Err(e)) => {
                result.check_errors.push(e);
                continue;
            }
        };
        let held_tags: HashMap<String, Value> =
            user_items(&tags, "UserTags", "Tags").into_iter().collect();
        let held_attrs: HashMap<String, Value> = user_items(&attrs, "UserAttrs", "Attrs")
            .into_iter()
            .collect();
        for (name, expected) in chunk {
            result.accounts_checked += 1;
            let held: Vec<String> = held_tags
                .get(*name)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            result.tags_expected += expected.tags.len();
            for tag in &expected.tags {
                if !held.contains(tag) {
                    result.tags_missing += 1;
                    result.example(format!("{name}: acknowledged tag {tag:?} missing"));
                }
            }
            for tag in &held {
                if !expected.tags.contains(tag) {
                    result.tags_unexpected += 1;
                    result.example(format!(
                        "{name}: tag {tag:?} present, but acknowledged writes removed it"
                    ));
                }
            }
            let attrs = held_attrs.get(*name).map(attr_map).unwrap_or_default();
            result.attrs_expected += expected.attrs.len();
            for (key, value) in &expected.attrs {
                if attrs.get(key) != Some(value) {
                    result.attrs_missing += 1;
                    result.example(format!(
                        "{name}: attribute {key}={value:?} acknowledged, found {:?}",
                        attrs.get(key)
                    ));
                }
            }
            for key in attrs.keys() {
                if !expected.attrs.contains_key(key) {
                    result.attrs_unexpected += 1;
                    result.example(format!(
                        "{name}: attribute {key} present, never acknowledged"
                    ));
                }
            }
        }
    }
    for task_id in task_ids {
        match call_patiently(client, "crier/task_report", &json!({"TaskId": task_id})).await {
            Ok(_) => result.tasks_checked += 1,
            Err(e) if e.contains("ErrorCode 90001") => {
                result.tasks_checked += 1;
                result.tasks_missing += 1;
                result.example(format!("TaskId {task_id} unknown after the restart"));
            }
            Err(e) => result.check_errors.push(e),
        }
    }
    result.elapsed = started.elapsed();
    result
}
