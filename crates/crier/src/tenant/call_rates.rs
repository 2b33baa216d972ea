//! Calls per second of each of an app's commands limited by name (timpush.md §1.9: the
//! attribute and tag commands take 100 a second each), a [`PerSecond`] window per command.

use std::collections::HashMap;

use parking_lot::Mutex;

use crier_proto::codes;

use super::Tenant;
use crate::clock::now_ms;
use crate::error::Error;
use crate::push::limits::PerSecond;

/// Per command, the calls of its current second.
#[derive(Default)]
pub(super) struct CallRates {
    windows: Mutex<HashMap<&'static str, PerSecond>>,
}

impl CallRates {
    /// Counts a call of `command` at `now_ms`; past `per_second` in its second, answers the
    /// milliseconds until the next second instead.
    fn count(&self, command: &'static str, per_second: u32, now_ms: u64) -> Result<(), u64> {
        let mut windows = self.windows.lock();
        if windows
            .entry(command)
            .or_default()
            .try_take(now_ms, per_second)
        {
            Ok(())
        } else {
            Err(1000 - now_ms % 1000)
        }
    }
}

impl Tenant {
    /// Counts a call of `command` (its path, as the refusal names it) against `per_second`;
    /// past it, 90024 with how long to wait. A refused call is not counted.
    pub fn count_call(&self, command: &'static str, per_second: u32) -> Result<(), Error> {
        self.call_rates
            .count(command, per_second, now_ms())
            .map_err(|retry_ms| {
                Error::rejected(
                    codes::PUSH_TOO_FREQUENT,
                    format!(
                        "{command} takes at most {per_second} calls per second per app; retry in {retry_ms} ms"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_has_its_own_window_of_one_second() {
        let rates = CallRates::default();
        for n in 0..100 {
            assert_eq!(rates.count("a", 100, 5_000 + n), Ok(()));
        }
        assert_eq!(rates.count("a", 100, 5_400), Err(600));
        assert_eq!(rates.count("a", 100, 5_999), Err(1));
        assert_eq!(rates.count("b", 100, 5_999), Ok(()));
        assert_eq!(rates.count("a", 100, 6_000), Ok(()));
        assert_eq!(rates.count("c", 1, 6_000), Ok(()));
        assert_eq!(rates.count("c", 1, 6_500), Err(500));
    }
}
