//! Calls per second of each rate-limited command of an app (timpush.md §1.9: the attribute and
//! tag commands take 100 a second each). A window is one calendar second per command, as for
//! the `v4/crier` reads: cheap, and never more than twice the rate over any second.

use std::collections::HashMap;

use parking_lot::Mutex;

use crier_proto::codes;

use super::Tenant;
use crate::clock::now_ms;
use crate::error::Error;

/// Per command: (second, calls counted in it).
#[derive(Default)]
pub(super) struct CallRates {
    windows: Mutex<HashMap<&'static str, (u64, u32)>>,
}

impl CallRates {
    /// Counts a call of `command` at `now_ms`; past `per_second` in its second, answers the
    /// milliseconds until the next second instead.
    fn count(&self, command: &'static str, per_second: u32, now_ms: u64) -> Result<(), u64> {
        let second = now_ms / 1000;
        let mut windows = self.windows.lock();
        let window = windows.entry(command).or_insert((second, 0));
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= per_second {
            return Err(1000 - now_ms % 1000);
        }
        window.1 += 1;
        Ok(())
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
