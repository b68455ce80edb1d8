//! Wiring of one gateway process: config → data plane → reload funnel → admin API → signals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use rollgate_config::Config;
use rollgate_config::Role;
use rollgate_control::breakglass::{
    describe_pause, HeldSync, OperatorNotes, PauseStore, Restored, SHARED_TOKEN,
};
use rollgate_control::git::{GitSettings, GitSource};
use rollgate_control::gitops::{EventCounters, Gitops};
use rollgate_control::operator::{AdminAuth, Audit};
use rollgate_control::rollout::{Driver, DriverHandle, StateStore};
use rollgate_control::signals::HttpSignals;
use rollgate_control::{
    serve_admin, AdminServer, ConfigSource, ReloadTrigger, Reloader, ReloaderHandle, SyncPause,
};
use rollgate_proxy::{Listeners, ProxyHandle, Running};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// How often the rollout driver evaluates gates (it also wakes at once on operator commands).
const DRIVER_TICK: Duration = Duration::from_secs(1);
/// How often a Git source is fetched without `--poll` (a webhook fetches at once).
const DEFAULT_GIT_POLL: Duration = Duration::from_secs(15);
/// How often the config file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);
/// How long shutdown waits for the rollout driver to stop after the drain. It stops at its
/// next yield, within about a millisecond even mid-step over 50,000 models; a driver that
/// does not is left behind with a warning rather than holding the exit.
const DRIVER_STOP: Duration = Duration::from_secs(5);

/// `rollgate run`: exactly one of `--config` and `--git`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config", "git"])))]
pub(crate) struct RunArgs {
    /// YAML config file (see the README for every key).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Git repository holding the config: a local path, file://, https:// or ssh:// URL.
    #[arg(long, value_name = "URL")]
    git: Option<String>,
    /// Branch to watch [default: main].
    #[arg(long, conflicts_with = "config")]
    branch: Option<String>,
    /// Path of the config file in the repository [default: rollgate.yaml].
    #[arg(long, conflicts_with = "config")]
    path: Option<String>,
    /// Fetch interval, ±10% jitter [default: 15s]; `POST /hooks/git` fetches at once.
    #[arg(long, value_parser = parse_poll, conflicts_with = "config", value_name = "DURATION")]
    poll: Option<Duration>,
    /// Bare mirror clone (created when missing); default: a folder under the temp dir named
    /// after the URL and branch.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    git_dir: Option<PathBuf>,
    /// https: file holding a token, sent as HTTP Basic `x-access-token:<token>` (never logged).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    token_file: Option<PathBuf>,
    /// ssh: private key used alone (`IdentitiesOnly`).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    ssh_key: Option<PathBuf>,
    /// Secret for `POST /hooks/git` (GitHub HMAC, GitLab token or Bearer).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    webhook_secret_file: Option<PathBuf>,
    /// Apply only commits with an SSH signature from a key in this allowed-signers file.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    allowed_signers: Option<PathBuf>,
    /// Push `refs/notes/rollgate` (rollout status notes) to the remote.
    #[arg(long, conflicts_with = "config")]
    push_notes: bool,
}

/// Where `run` reads its config: `--config FILE` or `--git URL`.
#[derive(Debug)]
pub(crate) enum Source {
    File(PathBuf),
    Git(Box<GitSettings>),
}

/// A started gateway (used by `run` and by the demo).
pub(crate) struct Gateway {
    pub(crate) data: SocketAddr,
    /// The data plane speaks TLS (`https://`).
    pub(crate) tls: bool,
    pub(crate) admin: SocketAddr,
    pub(crate) reloader: ReloaderHandle,
    pub(crate) driver: DriverHandle,
    running: Running,
    admin_stop: watch::Sender<bool>,
    driver_task: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    /// Kept to write the access log's last lines at exit.
    proxy: ProxyHandle,
}

