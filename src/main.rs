//! The `authlink` binary: parse the command line, load the configuration, start the application.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use authlink::config::{GeneratedKeys, Settings};

/// See Cargo.toml: the allocator is a measured choice for the request path.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread returns freed memory to the
/// system within about a second (`dirty_decay_ms`, `muzzy_decay_ms`). Without it, freed pages
/// are only purged when the allocator is next called, which an idle daemon holding parked
/// requests rarely does: after a burst of 10,000 long-polls it stayed at its peak (141 MiB
/// instead of 71 MiB, issue 24). `_RJEM_MALLOC_CONF` in the environment overrides any of these
/// (it is read after this string), e.g. `_RJEM_MALLOC_CONF=background_thread:false`.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:1000\0"[0]);
use authlink::startup::Application;
use authlink::telemetry;

#[derive(Parser)]
#[command(
    name = "authlink",
    version,
    about = "OAuth authorization links for chatbots and AI agents"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, global = true, env = "AUTHLINK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Print fresh signing and encryption keys and an operator key, as TOML for the config file.
    Keygen,
    /// Check the configuration and report every problem; exit code 1 if there is any.
    CheckConfig,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Version => {
            println!("authlink {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Keygen => {
            print!("{}", GeneratedKeys::new().to_toml());
            ExitCode::SUCCESS
        }
        Command::CheckConfig => check_config(cli.config),
        Command::Serve => serve(cli.config),
    }
}

fn report(problems: &[authlink::config::Problem]) {
    eprintln!(
        "authlink: the configuration has {} problem(s):",
        problems.len()
    );
    for p in problems {
        eprintln!("  - {p}");
    }
}

fn check_config(file: Option<PathBuf>) -> ExitCode {
    let result = Settings::load(file.as_deref()).and_then(|s| s.validate());
    match result {
        Ok(config) => {
            println!(
                "configuration OK: public_url {}, listen {}, store {}",
                config.public_url,
                config.listen,
                match config.store {
                    authlink::config::StoreConfig::Memory => "memory (embedded)".to_string(),
                    authlink::config::StoreConfig::Redis {
                        topology, prefix, ..
                    } => {
                        use authlink::config::RedisTopology;
                        let what = match topology {
                            RedisTopology::Single(_) => "redis".to_string(),
                            RedisTopology::Cluster(n) => {
                                format!("redis cluster ({} seed nodes)", n.len())
                            }
                            RedisTopology::Sentinel(s) => format!(
                                "redis sentinel (master {:?}, {} sentinels)",
                                s.master_name,
                                s.nodes.len()
                            ),
                        };
                        format!("{what} (prefix {prefix})")
                    }
                }
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            report(&problems);
            ExitCode::FAILURE
        }
    }
}

fn serve(file: Option<PathBuf>) -> ExitCode {
    let mut settings = match Settings::load(file.as_deref()) {
        Ok(s) => s,
        Err(problems) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
    };
    // No configuration at all: a development run with throw-away keys.
    let ephemeral = (file.is_none() && !settings.has_keys()).then(|| {
        let keys = GeneratedKeys::new();
        keys.apply(&mut settings);
        keys
    });
    let config = match settings.validate() {
        Ok(c) => c,
        Err(problems) => {
            report(&problems);
            return ExitCode::FAILURE;
        }
    };
    // A zero-configuration run prints its operator key, serves the demo provider (anyone may
    // sign in) and keeps nothing: fine on this machine, never on an interface others reach.
    if ephemeral.is_some() && !config.listen.ip().is_loopback() {
        eprintln!(
            "authlink: refusing to start without configuration on {}: a run with no keys and no \
             store is for this machine only (throw-away keys, the demo provider, the operator key \
             printed).\n  Either listen on a loopback address (AUTHLINK__LISTEN=127.0.0.1:8080), \
             or configure keys and a store: `authlink keygen > authlink.toml`, set \
             [store] redis_url, and run `authlink serve --config authlink.toml`.",
            config.listen
        );
        return ExitCode::FAILURE;
    }
    // Before any thread or socket: the connection cap is fitted under the raised limit.
    let descriptors = authlink::bounds::raise_descriptor_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authlink: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporter (feature `otlp`) sends from it. Dropped after the
    // server stops, while the runtime still runs, so the last spans are flushed.
    let telemetry = {
        let _inside = runtime.enter();
        telemetry::init(config.log_format)
    };
    if let Some(keys) = &ephemeral {
        eprintln!(
            "\n  !! authlink is running WITHOUT configuration: ephemeral keys, embedded store.\n  \
             !! Every session, key and token is lost when it stops. Not for production.\n  \
             !! Operator key for this run: {}\n",
            keys.operator_key.expose_secret()
        );
    }
    tracing::info!(
        descriptors = descriptors.map_or_else(|| "unlimited".to_owned(), |d| d.to_string()),
        "descriptor limit"
    );
    if matches!(config.store, authlink::config::StoreConfig::Memory) {
        tracing::warn!("using the embedded in-memory store: one process, nothing persisted");
    }
    let demo = ephemeral
        .as_ref()
        .and_then(|keys| authlink::demo::DemoMode::zero_config(&config, keys));
    let result = runtime.block_on(async {
        let mut app = Application::build(config).await?;
        if let Some(mode) = demo {
            eprintln!("{}", app.enable_demo(mode).await?.banner());
        }
        tracing::info!(addr = %app.local_addr(), "authlink listening");
        app.run_until_stopped(shutdown_signal()).await
    });
    let code = match result {
        Ok(()) => {
            tracing::info!("authlink stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authlink: {e:#}");
            ExitCode::FAILURE
        }
    };
    drop(telemetry);
    code
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
