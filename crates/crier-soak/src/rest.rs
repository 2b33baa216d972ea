//! Honest REST load: a few keep-alive HTTP/1.1 clients, each paced to its share of `--rps`
//! and owning a share of the accounts, so the writes to one account are made one after the
//! other and the expected end state is known; `im_push` on its own client at the allowed rate.
//! Every call's latency is recorded; every acknowledged write goes into the model (and a
//! journal file) that the durability check compares with the server after `kill -9`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::client::{CallError, RestClient};
use crate::common::{honest_user, hostile_user, BASE_TAG};

/// What an account should hold, from the acknowledged writes.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub tags: BTreeSet<String>,
    pub attrs: BTreeMap<String, String>,
    /// A write to it failed in transport: whether the server applied it is unknown.
    pub uncertain: bool,
}

pub const TAG_POOL: usize = 16;
pub const ATTR_NAMES: [&str; 4] = ["a0", "a1", "a2", "a3"];

fn tag(n: usize) -> String {
    format!("t{n:02}")
}

/// The kinds of honest calls, in report order.
pub const COMMANDS: [&str; 8] = [
    "im_push",
    "im_add_tag",
    "im_remove_tag",
    "im_set_attr",
    "im_get_tag",
    "im_get_attr",
    "account_check",
    "query_online_status",
];

/// What the honest REST load saw.
#[derive(Default)]
pub struct RestStats {
    /// Latency (µs) of every answered call, by command.
    pub latencies_us: BTreeMap<&'static str, Vec<u32>>,
    /// Honest errors by kind: count and the first ErrorInfo or cause.
    pub errors: BTreeMap<String, (u64, String)>,
    /// Reads that disagreed with the acknowledged writes before them.
    pub read_mismatches: u64,
    pub mismatch_example: Option<String>,
    /// Calls started more than a second after their slot (the client could not keep pace).
    pub late_calls: u64,
}

impl RestStats {
    fn error(&mut self, kind: String, detail: String) {
        let entry = self.errors.entry(kind).or_insert((0, detail));
        entry.0 += 1;
    }

    pub fn record(
        &mut self,
        command: &'static str,
        result: &Result<Map<String, Value>, CallError>,
        latency: Duration,
    ) {
        let path_error = |code: u32| format!("{command}: ErrorCode {code}");
        match result {
            Ok(_) => {}
            Err(CallError::Refused(code, info)) => self.error(path_error(*code), info.clone()),
            Err(CallError::Transport(why)) => {
                self.error(format!("{command}: transport"), why.clone());
                return;
            }
        }
        self.latencies_us
            .entry(command)
            .or_default()
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    fn mismatch(&mut self, what: String) {
        self.read_mismatches += 1;
        self.mismatch_example.get_or_insert(what);
    }

    pub fn merge(&mut self, other: RestStats) {
        for (command, mut latencies) in other.latencies_us {
            self.latencies_us
                .entry(command)
                .or_default()
                .append(&mut latencies);
        }
        for (kind, (count, detail)) in other.errors {
            self.errors.entry(kind).or_insert((0, detail)).0 += count;
        }
        self.read_mismatches += other.read_mismatches;
        if self.mismatch_example.is_none() {
            self.mismatch_example = other.mismatch_example;
        }
        self.late_calls += other.late_calls;
    }

    pub fn calls(&self) -> usize {
        self.latencies_us.values().map(Vec::len).sum::<usize>()
            + self
                .errors
                .iter()
                .filter(|(k, _)| k.ends_with("transport"))
                .map(|(_, (n, _))| *n as usize)
                .sum::<usize>()
    }
}

/// Appends acknowledged writes to a file as they are answered, one JSON object a line.
pub type Journal = Arc<Mutex<std::io::BufWriter<std::fs::File>>>;

pub fn write_journal(journal: &Journal, entry: Value) {
    if let Ok(mut file) = journal.lock() {
        let _ = writeln!(file, "{entry}");
    }
}

/// One client's share of the load.
pub struct Worker {
    pub client: RestClient,
    /// Honest accounts it owns (indices), and what each should hold.
    pub owned: Vec<usize>,
    pub model: HashMap<usize, Expected>,
    pub sessions: usize,
    pub hostile_accounts: usize,
    pub period: Duration,
    pub journal: Journal,
    pub rng: StdRng,
    pub stats: RestStats,
}

impl Worker {
    pub fn new(
        client: RestClient,
        owned: Vec<usize>,
        period: Duration,
        journal: Journal,
        counts: (usize, usize),
    ) -> Worker {
        let model = owned
            .iter()
            .map(|i| {
                let mut expected = Expected::default();
                expected.tags.insert(BASE_TAG.to_owned());
                (*i, expected)
            })
            .collect();
        Worker {
            client,
            owned,
            model,
            sessions: counts.0,
            hostile_accounts: counts.1,
            period,
            journal,
            rng: StdRng::from_entropy(),
            stats: RestStats::default(),
        }
    }

