//! `crier-soak`: the soak benchmark of issue 11. A real `crier serve` holds honest WebSocket
//! sessions and answers honest REST load (pushes at the allowed rate, tag and attribute
//! writes, reads) for a set time, beside hostile connections (slowloris, stalled bodies, idle
//! sockets, sessions that never read); its memory and CPU are sampled every second. Then it is
//! killed with SIGKILL, restarted on the same data, and every acknowledged write is looked for.
//! Honest sessions and hostile connections live in child processes of this binary (hidden
//! subcommands), as one process may hold at most 20,000 open files.
//!
//! ```sh
//! cargo build --release -p crier -p crier-soak
//! target/release/crier-soak --markdown soak.md --plot soak-rss.svg
//! ```

mod args;
mod children;
mod client;
mod collect;
mod common;
mod coord;
mod hostile;
mod plot;
mod pushes;
mod report;
mod rest;
mod sampler;
mod server;
mod sessions;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Soak benchmark: honest sessions and REST load on crier serve beside hostile connections, then kill -9 and a durability check",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    soak: args::SoakArgs,
}

#[derive(Subcommand)]
enum Command {
    /// A process of honest sessions (started by the coordinator).
    #[command(hide = true)]
    Sessions(sessions::SessionsArgs),
    /// A process of hostile connections (started by the coordinator).
    #[command(hide = true)]
    Hostile(hostile::HostileArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sessions(args)) => sessions::run(args),
        Some(Command::Hostile(args)) => hostile::run(args),
        None => coord::run(cli.soak),
    }
}
