//! `crier listen`: log in as one account and print every push (and revoke) as a JSON line,
//! acknowledging each push once printed. Given several `--server`, it fails over between the
//! nodes of a cluster.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use crier_client::{Listener, LoginOptions, Received};
use crier_proto::usersig;

use super::{websocket_url, Target};

#[derive(Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub target: Target,
    /// A node of a cluster to log in to, instead of --url: give it once per node
    /// (--server http://a:8080 --server http://b:8080) or comma-separated. The first login goes
    /// to one of them at random; when its connection fails or drops, the next one is tried.
    #[arg(
        long = "server",
        visible_alias = "servers",
        value_name = "URL",
        env = "CRIER_SERVERS",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
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

impl ListenArgs {
    /// The gateway URLs of the `--server` nodes; empty when only `--url` names the server.
    pub fn websocket_urls(&self) -> Vec<String> {
        self.servers.iter().map(|url| websocket_url(url)).collect()
    }
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let servers = args.websocket_urls();
    let options = LoginOptions {
        url: args.target.websocket_url(),
        sdkappid: args.target.sdkappid,
        identifier: args.identifier.clone(),
        user_sig: String::new(),
        platform: args.platform,
    };
    let (sdkappid, key, identifier) = (args.target.sdkappid, args.target.key, args.identifier);
    let mut listener = Listener::start_with_servers(servers, options, move || {
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
        let Some(received) = listener.next_received().await else {
            return Err(listener.stop_reason().await).context("stopped listening");
        };
        // One line per push (or revoke), flushed at once so pipes see it as it arrives.
        let mut out = stdout.lock();
        match &received {
            Received::Push(push) => serde_json::to_writer(&mut out, push)?,
            Received::Revoke {
                task_id,
                offline_push_info,
            } => {
                let info = offline_push_info
                    .as_deref()
                    .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
                let line = serde_json::json!({"Type": "Revoke", "TaskId": task_id, "OfflinePushInfo": info});
                serde_json::to_writer(&mut out, &line)?;
            }
        }
        out.write_all(b"\n")?;
        out.flush()?;
        drop(out);
        if let Received::Push(push) = received {
            listener.ack(push.task_id);
            printed += 1;
        }
    }
    match listener.close().await {
        crier_client::ClientError::Closed { code: 1000, .. } => Ok(()),
        error => Err(error).context("closing the connection"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        listen: ListenArgs,
    }

    fn parse(servers: &[&str]) -> ListenArgs {
        let flags = [
            "crier-listen",
            "--sdkappid",
            "1",
            "--key",
            "k",
            "--identifier",
            "a",
        ];
        Command::parse_from(flags.iter().chain(servers)).listen
    }

    #[test]
    fn server_is_repeated_or_comma_separated() {
        let args = parse(&[
            "--server",
            "http://a:8080",
            "--servers",
            "https://b:8443/,ws://c:1/v4/ws",
        ]);
        assert_eq!(
            args.websocket_urls(),
            ["ws://a:8080/v4/ws", "wss://b:8443/v4/ws", "ws://c:1/v4/ws"]
        );
    }

    #[test]
    fn without_server_the_url_is_the_only_one() {
        assert!(parse(&[]).websocket_urls().is_empty());
    }
}