    /// Calls at its pace until `end`.
    pub async fn run(mut self, end: Instant) -> Worker {
        // Spread the workers' slots over one period.
        let mut next = Instant::now() + self.period.mul_f64(self.rng.gen::<f64>());
        while next < end {
            tokio::time::sleep_until(next).await;
            let now = Instant::now();
            if now > next + Duration::from_secs(1) {
                self.stats.late_calls += 1;
                next = now;
            }
            self.one_call().await;
            next += self.period;
        }
        self
    }

    fn pick(&mut self, most: usize) -> Vec<usize> {
        let k = self.rng.gen_range(1..=most.min(self.owned.len()).max(1));
        self.owned
            .choose_multiple(&mut self.rng, k)
            .copied()
            .collect()
    }

    async fn one_call(&mut self) {
        if self.owned.is_empty() {
            return;
        }
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..20 => self.add_tags().await,
            20..30 => self.remove_tags().await,
            30..45 => self.set_attrs().await,
            45..65 => self.get_tags().await,
            65..80 => self.get_attrs().await,
            80..90 => self.account_check().await,
            _ => self.online_status().await,
        }
    }

    async fn timed(
        &mut self,
        command: &'static str,
        path: &str,
        body: &Value,
    ) -> Result<Map<String, Value>, CallError> {
        let started = Instant::now();
        let result = self.client.call(path, body).await;
        self.stats.record(command, &result, started.elapsed());
        result
    }

    /// After a write: on OK the model takes `apply`; on a transport failure the accounts are
    /// uncertain; a refusal changed nothing (writes are all-or-nothing).
    fn settle(
        &mut self,
        result: &Result<Map<String, Value>, CallError>,
        accounts: &[usize],
        entry: Value,
        apply: impl Fn(&mut Expected, usize),
    ) {
        match result {
            Ok(_) => {
                for (n, i) in accounts.iter().enumerate() {
                    if let Some(expected) = self.model.get_mut(i) {
                        apply(expected, n);
                    }
                }
                write_journal(&self.journal, entry);
            }
            Err(CallError::Transport(_)) => {
                for i in accounts {
                    if let Some(expected) = self.model.get_mut(i) {
                        expected.uncertain = true;
                    }
                }
            }
            Err(CallError::Refused(..)) => {}
        }
    }

    async fn add_tags(&mut self) {
        let accounts = self.pick(10);
        let tags: Vec<Vec<String>> = accounts
            .iter()
            .map(|_| {
                let n = self.rng.gen_range(1..=3);
                (0..n)
                    .map(|_| tag(self.rng.gen_range(0..TAG_POOL)))
                    .collect()
            })
            .collect();
        let body = json!({"UserTags": accounts.iter().zip(&tags).map(|(i, t)| json!({"To_Account": honest_user(*i), "Tags": t})).collect::<Vec<_>>()});
        let result = self
            .timed("im_add_tag", "all_member_push/im_add_tag", &body)
            .await;
        let entry = json!({"add_tag": body["UserTags"]});
        self.settle(&result, &accounts, entry, |e, n| {
            e.tags.extend(tags[n].iter().cloned())
        });
    }

    async fn remove_tags(&mut self) {
        let accounts = self.pick(10);
        let tags: Vec<Vec<String>> = accounts
            .iter()
            .map(|i| {
                let held: Vec<String> = self.model[i]
                    .tags
                    .iter()
                    .filter(|t| *t != BASE_TAG)
                    .cloned()
                    .collect();
                let n = self.rng.gen_range(1..=2);
                if held.is_empty() {
                    (0..n)
                        .map(|_| tag(self.rng.gen_range(0..TAG_POOL)))
                        .collect()
                } else {
                    held.choose_multiple(&mut self.rng, n).cloned().collect()
                }
            })
            .collect();
        let body = json!({"UserTags": accounts.iter().zip(&tags).map(|(i, t)| json!({"To_Account": honest_user(*i), "Tags": t})).collect::<Vec<_>>()});
        let result = self
            .timed("im_remove_tag", "all_member_push/im_remove_tag", &body)
            .await;
        let entry = json!({"remove_tag": body["UserTags"]});
        self.settle(&result, &accounts, entry, |e, n| {
            for t in &tags[n] {
                e.tags.remove(t);
            }
        });
    }

