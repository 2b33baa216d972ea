//! What the child processes report at the end: honest sessions' receipts and errors, hostile
//! connections' ends, parsed from their `RESULT`/`ERR` and `KIND`/`WHY`/`SENT` lines.

use std::collections::BTreeMap;

/// What the honest sessions saw (summed over their processes).
#[derive(Default)]
pub struct SessionOutcome {
    pub count: u64,
    pub ready: u64,
    pub logged: u64,
    pub complete: u64,
    pub missing: u64,
    pub extra: u64,
    pub duplicates: u64,
    pub reconnects: u64,
    pub received: u64,
    pub errors: BTreeMap<String, u64>,
}

/// What the hostile connections of one kind saw.
#[derive(Default, Clone)]
pub struct HostileKind {
    pub name: String,
    pub target: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub ended: u64,
    pub open_at_end: u64,
    /// Time from connect to the server's answer or close, ms: min, p50, p90, max.
    pub ended_ms: [u64; 4],
    /// Age of the connections still open at the end, ms: youngest, oldest.
    pub open_age_ms: [u64; 2],
    pub why: Vec<(u64, String)>,
}

pub fn parse_sessions(lines: &[String], into: &mut SessionOutcome) {
    for line in lines {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("RESULT") => {
                let n: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
                if let [count, logged, complete, missing, extra, dups, reconnects, received] = n[..]
                {
                    into.count += count;
                    into.logged += logged;
                    into.complete += complete;
                    into.missing += missing;
                    into.extra += extra;
                    into.duplicates += dups;
                    into.reconnects += reconnects;
                    into.received += received;
                }
            }
            Some("ERR") => {
                let count: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let kind = words.collect::<Vec<_>>().join(" ");
                *into.errors.entry(kind).or_default() += count;
            }
            _ => eprintln!("  sessions: {line}"),
        }
    }
}

pub fn parse_hostile(lines: &[String]) -> (Vec<HostileKind>, u64) {
    let mut kinds: Vec<HostileKind> = Vec::new();
    let mut sent = 0;
    for line in lines {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.first().copied() {
            Some("KIND") if words.len() >= 13 => {
                let n: Vec<u64> = words[2..].iter().map(|w| w.parse().unwrap_or(0)).collect();
                kinds.push(HostileKind {
                    name: words[1].to_owned(),
                    target: n[0],
                    connects: n[1],
                    connect_failures: n[2],
                    ended: n[3],
                    open_at_end: n[4],
                    ended_ms: [n[5], n[6], n[7], n[8]],
                    open_age_ms: [n[9], n[10]],
                    why: Vec::new(),
                });
            }
            Some("WHY") if words.len() >= 3 => {
                if let Some(kind) = kinds.iter_mut().find(|k| k.name == words[1]) {
                    kind.why
                        .push((words[2].parse().unwrap_or(0), words[3..].join(" ")));
                }
            }
            Some("SENT") => sent = words.get(1).and_then(|w| w.parse().ok()).unwrap_or(0),
            _ => eprintln!("  hostile: {line}"),
        }
    }
    (kinds, sent)
}
