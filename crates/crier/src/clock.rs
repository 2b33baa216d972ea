//! Wall-clock time in the units the wire uses.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Start of the UTC day holding `ms`.
pub fn utc_day_start_ms(ms: u64) -> u64 {
    ms - ms % 86_400_000
}
