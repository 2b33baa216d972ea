//! The server's RSS, CPU time and open descriptors, read from `/proc` once a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{cpu_ticks, open_fds, proc_status_kb};

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub rss_kb: u64,
    pub cpu_ticks: u64,
    pub fds: usize,
}

pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: u32, t0: Instant) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // Counting 17,000 descriptors takes a few milliseconds: off the runtime.
                let read = tokio::task::spawn_blocking(move || {
                    Some(Sample {
                        t: t0.elapsed().as_secs_f64(),
                        rss_kb: proc_status_kb(pid, "VmRSS")?,
                        cpu_ticks: cpu_ticks(&pid.to_string())?,
                        fds: open_fds(pid).unwrap_or(0),
                    })
                })
                .await;
                match read {
                    Ok(Some(sample)) => {
                        if let Ok(mut samples) = into.lock() {
                            samples.push(sample);
                        }
                    }
                    // The process is gone.
                    _ => return,
                }
            }
        });
        Sampler { samples, task }
    }

    /// The samples taken so far, shared with the sampling task.
    pub fn samples(&self) -> Arc<Mutex<Vec<Sample>>> {
        Arc::clone(&self.samples)
    }

    pub fn stop(self) -> Vec<Sample> {
        self.task.abort();
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
