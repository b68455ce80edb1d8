//! Break-glass: authenticated operator commands on rollouts, each appended to an audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rollgate_config::{parse_ppm, PPM_MAX};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::rollout::{Command, DriverHandle, RolloutStatus};

/// How long a command call waits to report the state after the driver applied it.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// The admin bearer token, kept only as a SHA-256 digest and compared in constant time.
#[derive(Clone)]
pub struct AdminAuth {
    digest: [u8; 32],
}

/// Append-only JSON-lines audit log (and a log line per action, without secrets).
#[derive(Clone, Debug)]
pub struct Audit {
    file: Option<Arc<Mutex<std::fs::File>>>,
    path: Option<PathBuf>,
}

/// Body of `POST /rollouts/{model}/{action}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    pub reason: Option<String>,
    /// For `pin`: `25%`, `0.25` or `250000ppm`.
    pub weight: Option<String>,
}

/// Why a command was refused (maps to an HTTP status in the admin server).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("no rollout for model `{0}`")]
    UnknownModel(String),
    #[error("the rollout driver is busy; try again")]
    Busy,
}

// === impl AdminAuth ===

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth(<redacted>)")
    }
}

impl AdminAuth {
    /// From `ROLLGATE_ADMIN_TOKEN`, else the token file; `None` refuses every mutating call.
    pub fn load(token_file: Option<&Path>) -> std::io::Result<Option<AdminAuth>> {
        if let Ok(t) = std::env::var("ROLLGATE_ADMIN_TOKEN") {
            if !t.trim().is_empty() {
                return Ok(Some(AdminAuth::new(t.trim())));
            }
        }
        match token_file {
            Some(p) => {
                let t = std::fs::read_to_string(p)?;
                Ok((!t.trim().is_empty()).then(|| AdminAuth::new(t.trim())))
            }
            None => Ok(None),
        }
    }

    pub fn new(token: &str) -> AdminAuth {
        AdminAuth {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Checks an `Authorization: Bearer …` value in constant time (digests have equal length).
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(token).into();
        given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

// === impl Audit ===

impl Audit {
    pub fn open(path: Option<PathBuf>) -> std::io::Result<Audit> {
        let file = match &path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                Some(Arc::new(Mutex::new(f)))
            }
            None => None,
        };
        Ok(Audit { file, path })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one line and syncs it: an action that is not on disk did not happen.
    pub fn record(&self, entry: &Value) {
        tracing::info!(audit = %entry, "operator action");
        let Some(file) = &self.file else { return };
        let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
        let line = format!("{entry}\n");
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.sync_data()) {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
}

/// One operator call as received.
#[derive(Debug)]
pub struct CommandRequest<'a> {
    /// The `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// `x-rollgate-actor`: who is acting (free text for the audit log).
    pub actor: Option<&'a str>,
    pub model: &'a str,
    pub action: &'a str,
    pub body: &'a [u8],
}

/// Parses, authorises, queues and audits one command; returns the model's status after it.
pub async fn execute(
    driver: &DriverHandle,
    auth: Option<&AdminAuth>,
    audit: &Audit,
    req: CommandRequest<'_>,
) -> Result<Value, Refused> {
    let CommandRequest {
        authorization,
        actor,
        model,
        action,
        body,
    } = req;
    if !auth.is_some_and(|a| a.check(authorization)) {
        return Err(Refused::Unauthorized);
    }
    let body: CommandBody = if body.iter().all(u8::is_ascii_whitespace) {
        CommandBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| Refused::BadRequest(format!("body: {e}")))?
    };
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            Refused::BadRequest("every action needs a reason: {\"reason\": \"...\"}".into())
        })?;
    let cmd = match action {
        "pause" => Command::Pause(reason.clone()),
        "resume" => Command::Resume,
        "abort" => Command::Abort(reason.clone()),
        "promote" => Command::Promote,
        "approve" => Command::Approve,
        "unpin" => Command::Unpin,
        "pin" => {
            let w = body.weight.clone().ok_or_else(|| {
                Refused::BadRequest("pin needs a weight, e.g. {\"weight\": \"25%\"}".into())
            })?;
            let ppm = parse_ppm(&w).map_err(|e| Refused::BadRequest(format!("weight: {e}")))?;
            Command::Pin(ppm.get().min(PPM_MAX))
        }
        other => return Err(Refused::BadRequest(format!("unknown action `{other}`"))),
    };
    let before = driver
        .status()
        .into_iter()
        .find(|s| s.model == model)
        .ok_or_else(|| Refused::UnknownModel(model.to_owned()))?;
    let stepped = driver.stepped();
    let applied = stepped.notified();
    tokio::pin!(applied);
    applied.as_mut().enable();
    if !driver.command(model, cmd) {
        return Err(Refused::Busy);
    }
    // The driver applies the command on its next step, at once (it was woken). A timeout only
    // means the "after" below may not show it yet.
    let _ = tokio::time::timeout(APPLY_WAIT, applied).await;
    let after = driver.status().into_iter().find(|s| s.model == model);
    let entry = json!({
        "time": unix_secs(),
        "actor": actor.unwrap_or("admin-token"),
        "action": action,
        "model": model,
        "reason": reason,
        "weight": if action == "pin" { json!(body.weight) } else { Value::Null },
        "before": brief(&before),
        "after": after.as_ref().map(brief),
    });
    audit.record(&entry);
    Ok(json!({ "accepted": true, "audit": entry, "status": after }))
}

fn brief(s: &RolloutStatus) -> Value {
    json!({ "phase": s.phase, "weight": s.weight, "mirror": s.mirror, "paused": s.paused, "pinned": s.pinned })
}

fn unix_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
