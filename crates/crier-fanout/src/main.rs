//! `crier-fanout`: the fan-out benchmark of issue 3. One push to N logged-in WebSocket clients
//! of a real `crier serve`, side by side with the same N subscribers on Mosquitto (MQTT QoS 0,
//! one topic) and NATS (one subject), measured from just before the send to each client's
//! receipt. Clients live in several load-generator processes (this binary's hidden `load-gen`
//! subcommand), one tokio task per socket, spread over several `127.0.0.x` source addresses.
//!
//! With `--cluster K` (issue 13) each system runs as K servers and the clients are spread over
//! them: K Crier nodes on one fresh PostgreSQL database and a NATS bus, K `nats-server`
//! processes joined by routes, K Mosquitto brokers bridged from the first (`cluster.rs`); the
//! message is published on the first server.
//!
//! ```sh
//! cargo build --release -p crier -p crier-fanout
//! target/release/crier-fanout --markdown fanout.md
//! target/release/crier-fanout --cluster 3 --sizes 10000,50000 --markdown fanout-cluster.md
//! ```

mod cluster;
mod common;
mod coord;
mod loadgen;
mod report;
mod server;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Fan-out benchmark: one push to N WebSocket clients on Crier, beside Mosquitto and NATS",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: coord::BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// A load-generator process (started by the coordinator).
    #[command(hide = true)]
    LoadGen(loadgen::LoadGenArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::LoadGen(args)) => loadgen::run(args),
        None => coord::run(cli.bench),
    }
}
