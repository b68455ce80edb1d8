//! `rollgate ctl`: the operator CLI for the admin API (status and break-glass commands).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(clap::Args, Debug)]
pub(crate) struct CtlArgs {
    /// Admin API base URL.
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "ROLLGATE_ADMIN")]
    admin: String,
    /// File with the admin bearer token (`ROLLGATE_ADMIN_TOKEN` is read when this is absent).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Who is acting, for the audit log.
    #[arg(long, env = "USER")]
    actor: Option<String>,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(clap::Subcommand, Debug)]
enum CtlAction {
    /// Every model's rollout status.
    Status,
    /// Hold the automation at the current step.
    Pause(Target),
    /// Let the automation continue.
    Resume(Target),
    /// Roll back now.
    Abort(Target),
    /// Skip the remaining steps.
    Promote(Target),
    /// Approve a manual promotion.
    Approve(Target),
    /// Pin the candidate weight (e.g. `25%`) until unpinned.
    Pin {
        model: String,
        weight: String,
        #[arg(long)]
        reason: String,
    },
    /// Release a pin.
    Unpin(Target),
}

#[derive(clap::Args, Debug)]
struct Target {
    model: String,
    /// Why (recorded in the audit log; required).
    #[arg(long)]
    reason: String,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = args.admin.trim_end_matches('/');
    let (method, path, body) = match &args.action {
        CtlAction::Status => ("GET", "/rollouts".to_owned(), None),
        CtlAction::Pin {
            model,
            weight,
            reason,
        } => (
            "POST",
            format!("/rollouts/{model}/pin"),
            Some(serde_json::json!({ "reason": reason, "weight": weight })),
        ),
        CtlAction::Pause(t) => command("pause", t),
        CtlAction::Resume(t) => command("resume", t),
        CtlAction::Abort(t) => command("abort", t),
        CtlAction::Promote(t) => command("promote", t),
        CtlAction::Approve(t) => command("approve", t),
        CtlAction::Unpin(t) => command("unpin", t),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if body.is_some() {
        let token = token(args.token_file.as_deref())?;
        req = req.header("authorization", format!("Bearer {token}"));
        if let Some(actor) = &args.actor {
            req = req.header("x-rollgate-actor", actor);
        }
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = client
        .request(req.body(Full::new(body))?)
        .await
        .with_context(|| format!("calling {base}{path}"))?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    println!("{}", String::from_utf8_lossy(&text).trim_end());
    if !status.is_success() {
        bail!("{method} {path}: {status}");
    }
    Ok(())
}

fn command(action: &str, t: &Target) -> (&'static str, String, Option<serde_json::Value>) {
    (
        "POST",
        format!("/rollouts/{}/{action}", t.model),
        Some(serde_json::json!({ "reason": t.reason })),
    )
}

fn token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(t.trim().to_owned());
    }
    std::env::var("ROLLGATE_ADMIN_TOKEN")
        .map(|t| t.trim().to_owned())
        .context("no token: pass --token-file or set ROLLGATE_ADMIN_TOKEN")
}