/// `rollgate run --config FILE` or `--git URL`: serve until SIGTERM/SIGINT, then drain and
/// exit 0.
pub(crate) async fn run(source: Source) -> anyhow::Result<()> {
    let gw = Gateway::start(source).await?;
    // Handlers before the ready line: until then SIGHUP's default action kills the process,
    // and SIGTERM would skip the drain.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "rollgate ready: data={}://{} admin=http://{}",
            if gw.tls { "https" } else { "http" },
            gw.data,
            gw.admin
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

// === impl RunArgs ===

impl RunArgs {
    pub(crate) fn into_source(self) -> Source {
        let Some(url) = self.git else {
            return Source::File(self.config.unwrap_or_default());
        };
        let branch = self.branch.unwrap_or_else(|| "main".to_owned());
        let git_dir = self.git_dir.unwrap_or_else(|| {
            let key = format!("{url}|{branch}");
            std::env::temp_dir().join(format!(
                "rollgate-git-{:016x}",
                rollgate_proxy::hash64(key.as_bytes())
            ))
        });
        Source::Git(Box::new(GitSettings {
            url,
            branch,
            path: self.path.unwrap_or_else(|| "rollgate.yaml".to_owned()),
            poll: self.poll.unwrap_or(DEFAULT_GIT_POLL),
            git_dir,
            token_file: self.token_file,
            ssh_key: self.ssh_key,
            webhook_secret_file: self.webhook_secret_file,
            allowed_signers: self.allowed_signers,
            push_notes: self.push_notes,
            command_timeout: rollgate_control::git::COMMAND_TIMEOUT,
        }))
    }
}

fn parse_poll(s: &str) -> Result<Duration, String> {
    match rollgate_config::parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(100) => Ok(d),
        Ok(_) => Err(format!("`{s}`: the poll interval must be at least 100ms")),
        Err(e) => Err(e.to_string()),
    }
}

// === impl Gateway ===