    async fn set_attrs(&mut self) {
        let accounts = self.pick(10);
        let attrs: Vec<BTreeMap<String, String>> = accounts
            .iter()
            .map(|_| {
                let n = self.rng.gen_range(1..=2);
                ATTR_NAMES
                    .choose_multiple(&mut self.rng, n)
                    .map(|name| {
                        (
                            (*name).to_owned(),
                            format!("v{}", self.rng.gen_range(0..1000)),
                        )
                    })
                    .collect::<Vec<_>>()
                    .into_iter()
                    .collect()
            })
            .collect();
        let body = json!({"UserAttrs": accounts.iter().zip(&attrs).map(|(i, a)| json!({"To_Account": honest_user(*i), "Attrs": a})).collect::<Vec<_>>()});
        let result = self
            .timed("im_set_attr", "all_member_push/im_set_attr", &body)
            .await;
        let entry = json!({"set_attr": body["UserAttrs"]});
        self.settle(&result, &accounts, entry, |e, n| {
            e.attrs.extend(attrs[n].clone())
        });
    }

    async fn get_tags(&mut self) {
        let accounts = self.pick(10);
        let names: Vec<String> = accounts.iter().map(|i| honest_user(*i)).collect();
        let result = self
            .timed(
                "im_get_tag",
                "all_member_push/im_get_tag",
                &json!({"To_Account": names}),
            )
            .await;
        let Ok(answer) = result else { return };
        for (name, held) in user_items(&answer, "UserTags", "Tags") {
            let Some(expected) = account_index(&name).and_then(|i| self.model.get(&i)) else {
                continue;
            };
            let held: BTreeSet<String> = held
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            if !expected.uncertain && held != expected.tags {
                self.stats.mismatch(format!(
                    "im_get_tag {name}: {held:?}, acknowledged writes say {:?}",
                    expected.tags
                ));
            }
        }
    }

    async fn get_attrs(&mut self) {
        let accounts = self.pick(10);
        let names: Vec<String> = accounts.iter().map(|i| honest_user(*i)).collect();
        let result = self
            .timed(
                "im_get_attr",
                "all_member_push/im_get_attr",
                &json!({"To_Account": names}),
            )
            .await;
        let Ok(answer) = result else { return };
        for (name, attrs) in user_items(&answer, "UserAttrs", "Attrs") {
            let Some(expected) = account_index(&name).and_then(|i| self.model.get(&i)) else {
                continue;
            };
            let held = attr_map(&attrs);
            if !expected.uncertain && held != expected.attrs {
                self.stats.mismatch(format!(
                    "im_get_attr {name}: {held:?}, acknowledged writes say {:?}",
                    expected.attrs
                ));
            }
        }
    }

    async fn account_check(&mut self) {
        let k = self.rng.gen_range(1..=10);
        let names: Vec<String> = (0..k)
            .map(|_| {
                let i = self.rng.gen_range(0..self.sessions + self.hostile_accounts);
                if i < self.sessions {
                    honest_user(i)
                } else {
                    hostile_user(i - self.sessions)
                }
            })
            .collect();
        let body =
            json!({"CheckItem": names.iter().map(|n| json!({"UserID": n})).collect::<Vec<_>>()});
        let result = self
            .timed("account_check", "im_open_login_svc/account_check", &body)
            .await;
        let Ok(answer) = result else { return };
        for item in answer
            .get("ResultItem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item["AccountStatus"] != "Imported" {
                self.stats
                    .mismatch(format!("account_check: {item}, every account was imported"));
            }
        }
    }

    async fn online_status(&mut self) {
        let names: Vec<String> = (0..self.rng.gen_range(1..=20))
            .map(|_| honest_user(self.rng.gen_range(0..self.sessions)))
            .collect();
        let _ = self
            .timed(
                "query_online_status",
                "openim/query_online_status",
                &json!({"To_Account": names, "IsNeedDetail": 0}),
            )
            .await;
    }
}

/// `(To_Account, field)` of each item of an answer's `list` (`UserTags`, `UserAttrs`).
pub fn user_items(answer: &Map<String, Value>, list: &str, field: &str) -> Vec<(String, Value)> {
    answer
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| Some((item["To_Account"].as_str()?.to_owned(), item[field].clone())))
        .collect()
}

pub fn attr_map(attrs: &Value) -> BTreeMap<String, String> {
    attrs
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

fn account_index(name: &str) -> Option<usize> {
    name.strip_prefix("soak")?.parse().ok()
}
