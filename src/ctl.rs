//! `rollgate ctl`: the operator CLI for the admin API (status and break-glass commands). Model
//! names are percent-encoded into the paths (`org/model:tag` → `org%2Fmodel%3Atag`).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_config::encode_path_segment;

#[derive(clap::Args, Debug)]
pub(crate) struct CtlArgs {
    /// Admin API base URL (`host:port` alone means `http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:9090", env = "ROLLGATE_ADMIN")]
    admin: String,
    /// File with the admin bearer token (`ROLLGATE_ADMIN_TOKEN` is read when this is absent).
    /// Sent by `status` too when there is one (a gateway with `admin.protect_reads` needs it).
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
    /// Every model's rollout status, or one model's.
    Status {
        /// Only this model (its status object alone).
        model: Option<String>,
    },
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
    /// Break-glass: stop applying Git/file changes (needs a `sync` token; with
    /// `admin.sync_pause_approvers: 2` also a second one from another person).
    PauseSync {
        /// Why (recorded in the audit log and shown in /status; required).
        #[arg(long)]
        reason: String,
        /// File with the second approver's `sync` token (sent as `X-Rollgate-Approver`).
        #[arg(long)]
        approver_token_file: Option<PathBuf>,
    },
    /// Apply the source again, now (needs a `sync` token).
    ResumeSync {
        /// Release every pin first, so the source's weights and the rollouts take over.
        #[arg(long)]
        release_pins: bool,
    },
    /// Write the live state as a config file ready to commit (any valid token).
    ExportLive {
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct Target {
    model: String,
    /// Why (recorded in the audit log; required).
    #[arg(long)]
    reason: String,
}

/// One admin call: method, path, JSON body, and whether it must carry the token.
struct Call {
    method: &'static str,
    path: String,
    body: Option<serde_json::Value>,
    authenticated: bool,
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = admin_base(&args.admin)?;
    let call = match &args.action {
        CtlAction::Status { .. } => Call {
            method: "GET",
            path: "/rollouts".to_owned(),
            body: None,
            authenticated: false,
        },
        CtlAction::Pin {
            model,
            weight,
            reason,
        } => post(
            rollouts_path(model, "pin"),
            serde_json::json!({ "reason": reason, "weight": weight }),
        ),
        CtlAction::Pause(t) => command("pause", t),
        CtlAction::Resume(t) => command("resume", t),
        CtlAction::Abort(t) => command("abort", t),
        CtlAction::Promote(t) => command("promote", t),
        CtlAction::Approve(t) => command("approve", t),
        CtlAction::Unpin(t) => command("unpin", t),
        CtlAction::PauseSync { reason, .. } => post(
            "/sync/pause".to_owned(),
            serde_json::json!({ "reason": reason }),
        ),
        CtlAction::ResumeSync { release_pins } => post(
            "/sync/resume".to_owned(),
            serde_json::json!({ "release_pins": release_pins }),
        ),
        CtlAction::ExportLive { .. } => Call {
            method: "GET",
            path: "/live-config".to_owned(),
            body: None,
            authenticated: true,
        },
    };
    let Call {
        method,
        path,
        body,
        authenticated,
    } = call;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if authenticated {
        let token = token(args.token_file.as_deref())?;
        req = req.header("authorization", format!("Bearer {token}"));
        if let Some(actor) = &args.actor {
            req = req.header("x-rollgate-actor", actor);
        }
    }
    // Reads are open unless the gateway runs with `admin.protect_reads`; a token at hand is
    // sent, so that they work either way.
    let reader_token = if authenticated {
        None
    } else {
        read_token_if_any(args.token_file.as_deref())?
    };
    if let Some(token) = &reader_token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let CtlAction::PauseSync {
        approver_token_file: Some(f),
        ..
    } = &args.action
    {
        let approver = read_token(f)?;
        req = req.header("x-rollgate-approver", format!("Bearer {approver}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let resp = client
        .request(req.body(Full::new(body))?)
        .await
        .with_context(|| format!("calling {base}{path}"))?;
    let status = resp.status();
    let text = resp.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    match &args.action {
        CtlAction::ExportLive { output: Some(out) } if status.is_success() => {
            std::fs::write(out, text.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
        }
        CtlAction::ExportLive { .. } if status.is_success() => out(&text)?,
        CtlAction::Status { model: Some(m) } if status.is_success() => {
            out(&format!("{}\n", one_model(&text, m)?))?;
        }
        _ => out(&format!("{}\n", text.trim_end()))?,
    }
    if status == hyper::StatusCode::UNAUTHORIZED && !authenticated && reader_token.is_none() {
        bail!("{method} {path}: {status}: the gateway protects reads (admin.protect_reads); pass --token-file or set ROLLGATE_ADMIN_TOKEN");
    }
    if !status.is_success() {
        bail!("{method} {path}: {status}");
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`rollgate ctl status | head`) ends the output
/// quietly, where `println!` would panic.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The admin API's base URL from `--admin`: `host:port` gets `http://`, as curl would give it
/// (the bare form used to fail with hyper's "invalid format"); the admin API is plain HTTP.
fn admin_base(admin: &str) -> anyhow::Result<String> {
    let admin = admin.trim().trim_end_matches('/');
    let url = match admin.split_once("://") {
        Some(("http", _)) => admin.to_owned(),
        Some((scheme, _)) => bail!(
            "--admin {admin}: the admin API is plain HTTP; write http://HOST:PORT, not {scheme}://"
        ),
        None => format!("http://{admin}"),
    };
    url.parse::<hyper::Uri>()
        .with_context(|| format!("--admin {admin}: expected http://HOST:PORT"))?;
    Ok(url)
}

/// The status of `model` in the `/rollouts` array, pretty-printed.
fn one_model(rollouts: &str, model: &str) -> anyhow::Result<String> {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(rollouts).context("/rollouts did not answer a JSON array")?;
    match all.iter().find(|s| s["model"] == model) {
        Some(s) => Ok(serde_json::to_string_pretty(s)?),
        None => {
            let names: Vec<&str> = all.iter().filter_map(|s| s["model"].as_str()).collect();
            let shown = names
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let more = names.len().saturating_sub(10);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            bail!("no model `{model}` in /rollouts (models: {shown}{more})")
        }
    }
}

fn post(path: String, body: serde_json::Value) -> Call {
    Call {
        method: "POST",
        path,
        body: Some(body),
        authenticated: true,
    }
}

fn command(action: &str, t: &Target) -> Call {
    post(
        rollouts_path(&t.model, action),
        serde_json::json!({ "reason": t.reason }),
    )
}

/// `/rollouts/{model}/{action}` with the model as one percent-encoded segment, so that names
/// like `meta-llama/Llama-3-8B` or `my model` reach the admin API whole.
fn rollouts_path(model: &str, action: &str) -> String {
    format!("/rollouts/{}/{action}", encode_path_segment(model))
}

/// The token a call must carry: `--token-file`, else `ROLLGATE_ADMIN_TOKEN`. A blank one is
/// refused here, before the request: the gateway would only answer "missing or wrong bearer
/// token", which does not say which token was blank.
fn token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(f) = file {
        return read_token(f);
    }
    // std's "environment variable not found" only repeats what the message says.
    match std::env::var("ROLLGATE_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_owned()),
        Ok(_) => {
            bail!("ROLLGATE_ADMIN_TOKEN is empty: set it to the admin token, or pass --token-file")
        }
        Err(_) => bail!("no token: pass --token-file or set ROLLGATE_ADMIN_TOKEN"),
    }
}

/// The token for a call that may go without one: `--token-file` (which must be readable),
/// else `ROLLGATE_ADMIN_TOKEN` when set and not blank, else none.
fn read_token_if_any(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        return read_token(f).map(Some);
    }
    let env = std::env::var("ROLLGATE_ADMIN_TOKEN").ok();
    Ok(env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// A token file's token; an empty (or blank) file is an error, not an empty token to send.
fn read_token(f: &std::path::Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    let t = t.trim();
    if t.is_empty() {
        bail!("token file {} is empty", f.display());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{admin_base, one_model, rollouts_path};

    #[test]
    fn status_of_one_model_picks_it_or_names_the_others() {
        let rollouts = r#"[{"model":"a","phase":"Idle"},{"model":"org/b","phase":"Canary"}]"#;
        let b: serde_json::Value =
            serde_json::from_str(&one_model(rollouts, "org/b").expect("found")).expect("json");
        assert_eq!(b["phase"], "Canary");
        let err = one_model(rollouts, "c").expect_err("not there").to_string();
        assert_eq!(err, "no model `c` in /rollouts (models: a, org/b)");
    }

    #[test]
    fn model_names_are_one_encoded_path_segment() {
        let cases = [
            ("m", "/rollouts/m/pause"),
            ("org/model:tag", "/rollouts/org%2Fmodel%3Atag/pause"),
            (
                "meta-llama/Llama 3",
                "/rollouts/meta-llama%2FLlama%203/pause",
            ),
            ("模型", "/rollouts/%E6%A8%A1%E5%9E%8B/pause"),
        ];
        for (model, want) in cases {
            let path = rollouts_path(model, "pause");
            assert_eq!(path, want);
            assert!(format!("http://h{path}").parse::<hyper::Uri>().is_ok());
        }
    }

    #[test]
    fn the_admin_url_may_leave_out_its_scheme_but_not_be_https() {
        assert_eq!(
            admin_base("127.0.0.1:9090").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert_eq!(
            admin_base("http://gw.internal:9090/").unwrap(),
            "http://gw.internal:9090"
        );
        let err = admin_base("https://gw:9090").unwrap_err().to_string();
        assert!(err.contains("plain HTTP"), "{err}");
        let err = admin_base("http://bad host").unwrap_err().to_string();
        assert!(err.contains("expected http://HOST:PORT"), "{err}");
    }
}
