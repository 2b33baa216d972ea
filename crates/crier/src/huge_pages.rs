//! Transparent huge pages for the heap, asked of glibc's allocator when the server starts.
//!
//! At ten million accounts the directory is about a gigabyte of bitmaps, tag lists and the
//! identifier map, and a bulk write lands at random places all over it: with 4 KiB pages nearly
//! every one of those accesses also misses the TLB and walks the page tables. Where the kernel
//! gives transparent huge pages only to memory that asks for them (`madvise`, Debian's and
//! Ubuntu's default), glibc's allocator asks only when its `glibc.malloc.hugetlb=1` tunable is
//! set, and it reads tunables once, from `GLIBC_TUNABLES`, before `main`. So `serve` starts
//! itself over with that set, as PostgreSQL's `huge_pages = try` asks for huge pages on its own.
//! Measured at 10M accounts, alternated runs: `im_add_tag` +12-20 % users/s, `im_set_attr`
//! +12-21 %, with the same memory per WebSocket session in the fan-out benchmark.

/// The tunable that makes glibc's allocator advise its heap for transparent huge pages.
const TUNABLE: &str = "glibc.malloc.hugetlb=1";
const TUNABLES_VARIABLE: &str = "GLIBC_TUNABLES";
const KERNEL_SETTING: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Why the heap is, or is not, on huge pages: logged once the log is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeapPages {
    /// This process was started with the tunable set.
    Huge,
    /// `GLIBC_TUNABLES` was set by whoever started the server, without the tunable: theirs to
    /// choose.
    LeftToTheOperator(String),
    /// The kernel gives huge pages to all memory (`always`) or to none (`never`): asking
    /// changes nothing.
    KernelSays(String),
    /// Not asked for (`--huge-pages off`), or not a Linux build on glibc.
    NotAsked,
    /// Starting over failed; the server goes on with the pages it has.
    RestartFailed(String),
}

impl HeapPages {
    /// A line for the log.
    pub fn describe(&self) -> String {
        match self {
            HeapPages::Huge => format!("heap on transparent huge pages ({TUNABLE})"),
            HeapPages::LeftToTheOperator(tunables) => {
                format!("heap pages left to {TUNABLES_VARIABLE}={tunables}")
            }
            HeapPages::KernelSays(setting) => {
                format!("heap pages as the kernel gives them: transparent huge pages {setting}")
            }
            HeapPages::NotAsked => "heap on the system's default pages".to_owned(),
            HeapPages::RestartFailed(error) => format!(
                "heap on the system's default pages: starting over with {TUNABLE} failed: {error}"
            ),
        }
    }
}

/// Starts this process over, same program and arguments, with glibc's allocator told to use
/// transparent huge pages, when that changes anything. Returns only when it does not start
/// over: call it first thing, before threads and files exist.
pub fn restart_on_huge_pages(wanted: bool) -> HeapPages {
    let tunables = std::env::var(TUNABLES_VARIABLE).ok();
    let kernel = std::fs::read_to_string(KERNEL_SETTING).ok();
    match decide(wanted, tunables.as_deref(), kernel.as_deref()) {
        Decision::Restart => restart(),
        Decision::Stay(pages) => pages,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Restart,
    Stay(HeapPages),
}

fn decide(wanted: bool, tunables: Option<&str>, kernel: Option<&str>) -> Decision {
    if let Some(tunables) = tunables {
        return Decision::Stay(if tunables.split(':').any(|t| t == TUNABLE) {
            HeapPages::Huge
        } else {
            HeapPages::LeftToTheOperator(tunables.to_owned())
        });
    }
    if !wanted || !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Decision::Stay(HeapPages::NotAsked);
    }
    // The setting reads like "always [madvise] never", the one in force in brackets.
    let in_force = kernel
        .and_then(|text| Some(text.split_once('[')?.1.split_once(']')?.0))
        .unwrap_or("missing");
    match in_force {
        "madvise" => Decision::Restart,
        other => Decision::Stay(HeapPages::KernelSays(other.to_owned())),
    }
}

#[cfg(unix)]
fn restart() -> HeapPages {
    use std::ffi::OsString;
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| OsString::from("crier"));
    // The running binary itself, even if a newer one has replaced it on disk since.
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .env(TUNABLES_VARIABLE, TUNABLE)
        .exec();
    HeapPages::RestartFailed(error.to_string())
}

#[cfg(not(unix))]
fn restart() -> HeapPages {
    HeapPages::NotAsked
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: Option<&str> = Some("always [madvise] never\n");

    #[test]
    fn restarts_only_where_the_kernel_waits_to_be_asked_and_nobody_chose() {
        let linux_glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(
            decide(true, None, MADVISE) == Decision::Restart,
            linux_glibc
        );
        assert_eq!(
            decide(false, None, MADVISE),
            Decision::Stay(HeapPages::NotAsked)
        );
        assert_eq!(
            decide(true, Some(TUNABLE), MADVISE),
            Decision::Stay(HeapPages::Huge)
        );
        assert_eq!(
            decide(
                true,
                Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
                MADVISE
            ),
            Decision::Stay(HeapPages::Huge)
        );
        assert_eq!(
            decide(true, Some("glibc.malloc.hugetlb=0"), MADVISE),
            Decision::Stay(HeapPages::LeftToTheOperator(
                "glibc.malloc.hugetlb=0".into()
            ))
        );
        if linux_glibc {
            for (kernel, setting) in [
                (Some("[always] madvise never"), "always"),
                (Some("always madvise [never]"), "never"),
                (None, "missing"),
            ] {
                assert_eq!(
                    decide(true, None, kernel),
                    Decision::Stay(HeapPages::KernelSays(setting.into()))
                );
            }
        }
    }
}
