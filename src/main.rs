//! rollgate: parse the command line, wire the parts, run, drain on signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod gateway;
mod rollout;

#[derive(Parser, Debug)]
#[command(
    name = "rollgate",
    version,
    about = "Inference gateway: weighted canary, shadow traffic, progressive delivery of models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a config file: data plane, admin API, hot reload.
    Run {
        /// YAML config file (see the README for every key).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: print every error with its path; exit 1 when invalid.
    Validate { file: PathBuf },
    /// Run the OpenAI-compatible model-server simulator.
    Sim(Box<rollgate_loadtest::sim::SimArgs>),
    /// Self-contained demo: two simulators, the gateway in front, live traffic.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own live table; routine info logs would bury it.
    init_logging(if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    });
    let result = match cli.command {
        Command::Validate { file } => return gateway::validate(&file),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(gateway::run(config))),
        Command::Sim(args) => runtime().and_then(|rt| rt.block_on(demo::run_sim(*args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("rollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The control runtime: admin API, reloads, signals. The data plane has its own threads.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rollgate-control")
        .enable_all()
        .build()?)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: escape codes garble log files and collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
