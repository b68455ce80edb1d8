//! Wiring of one gateway process: config → data plane → reload funnel → admin API → signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use rollgate_control::gitops::{EventCounters, Gitops};
use rollgate_control::operator::{AdminAuth, Audit};
use rollgate_control::rollout::{Driver, DriverHandle, StateStore};
use rollgate_control::signals::HttpSignals;
use rollgate_control::{
    revision_of, serve_admin, AdminServer, ReloadTrigger, Reloader, ReloaderHandle,
};
use rollgate_proxy::{Listeners, ProxyHandle, Running};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How often the rollout driver evaluates gates (it also wakes at once on operator commands).
const DRIVER_TICK: Duration = Duration::from_secs(1);
/// How often the config file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);

/// A started gateway (used by `run` and by the demo).
pub(crate) struct Gateway {
    pub(crate) data: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) reloader: ReloaderHandle,
    pub(crate) driver: DriverHandle,
    running: Running,
    admin_stop: watch::Sender<bool>,
    drain_timeout: Duration,
}

/// `rollgate validate FILE`.
pub(crate) fn validate(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match rollgate_config::parse(&text) {
        Ok(c) => {
            eprintln!("{}: valid ({} models)", file.display(), c.models.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{}: {e}", file.display());
            }
            eprintln!("{}: {} errors", file.display(), errors.len());
            ExitCode::FAILURE
        }
    }
}

/// `rollgate run --config FILE`: serve until SIGTERM/SIGINT, then drain and exit 0.
pub(crate) async fn run(config: PathBuf) -> anyhow::Result<()> {
    let gw = Gateway::start(config).await?;
    // Handlers before the ready line: until then SIGHUP's default action kills the process,
    // and SIGTERM would skip the drain.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "rollgate ready: data=http://{} admin=http://{}",
            gw.data, gw.admin
        );
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                gw.reloader.trigger(ReloadTrigger::Signal);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    gw.shutdown().await;
    Ok(())
}

// === impl Gateway ===

impl Gateway {
    pub(crate) async fn start(path: PathBuf) -> anyhow::Result<Gateway> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config = rollgate_config::parse(&text).map_err(|errors| {
            anyhow::anyhow!(
                "{}: invalid config:\n  {}",
                path.display(),
                errors.to_string().replace('\n', "\n  ")
            )
        })?;
        let revision = revision_of(&text);
        let mut registry = Registry::default();
        let tls = match &config.tls {
            Some(t) => Some(rollgate_proxy::load_tls(&t.cert, &t.key)?),
            None => None,
        };
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let listeners = Listeners::bind(config.listen, workers)
            .with_context(|| format!("binding the data plane on {}", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("binding the admin API on {}", config.admin.listen))?;
        let drain_timeout = config.drain_timeout;
        let state_dir = config.state_dir.clone();
        let gitops_config = config.gitops.clone();
        let auth = AdminAuth::load(config.admin.token_file.as_deref())
            .context("reading the admin token file")?;
        let audit_path = config
            .admin
            .audit_log
            .clone()
            .or_else(|| state_dir.as_ref().map(|d| d.join("audit.log")));
        let audit = Audit::open(audit_path).context("opening the audit log")?;
        if auth.is_none() {
            tracing::warn!("no admin token (admin.token_file or ROLLGATE_ADMIN_TOKEN): operator commands are refused");
        }
        let proxy = ProxyHandle::new(config, &revision, &mut registry);
        let (driver, driver_handle) = Driver::new(
            proxy.clone(),
            StateStore::new(state_dir),
            Arc::new(HttpSignals::default()),
            crate::rollout::scorer(),
            crate::rollout::synthetic_runner(
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            DRIVER_TICK,
        );
        driver.register_metrics(&mut registry);
        // Restored rollouts keep their traffic from the first request on.
        driver.restore_traffic();
        let (reloader, handle) = Reloader::new(path.clone(), proxy.clone(), &mut registry);
        tokio::spawn(reloader.run());
        tokio::spawn(handle.clone().watch_file(path, FILE_POLL));
        let data = listeners.local_addr();
        let running = listeners.serve(proxy.clone(), tls)?;
        let admin = admin_listener.local_addr()?;
        let (admin_stop, stop_rx) = watch::channel(false);
        tokio::spawn(driver.run(stop_rx.clone()));
        let gitops = Gitops::new(proxy.clone(), handle.clone(), Some(driver_handle.clone()));
        let sinks =
            crate::gitops::sinks(&gitops_config, EventCounters::register(&mut registry)).await?;
        tokio::spawn(gitops.clone().publish(sinks, stop_rx.clone()));
        let server = AdminServer {
            driver: Some(driver_handle.clone()),
            auth,
            audit,
            registry: Arc::new(registry),
            proxy: proxy.clone(),
            reloader: handle.clone(),
            gitops,
        };
        tokio::spawn(async move {
            if let Err(e) = serve_admin(admin_listener, server, stop_rx).await {
                tracing::error!(error = %e, "admin server failed");
            }
        });
        tracing::info!(%data, %admin, workers, %revision, "rollgate serving");
        Ok(Gateway {
            data,
            admin,
            reloader: handle,
            driver: driver_handle,
            running,
            admin_stop,
            drain_timeout,
        })
    }

    /// Stops accepting, waits for in-flight requests and streams up to the drain timeout.
    pub(crate) async fn shutdown(self) {
        tracing::info!(deadline = ?self.drain_timeout, "draining");
        let clean = self.running.drain(self.drain_timeout).await;
        // The admin server may already be gone; nothing to do then.
        let _ = self.admin_stop.send(true);
        if clean {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain deadline reached with requests still in flight; exiting");
        }
    }
}
