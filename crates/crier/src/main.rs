//! The `crier` command: parse flags, set up logging, open the store, bind, serve.

mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use crier::config::{self, Config, Overrides};
use crier::server::serve;
use crier_proto::usersig;

#[derive(Parser)]
#[command(
    name = "crier",
    version,
    about = "A self-hostable push service that speaks Tencent Cloud Chat's Push to All Users REST API."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the REST API (and health check) on one listener.
    ///
    /// Settings come from defaults, then the config file, then CRIER_* environment variables,
    /// then these flags. With no config file naming apps, a development app is created in the
    /// data directory on first start and reused afterwards; its sdkappid, admin and key are printed.
    Serve {
        /// TOML configuration file with [[app]] tables (see shared/spec/server-cli.md).
        #[arg(long, env = "CRIER_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "CRIER_LISTEN", value_name = "ADDR")]
        listen: Option<String>,
        /// Where the embedded store keeps its files [default: ./crier-data].
        #[arg(long, env = "CRIER_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Log format: human-readable text or one JSON object per line.
        #[arg(long, env = "CRIER_LOG_FORMAT", value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Client connections open at once, WebSocket sessions included; past it (and a small
        /// reserve for /healthz, /metrics and admin calls) new connections are closed at once
        /// [default: the open-file limit less a fiftieth of it (at least 256) and the reserve].
        #[arg(long, env = "CRIER_MAX_CONNECTIONS", value_name = "N")]
        max_connections: Option<usize>,
        /// On SIGTERM or SIGINT, how long requests in flight may take before they are cut and
        /// the store is flushed anyway [default: 10].
        #[arg(long, env = "CRIER_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
        shutdown_timeout: Option<u64>,
        /// The store: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE for a cluster of nodes
        /// sharing it [default: the embedded SQLite store under the data directory]. TLS as
        /// libpq: ?sslmode=disable|prefer (default)|require|verify-ca|verify-full, and
        /// &sslrootcert=CA.pem for the verifying modes [default: the system's roots]. The
        /// password is never printed.
        #[arg(long, env = "CRIER_STORE", value_name = "URL", hide_env_values = true)]
        store: Option<String>,
        /// The bus between nodes: nats://HOST[:PORT] [default: in-process, a single node].
        #[arg(long, env = "CRIER_BUS", value_name = "URL", hide_env_values = true)]
        bus: Option<String>,
        /// This node's name in a cluster [default: made up at start].
        #[arg(long, env = "CRIER_NODE_ID", value_name = "NAME")]
        node_id: Option<String>,
        /// Transparent huge pages for the heap: with `try`, where the kernel gives them only
        /// on request (`madvise`) and GLIBC_TUNABLES is not set, the server starts itself over
        /// with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (12-20 % faster bulk directory writes at
        /// ten million accounts). Setting GLIBC_TUNABLES yourself also leaves it alone.
        #[arg(long, env = "CRIER_HUGE_PAGES", value_enum, default_value = "try")]
        huge_pages: HugePages,
    },
    /// Print a UserSig v2 for an identifier, byte-compatible with Tencent's signing libraries.
    Usersig {
        /// The app's SDKAppID.
        #[arg(long)]
        sdkappid: u64,
        /// The app's secret key (the string itself, as in the config file).
        #[arg(long)]
        key: String,
        /// The account (or admin) the signature is for.
        #[arg(long)]
        identifier: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = usersig::DEFAULT_EXPIRE_SECONDS)]
        expire: u64,
    },
    /// Log in as an account over WebSocket and print each push as one JSON line, acknowledging it.
    ///
    /// Reconnects with back-off when the connection drops; stops when the login is refused or
    /// the account is kicked.
    Listen(cli::listen::ListenArgs),
    /// Send one im_push (to everyone, or by tags or attributes) and print its TaskId; with
    /// --timpush (or --online-only, --data-id) a v4/timpush/push, which `crier revoke` can recall;
    /// with --at a scheduled task that makes that push later (prints its TaskID).
    Push(Box<cli::push::PushArgs>),
    /// Recall a push sent with v4/timpush/push: nobody gets it any more, open sessions get a
    /// Revoke frame, notifications shown are replaced by --title/--desc.
    Revoke(cli::revoke::RevokeArgs),
    /// Print the report of pushes: audience, online and offline deliveries, acks, notifications.
    Tasks(cli::tasks::TasksArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HugePages {
    Try,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CRIER_LOG").unwrap_or_else(|_| "info".into());
    // Colour codes only for a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The whole cause chain on one line, without a backtrace: these are user errors.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Usersig {
            sdkappid,
            key,
            identifier,
            expire,
        } => {
            // Tencent's libraries sign any text; a token the server would refuse is no use.
            usersig::check_identifier(&identifier)
                .map_err(|e| anyhow::anyhow!("cannot sign for identifier {identifier:?}: {e}"))?;
            println!(
                "{}",
                usersig::sign(
                    sdkappid,
                    &key,
                    &identifier,
                    expire,
                    crier::clock::now_secs()
                )
            );
            Ok(())
        }
        Command::Listen(args) => client_runtime()?.block_on(cli::listen::run(args)),
        Command::Push(args) => client_runtime()?.block_on(cli::push::run(*args)),
        Command::Tasks(args) => client_runtime()?.block_on(cli::tasks::run(args)),
        Command::Revoke(args) => client_runtime()?.block_on(cli::revoke::run(args)),
        Command::Serve {
            config,
            listen,
            data_dir,
            log_format,
            max_connections,
            shutdown_timeout,
            store,
            bus,
            node_id,
            huge_pages,
        } => {
            // First: starting over discards everything done before.
            let heap = crier::huge_pages::restart_on_huge_pages(huge_pages == HugePages::Try);
            init_logging(log_format);
            tracing::info!("{}", heap.describe());
            let overrides = Overrides {
                config_file: config,
                listen,
                data_dir,
                max_connections,
                shutdown_timeout_secs: shutdown_timeout,
                store,
                bus,
                node_id,
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run_server(overrides))
        }
    }
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    init_logging(LogFormat::Text);
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn run_server(overrides: Overrides) -> anyhow::Result<()> {
    let mut config = Config::resolve(&overrides)?;
    if config.apps.is_empty() {
        let (app, created) = config::load_or_create_dev_app(&config.data_dir)?;
        let verb = if created { "created" } else { "using" };
        println!(
            "{verb} development app {sdkappid} (admin \"{admin}\"; key in {file})\nmake an admin UserSig with:\n  crier usersig --sdkappid {sdkappid} --key {key} --identifier {admin}",
            sdkappid = app.sdkappid,
            admin = app.admins.first().map(String::as_str).unwrap_or("administrator"),
            file = config.data_dir.join(config::DEV_APP_FILE).display(),
            key = app.secret_key.0,
        );
        config.apps.push(app);
    }
    tracing::info!(listen = %config.listen, data_dir = %config.data_dir.display(), apps = config.apps.len(), "starting");
    let state = crier::server::open_state(&config)
        .await
        .with_context(|| match &config.store {
            Some(url) => format!("cannot open the store {url}"),
            None => format!("cannot open the store in {}", config.data_dir.display()),
        })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve(listener, Arc::new(state), shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutdown signal received");
}
