//! `crier listen`: log in as one account and print every push as a JSON line, acknowledging
//! it once printed.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use crier_client::{Listener, LoginOptions};
use crier_proto::usersig;

use super::Target;

#[derive(Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub target: Target,
    /// The account to log in as (an unknown account is registered by its first login).
    #[arg(long)]
    pub identifier: String,
    /// Login platform reported by query_online_status (iPhone, Android, Web, PC, iPad, Mac).
    #[arg(long)]
    pub platform: Option<String>,
    /// Stop after this many pushes (default: listen until interrupted, kicked or refused).
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let options = LoginOptions {
        url: args.target.websocket_url(),
        sdkappid: args.target.sdkappid,
        identifier: args.identifier.clone(),
        user_sig: String::new(),
        platform: args.platform,
    };
    let (sdkappid, key, identifier) = (args.target.sdkappid, args.target.key, args.identifier);
    let mut listener = Listener::start(options, move || {
        usersig::sign(
            sdkappid,
            &key,
            &identifier,
            usersig::DEFAULT_EXPIRE_SECONDS,
            crier::clock::now_secs(),
        )
    });
    let mut printed = 0;
    let stdout = std::io::stdout();
    while args.count.is_none_or(|count| printed < count) {
        let Some(push) = listener.next().await else {
            return Err(listener.stop_reason().await).context("stopped listening");
        };
        // One line per push, flushed at once so pipes see it as it arrives.
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &push)?;
        out.write_all(b"\n")?;
        out.flush()?;
        drop(out);
        listener.ack(push.task_id);
        printed += 1;
    }
    match listener.close().await {
        crier_client::ClientError::Closed { code: 1000, .. } => Ok(()),
        error => Err(error).context("closing the connection"),
    }
}
