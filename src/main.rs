//! rollgate: parse the command line, wire the parts, run, drain on signal.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;
mod demo;
mod gateway;
mod gitops;
mod pr;
mod preflight;
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
    /// Serve a config file or a Git branch: data plane, admin API, hot reload.
    Run(Box<gateway::RunArgs>),
    /// Validate a config file, or the file in a Git commit (`--repo R --rev X`), and run the
    /// policy checks (against the parent commit's config when there is one); a FILE is also
    /// checked for what `run` needs from this machine (unless --config-only). Exit 0 valid,
    /// 1 invalid or unreadable (every error printed with its path), 3 policy violation.
    Validate(pr::ValidateArgs),
    /// What changes between the config in two Git commits (models, weights, candidates, steps,
    /// gates), as Markdown for a PR comment or `--json`, and the policy checks. Exit 0 ok,
    /// 1 invalid or unreadable, 3 policy violation.
    Diff(pr::DiffArgs),
    /// Run the OpenAI-compatible model-server simulator.
    Sim(Box<rollgate_loadtest::sim::SimArgs>),
    /// Self-contained demo: two simulators, the gateway in front, live traffic.
    Demo(demo::DemoArgs),
    /// Operator CLI: rollout status and break-glass commands through the admin API.
    Ctl(ctl::CtlArgs),
    /// Load generator: open or closed loop, OpenAI-shaped or plain requests, HDR latencies,
    /// `--compare` to measure what a gateway adds (see docs/loadtest.md).
    Loadtest(Box<rollgate_loadtest::load::LoadArgs>),
    /// Serve this node's GPU memory (NVML) as /metrics and /gpus for rollout gates.
    GpuAgent(rollgate_control::gpu::GpuAgentArgs),
    /// Print the `ModelRollout` CustomResourceDefinition (YAML) that status is written to.
    #[cfg(feature = "k8s")]
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo and the load generator print their own live lines; info logs would bury them.
    init_logging(
        if matches!(cli.command, Command::Demo(_) | Command::Loadtest(_)) {
            "warn"
        } else {
            "info"
        },
    );
    // A service's last words are a log line like the rest of its log; a tool's are one plain
    // line for the person who ran it (both once: the log is on stderr too).
    let service = matches!(
        cli.command,
        Command::Run(_) | Command::Sim(_) | Command::GpuAgent(_)
    );
    let result = match cli.command {
        Command::Validate(args) => return pr::validate(args),
        Command::Diff(args) => return pr::diff(args),
        Command::Run(args) => {
            runtime().and_then(|rt| rt.block_on(gateway::run(args.into_source())))
        }
        Command::Sim(args) => {
            sim_runtime(args.threads).and_then(|rt| rt.block_on(demo::run_sim(*args)))
        }
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Ctl(args) => runtime().and_then(|rt| rt.block_on(ctl::run(args))),
        Command::GpuAgent(args) => runtime().and_then(|rt| rt.block_on(gpu_agent(args))),
        // Runs its own generator threads and runtimes; no control runtime needed.
        Command::Loadtest(args) => rollgate_loadtest::load::run(&args),
        #[cfg(feature = "k8s")]
        Command::Crd => gitops::crd().map(|yaml| {
            #[allow(clippy::print_stdout)]
            {
                print!("{yaml}");
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if service {
                tracing::error!("{e:#}");
            } else {
                eprintln!("rollgate: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `rollgate gpu-agent`: serve until SIGTERM/SIGINT, then exit 0.
async fn gpu_agent(args: rollgate_control::gpu::GpuAgentArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: until they exist SIGTERM's default action kills the process.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("binding the gpu-agent listener on {}: {e}", args.listen))?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "rollgate gpu-agent ready: http://{}",
            listener.local_addr()?
        );
    }
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    Ok(rollgate_control::gpu::serve(listener, args, stop).await?)
}

/// The control runtime: admin API, reloads, signals. The data plane has its own threads.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rollgate-control")
        .enable_all()
        .build()?)
}

/// `rollgate sim`'s runtime: `--threads 1` is a current-thread runtime.
fn sim_runtime(threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads.into());
        b
    };
    Ok(builder.thread_name("rollgate-sim").enable_all().build()?)
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
