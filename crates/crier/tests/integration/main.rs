//! Integration tests: the real server on an ephemeral port, spoken to over HTTP.
//! One test binary with a module per area keeps link time down.
// A failed unwrap is a failed test, with the value in the message.
#![allow(clippy::unwrap_used)]

mod harness;
mod observe;
mod process;

mod accounts;
mod attrs;
mod auth;
mod callbacks;
mod cli;
mod cluster;
mod cluster_presence;
mod cluster_tls;
mod concurrent_writes;
mod crash;
mod crier_reads;
mod edge;
mod failover;
mod fakes;
mod gateway;
mod gateway_limits;
mod heap;
mod notify;
mod providers;
mod push;
mod sched;
mod seams;
mod tags;
mod timpush;
mod timpush_directory;
mod timpush_reports;
mod timpush_revoke_notify;