impl Gateway {
    pub(crate) async fn start(source: Source) -> anyhow::Result<Gateway> {
        let (source, text, revision) = read_source(source).await?;
        let config = rollgate_config::parse(&text).map_err(|errors| {
            anyhow::anyhow!(
                "{} (revision {revision}): invalid config:\n  {}",
                source.describe(),
                errors.to_string().replace('\n', "\n  ")
            )
        })?;
        let problems = crate::preflight::check(&config, &base_dir(&source));
        if !problems.is_empty() {
            anyhow::bail!(
                "{} (revision {revision}): cannot start on this machine:\n  {}",
                source.describe(),
                problems.join("\n  ")
            );
        }
        let pause_store = PauseStore::new(config.state_dir.clone());
        let start = Start {
            text,
            revision,
            config,
        };
        let (
            Start {
                text,
                revision,
                config,
            },
            paused,
        ) = restore_pause(&source, &pause_store, start);
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
        let auth = AdminAuth::load(&config.admin).context("reading the admin tokens")?;
        let sync_pause_approvers = config.admin.sync_pause_approvers;
        let protect_reads = config.admin.protect_reads;
        let audit_path = audit_path(&config);
        let audit = Audit::open(audit_path).context("opening the audit log")?;
        let notes = OperatorNotes::from_audit(audit.path());
        match &auth {
            None => tracing::warn!("no admin token (admin.token_file, admin.tokens or ROLLGATE_ADMIN_TOKEN): operator commands are refused"),
            Some(a) => {
                // With two approvers the shared token counts for nobody (it names no person).
                let counts = |name: &str| sync_pause_approvers < 2 || name != SHARED_TOKEN;
                let sync = (a.names().iter())
                    .filter(|(name, roles)| roles.contains(&Role::Sync) && counts(name))
                    .count();
                if (sync as u32) < sync_pause_approvers {
                    tracing::warn!(sync_tokens = sync, sync_pause_approvers, "fewer tokens with the sync role than admin.sync_pause_approvers (with 2, named tokens only: the shared `admin` token names no person): sync cannot be paused");
                }
            }
        }
        let proxy = ProxyHandle::new(config, &revision, &mut registry);
        let (driver, driver_handle) = Driver::new(
            proxy.clone(),
            StateStore::new(state_dir),
            Arc::new(HttpSignals::default()),
            crate::rollout::scorer(),
            crate::rollout::synthetic_runner(base_dir(&source)),
            DRIVER_TICK,
        );
        let mut driver = driver;
        driver.register_metrics(&mut registry);
        if let ConfigSource::Git(git) = &source {
            git.register_metrics(&mut registry);
            let notes = git.clone();
            driver.on_transition(Arc::new(move |revision, statuses| {
                notes.queue_note(revision, statuses);
            }));
            tokio::spawn(git.clone().write_notes());
        }
        // Restored rollouts keep their traffic from the first request on.
        driver.restore_traffic();
        let (mut reloader, handle) =
            Reloader::new(source.clone(), &text, proxy.clone(), &mut registry);
        let restored_pause = paused.is_some();
        if let Some(pause) = paused {
            handle.pause_sync(pause);
        }
        // A new config is judged by the driver at once, not on its next tick.
        let wake = driver_handle.clone();
        reloader.on_applied(Arc::new(move || wake.wake()));
        // What `rollgate run` would refuse at start is refused on reload too.
        let base = base_dir(&source);
        reloader.preflight(Arc::new(move |c| crate::preflight::check(c, &base)));
        tokio::spawn(reloader.run());
        if restored_pause {
            // Read the source now (applying nothing), so that `/status` shows at once the
            // revision that waits for a resume, not only after the first poll.
            handle.trigger(ReloadTrigger::Poll);
        }
        match &source {
            ConfigSource::File(path) => {
                tokio::spawn(handle.clone().watch_file(path.clone(), FILE_POLL));
            }
            ConfigSource::Git(git) => {
                tokio::spawn(git.clone().poll(handle.clone()));
            }
        }
        let data = listeners.local_addr();
        let tls_on = tls.is_some();
        let running = listeners.serve(proxy.clone(), tls)?;
        let admin = admin_listener.local_addr()?;
        let (admin_stop, stop_rx) = watch::channel(false);
        let driver_task = tokio::spawn(driver.run(stop_rx.clone()));
        let gitops = Gitops::new(proxy.clone(), handle.clone(), Some(driver_handle.clone()));
        let sinks =
            crate::gitops::sinks(&gitops_config, EventCounters::register(&mut registry)).await?;
        tokio::spawn(gitops.clone().publish(sinks, stop_rx.clone()));
        let server = AdminServer {
            driver: Some(driver_handle.clone()),
            auth,
            audit,
            notes,
            pause_store,
            sync_pause_approvers,
            protect_reads,
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
        tracing::info!(%data, %admin, workers, %revision, source = %source.describe(), "rollgate serving");
        Ok(Gateway {
            data,
            tls: tls_on,
            admin,
            reloader: handle,
            driver: driver_handle,
            running,
            admin_stop,
            driver_task,
            drain_timeout,
            proxy,
        })
    }

    /// Stops accepting, waits for in-flight requests and streams up to the drain timeout.
    pub(crate) async fn shutdown(self) {
        tracing::info!(deadline = ?self.drain_timeout, "draining");
        let clean = self.running.drain(self.drain_timeout).await;
        // The admin server may already be gone; nothing to do then.
        let _ = self.admin_stop.send(true);
        if tokio::time::timeout(DRIVER_STOP, self.driver_task)
            .await
            .is_err()
        {
            tracing::warn!(waited = ?DRIVER_STOP, "rollout driver still busy; exiting without it");
        }
        // The requests drained above have written their lines: flush them.
        tokio::task::block_in_place(|| self.proxy.close_access_log());
        if clean {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain deadline reached with requests still in flight; exiting");
        }
    }
}

/// The config a start serves: its text, revision and parsed form.
struct Start {
    text: String,
    revision: String,
    config: Config,
}

/// `admin.audit_log`, else `<state_dir>/audit.log`.
fn audit_path(config: &Config) -> Option<PathBuf> {
    (config.admin.audit_log.clone())
        .or_else(|| config.state_dir.as_ref().map(|d| d.join("audit.log")))
}

/// A sync pause made before this start comes back (break-glass must outlast a rescheduled
/// pod): the revision it held serves, paused, when it was saved and still validates here;
/// otherwise the source's revision serves, still paused, and the pause's reason says what the
/// restart did. Every case is logged at `warn` or `error` with who paused, when and why.
fn restore_pause(
    source: &ConfigSource,
    store: &PauseStore,
    start: Start,
) -> (Start, Option<SyncPause>) {
    let (restored, error) = store.restore(audit_path(&start.config).as_deref());
    if let Some(e) = error {
        tracing::error!(error = %e, "cannot read the saved sync pause; looking for one in the audit log");
    }
    let source_at = start.revision.clone();
    let (start, pause) = match restored {
        None => return (start, None),
        Some(Restored::Held(held)) if held.revision == start.revision => {
            let pause = held.pause();
            tracing::warn!(paused = %describe_pause(&pause), revision = %source_at, "sync was paused before this start: still paused (the source has not moved); `rollgate ctl resume-sync` applies it again");
            return (start, Some(pause));
        }
        Some(Restored::Held(held)) => {
            let pause = held.pause();
            match held_config(source, &held.text) {
                Ok(config) => {
                    tracing::warn!(paused = %describe_pause(&pause), serving = %held.revision, source = %source_at, "sync was paused before this start: serving the revision the pause held, not the source's; `rollgate ctl resume-sync` applies the source");
                    let held_start = Start {
                        text: held.text,
                        revision: held.revision,
                        config,
                    };
                    return (held_start, Some(pause));
                }
                Err(why) => {
                    let note = format!("after a restart the revision it held, {}, did not validate ({why}): serving the source's {source_at}", held.revision);
                    tracing::error!(paused = %describe_pause(&pause), "sync was paused before this start; {note}; sync stays paused");
                    (start, noted(pause, &note))
                }
            }
        }
        Some(Restored::Audited { pause, revision })
            if revision.as_deref() == Some(source_at.as_str()) =>
        {
            tracing::warn!(paused = %describe_pause(&pause), revision = %source_at, "sync was paused before this start (audit log): still paused (the source has not moved)");
            (start, pause)
        }
        Some(Restored::Audited { pause, revision }) => {
            let held = revision.as_deref().unwrap_or("unknown");
            let note = format!("after a restart the revision it held, {held}, was not saved (no state_dir, or the saved pause was unreadable): serving the source's {source_at}");
            tracing::error!(paused = %describe_pause(&pause), "sync was paused before this start (the audit log's last sync action is an unresumed pause-sync); {note}; sync stays paused");
            (start, noted(pause, &note))
        }
    };
    // Saved again with what serves now, so that the next start finds it without a complaint.
    if let Err(e) = store.save(&HeldSync::new(&pause, &start.revision, &start.text)) {
        tracing::error!(error = %e, "saving the sync pause failed");
    }
    (start, Some(pause))
}

/// The held revision's config, when it still parses and passes this machine's checks.
fn held_config(source: &ConfigSource, text: &str) -> Result<Config, String> {
    let config = rollgate_config::parse(text).map_err(|e| e.to_string().replace('\n', "; "))?;
    let problems = crate::preflight::check(&config, &base_dir(source));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems.join("; "))
    }
}

/// The pause with what the restart did added to its reason (shown in `/status`).
fn noted(mut pause: SyncPause, note: &str) -> SyncPause {
    pause.reason = format!("{} [{note}]", pause.reason);
    pause
}

/// Opens the source and reads the config the gateway starts with.
async fn read_source(source: Source) -> anyhow::Result<(ConfigSource, String, String)> {
    let source = match source {
        Source::File(path) => ConfigSource::File(path),
        Source::Git(settings) => ConfigSource::Git(
            GitSource::open(*settings)
                .await
                .map_err(|e| anyhow::anyhow!("opening the Git source: {e}"))?,
        ),
    };
    let (revision, text) = source
        .read_initial()
        .await
        .map_err(|e| anyhow::anyhow!("reading the config ({}): {e}", source.describe()))?;
    Ok((source, text, revision))
}

/// Where relative paths in the config (synthetic suites) resolve: the config file's folder, or
/// the working directory under Git.
fn base_dir(source: &ConfigSource) -> PathBuf {
    match source {
        ConfigSource::File(path) => path.parent().map(Path::to_path_buf).unwrap_or_default(),
        ConfigSource::Git(_) => PathBuf::from("."),
    }
}
