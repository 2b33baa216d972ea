//! Crier in-process: build the directory by applying `DirOp`s (the same writes the REST API
//! logs), time `Directory::audience`, and write the snapshot the server starts from.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crier::config::AppConfig;
use crier::directory::{
    snapshot, Condition, DirOp, Directory, DirectoryStats, UserAttrValues, UserTags,
};
use crier::store::sqlite::SqliteStore;
use crier::store::Store;

use crate::dataset::{account_name, attr_value, Dataset, ATTRS};
use crate::queries::Query;
use crate::util::{log, measure, Timing};
use crate::workload;

pub const APP: u64 = 1_400_000_001;
pub const KEY: &str = "crier-bench-secret-key-0123456789abcdef";
pub const ADMIN: &str = "administrator";

/// Accounts per applied batch of writes.
const BATCH: u32 = 10_000;

pub fn app_config() -> AppConfig {
    AppConfig {
        admins: vec![ADMIN.into()],
        daily_push_quota: 1_000_000,
        min_push_interval_ms: 0,
        ..AppConfig::new(APP, KEY)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct BuildReport {
    /// Set when the directory came from the dataset cache's snapshot instead of being built.
    pub loaded_from_cache: Option<Duration>,
    pub total: Duration,
    pub import: Duration,
    pub add_tags: Duration,
    pub set_attrs: Duration,
    pub tag_memberships: u64,
}

pub fn attr_names_op() -> DirOp {
    DirOp::SetAttrNames {
        names: ATTRS
            .iter()
            .enumerate()
            .map(|(slot, (name, _))| (slot as u8, (*name).to_owned()))
            .collect(),
    }
}

/// Builds the directory from the dataset. A second thread generates the writes while this one
/// applies them.
pub fn build(dataset: &Dataset, started: Instant) -> (Directory, BuildReport) {
    let (sender, receiver) = mpsc::sync_channel::<[DirOp; 3]>(4);
    let producer_dataset = dataset.clone();
    let producer = std::thread::spawn(move || {
        let dataset = producer_dataset;
        let mut profile = Dataset::empty_profile();
        let mut memberships = 0u64;
        let mut start = 0u32;
        while start < dataset.accounts {
            let end = start.saturating_add(BATCH).min(dataset.accounts);
            let size = (end - start) as usize;
            let (mut accounts, mut tags, mut attrs) = (
                Vec::with_capacity(size),
                Vec::with_capacity(size),
                Vec::with_capacity(size),
            );
            for uid in start..end {
                dataset.profile(uid, &mut profile);
                memberships += profile.tags.len() as u64;
                let account = account_name(uid);
                tags.push(UserTags {
                    account: account.clone(),
                    tags: profile
                        .tags
                        .iter()
                        .map(|&t| dataset.tag_names[t as usize].clone())
                        .collect(),
                });
                attrs.push(UserAttrValues {
                    account: account.clone(),
                    values: profile
                        .attrs
                        .iter()
                        .enumerate()
                        .map(|(slot, &v)| (slot as u8, attr_value(v)))
                        .collect(),
                });
                accounts.push(account);
            }
            let ops = [
                DirOp::Import { accounts },
                DirOp::AddTags { users: tags },
                DirOp::SetAttrs { users: attrs },
            ];
            if sender.send(ops).is_err() {
                break;
            }
            start = end;
        }
        memberships
    });

    let mut directory = Directory::default();
    directory.apply(&attr_names_op());
    let mut report = BuildReport::default();
    let mut applied = 0u64;
    for ops in receiver {
        let mut spent = [Duration::ZERO; 3];
        for (n, op) in ops.iter().enumerate() {
            let t = Instant::now();
            directory.apply(op);
            spent[n] = t.elapsed();
        }
        report.import += spent[0];
        report.add_tags += spent[1];
        report.set_attrs += spent[2];
        applied += BATCH as u64;
        if applied % 1_000_000 == 0 {
            log(
                started,
                format!("crier: applied writes for {applied} accounts"),
            );
        }
        // Dropping the batch's strings happens here, outside the timed applies.
        drop(ops);
    }
    report.tag_memberships = producer.join().expect("generator thread");
    report.total = report.import + report.add_tags + report.set_attrs;
    (directory, report)
}

pub struct AudienceResult {
    pub timing: Timing,
    pub cardinality: u64,
}

pub fn time_audiences(
    directory: &Directory,
    queries: &[Query],
    reps: usize,
) -> anyhow::Result<Vec<AudienceResult>> {
    queries
        .iter()
        .map(|query| {
            let condition = query.to_crier();
            // One untimed run to warm caches, as a server that has run for a while would be.
            drop(directory.audience(&condition));
            let mut last = None;
            let (timing, cardinality) = measure(reps, || {
                let audience = directory.audience(&condition);
                let n = audience.len();
                last = Some(audience);
                Ok(n)
            })?;
            drop(last);
            Ok(AudienceResult {
                timing,
                cardinality,
            })
        })
        .collect()
}

/// The conditions timed while the changes of some tag and attribute writes wait beside the
/// bitmaps, then on the same directory once they are merged: what reads pay for them.
pub struct PendingReads {
    /// `im_add_tag` and `im_set_attr` requests applied (the server phase's first ones).
    pub requests: usize,
    /// `Directory::stats().unmerged_bytes` with the changes waiting.
    pub unmerged_bytes: u64,
    pub with_changes: Vec<AudienceResult>,
    pub merged: Vec<AudienceResult>,
}

pub fn time_audiences_with_changes(
    mut directory: Directory,
    dataset: &Dataset,
    queries: &[Query],
    reps: usize,
    requests: usize,
) -> anyhow::Result<PendingReads> {
    for request in 0..requests {
        directory.apply_all(&[tag_op(dataset, request), attr_op(dataset, request)]);
    }
    let unmerged_bytes = directory.stats().unmerged_bytes;
    let with_changes = time_audiences(&directory, queries, reps)?;
    directory.merge_changes();
    let merged = time_audiences(&directory, queries, reps)?;
    Ok(PendingReads {
        requests,
        unmerged_bytes,
        with_changes,
        merged,
    })
}

fn tag_op(dataset: &Dataset, request: usize) -> DirOp {
    DirOp::AddTags {
        users: workload::tag_request(dataset, request)
            .into_iter()
            .map(|user| UserTags {
                account: account_name(user.uid),
                tags: user
                    .tags
                    .iter()
                    .map(|&t| dataset.tag_names[t].clone())
                    .collect(),
            })
            .collect(),
    }
}

fn attr_op(dataset: &Dataset, request: usize) -> DirOp {
    DirOp::SetAttrs {
        users: workload::attr_request(dataset, request, false)
            .into_iter()
            .map(|user| UserAttrValues {
                account: account_name(user.uid),
                values: user
                    .attrs
                    .iter()
                    .filter_map(|&(slot, value)| Some((slot as u8, attr_value(value?))))
                    .collect(),
            })
            .collect(),
    }
}

/// Bare roaring on copies of the tag bitmaps, without Crier around it: how much of the time
/// above is the bitmap library's own.
pub struct BareResult {
    pub name: String,
    pub timing: Timing,
    pub cardinality: u64,
}

pub fn time_bare_roaring(
    directory: &Directory,
    dataset: &Dataset,
    reps: usize,
) -> anyhow::Result<Vec<BareResult>> {
    use roaring::{MultiOps, RoaringBitmap};
    let tag = |rank: usize| {
        directory.audience(&Condition::Tags {
            and: Vec::new(),
            or: vec![dataset.tag_names[rank].clone()],
            not: Vec::new(),
        })
    };
    let popular: Vec<RoaringBitmap> = (0..3).map(tag).collect();
    let middling: Vec<RoaringBitmap> = (99..101).map(tag).collect();
    let rare: Vec<RoaringBitmap> = (997..1000).map(tag).collect();
    let mut results = Vec::new();
    let mut run = |name: &str, f: &mut dyn FnMut() -> RoaringBitmap| -> anyhow::Result<()> {
        let (timing, cardinality) = measure(reps, || Ok(f().len()))?;
        results.push(BareResult {
            name: name.to_owned(),
            timing,
            cardinality,
        });
        Ok(())
    };
    run(
        "union of the 3 popular tags: `[a, b, c].union()`",
        &mut || popular.iter().union(),
    )?;
    run("union of the 3 rare tags: `[a, b, c].union()`", &mut || {
        rare.iter().union()
    })?;
    run(
        "intersection of the 2 middling tags: `&a & &b`",
        &mut || &middling[0] & &middling[1],
    )?;
    run(
        "intersection of the 2 middling tags: `a.clone() &= &b` (Crier's way)",
        &mut || {
            let mut a = middling[0].clone();
            a &= &middling[1];
            a
        },
    )?;
    Ok(results)
}

/// The dataset cache: a data directory holding the built directory's snapshot, so a rerun with
/// the same accounts, seed and exponent loads it (`snapshot::read`, Crier's start-up path)
/// instead of applying every write again (20 minutes at 10M accounts).
pub fn cache_dir(cache: &Path, dataset: &Dataset, zipf_s: f64) -> std::path::PathBuf {
    cache.join(format!(
        "crier-{}-seed{}-s{}",
        dataset.accounts, dataset.seed, zipf_s
    ))
}

pub fn load_cached(
    dir: &Path,
    dataset: &Dataset,
) -> anyhow::Result<Option<(Directory, BuildReport)>> {
    let Ok(params) = std::fs::read_to_string(dir.join("bench-params.json")) else {
        return Ok(None);
    };
    let params: serde_json::Value = serde_json::from_str(&params)?;
    let store = SqliteStore::open(dir)?;
    let Some(mut stored) = store.load_dir_snapshot(APP)? else {
        return Ok(None);
    };
    let started = Instant::now();
    let directory = snapshot::read(&mut stored.reader, |_, _| {})?;
    let loaded = started.elapsed();
    anyhow::ensure!(
        directory.stats().accounts == u64::from(dataset.accounts),
        "the dataset cache in {} does not match",
        dir.display()
    );
    let report = BuildReport {
        loaded_from_cache: Some(loaded),
        total: Duration::from_secs_f64(params["build_total_s"].as_f64().unwrap_or_default()),
        import: Duration::from_secs_f64(params["build_import_s"].as_f64().unwrap_or_default()),
        add_tags: Duration::from_secs_f64(params["build_add_tags_s"].as_f64().unwrap_or_default()),
        set_attrs: Duration::from_secs_f64(
            params["build_set_attrs_s"].as_f64().unwrap_or_default(),
        ),
        tag_memberships: params["tag_memberships"].as_u64().unwrap_or_default(),
    };
    Ok(Some((directory, report)))
}

pub fn save_cached(dir: &Path, directory: &Directory, report: &BuildReport) -> anyhow::Result<()> {
    write_snapshot(directory, dir)?;
    let params = serde_json::json!({
        "build_total_s": report.total.as_secs_f64(),
        "build_import_s": report.import.as_secs_f64(),
        "build_add_tags_s": report.add_tags.as_secs_f64(),
        "build_set_attrs_s": report.set_attrs.as_secs_f64(),
        "tag_memberships": report.tag_memberships,
    });
    std::fs::write(dir.join("bench-params.json"), params.to_string())?;
    Ok(())
}

/// Writes the snapshot the server loads at start; answers how long it took.
pub fn write_snapshot(directory: &Directory, data_dir: &Path) -> anyhow::Result<Duration> {
    let store = SqliteStore::open(data_dir)?;
    let started = Instant::now();
    store.save_dir_snapshot(APP, 0, &mut |out| snapshot::write(directory, out))?;
    store.flush()?;
    Ok(started.elapsed())
}

pub fn stats_json(stats: &DirectoryStats) -> serde_json::Value {
    serde_json::json!({
        "accounts": stats.accounts,
        "live": stats.live,
        "tags": stats.tags,
        "attr_values": stats.attr_values,
        "bitmap_bytes": stats.bitmap_bytes,
        "account_map_bytes": stats.account_map_bytes,
        "tag_count_bytes": stats.tag_count_bytes,
        "attr_index_bytes": stats.attr_index_bytes,
        "attr_slots_in_use": stats.attr_slots_in_use,
        "unmerged_bytes": stats.unmerged_bytes,
    })
}
