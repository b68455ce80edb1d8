//! Break-glass: authenticated operator commands on rollouts, each appended to an audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rollgate_config::{parse_ppm, Role, PPM_MAX};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::rollout::{Command, DriverHandle, RolloutStatus};

/// How long a command call waits to report the state after the driver applied it.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The admin bearer tokens, each kept only as a SHA-256 digest with its name and roles, and
/// compared in constant time.
#[derive(Clone)]
pub struct AdminAuth {
    tokens: Vec<Token>,
}

#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    roles: Vec<Role>,
}

/// A caller whose token matched: who they are and what they may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The token's name (`admin` for `admin.token_file` / `ROLLGATE_ADMIN_TOKEN`).
    pub name: &'a str,
    roles: &'a [Role],
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
    /// A valid token without the role the call needs.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no rollout for model `{0}`")]
    UnknownModel(String),
    #[error("the rollout driver is busy; try again")]
    Busy,
    /// The action conflicts with the current state (sync already paused; no rollout to pause,
    /// nothing pinned, no candidate to pin).
    #[error("{0}")]
    Conflict(String),
}

// === impl AdminAuth ===

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminAuth(<redacted>)")
    }
}

impl AdminAuth {
    /// `ROLLGATE_ADMIN_TOKEN` (else `admin.token_file`) as `admin` with every role, plus every
    /// `admin.tokens[]` entry. `None` (no token at all) refuses every authenticated call.
    pub fn load(admin: &rollgate_config::Admin) -> std::io::Result<Option<AdminAuth>> {
        let mut auth = AdminAuth { tokens: Vec::new() };
        let env = std::env::var("ROLLGATE_ADMIN_TOKEN").ok();
        let legacy = match (env.filter(|t| !t.trim().is_empty()), &admin.token_file) {
            (Some(t), _) => Some(t),
            (None, Some(p)) => {
                let t = read_token(p)?;
                if t.trim().is_empty() {
                    // A secret not mounted yet must not pass for "no token configured".
                    return Err(std::io::Error::other(format!(
                        "admin.token_file: {} is empty",
                        p.display()
                    )));
                }
                Some(t)
            }
            (None, None) => None,
        };
        if let Some(t) = legacy.filter(|t| !t.trim().is_empty()) {
            auth = auth.with("admin", t.trim(), &Role::ALL);
        }
        for t in &admin.tokens {
            let secret = read_token(&t.file)?;
            if secret.trim().is_empty() {
                return Err(std::io::Error::other(format!(
                    "admin.tokens `{}`: {} is empty",
                    t.name,
                    t.file.display()
                )));
            }
            let digest: [u8; 32] = Sha256::digest(secret.trim().as_bytes()).into();
            if let Some(same) = auth.tokens.iter().find(|k| k.digest == digest) {
                // One secret for two names would make a two-person pause one person's.
                return Err(std::io::Error::other(format!(
                    "admin.tokens `{}` has the same token as `{}`; every token must be distinct",
                    t.name, same.name
                )));
            }
            auth = auth.with(&t.name, secret.trim(), &t.roles);
        }
        Ok((!auth.tokens.is_empty()).then_some(auth))
    }

    /// One token named `admin` with every role.
    pub fn new(token: &str) -> AdminAuth {
        AdminAuth { tokens: Vec::new() }.with("admin", token, &Role::ALL)
    }

    /// Adds a named token.
    pub fn with(mut self, name: &str, token: &str, roles: &[Role]) -> AdminAuth {
        self.tokens.push(Token {
            name: name.to_owned(),
            digest: Sha256::digest(token.as_bytes()).into(),
            roles: roles.to_vec(),
        });
        self
    }

    /// The token's names with their roles (for the startup log; never the secrets).
    pub fn names(&self) -> Vec<(&str, &[Role])> {
        self.tokens
            .iter()
            .map(|t| (t.name.as_str(), t.roles.as_slice()))
            .collect()
    }

    /// Whose token an `Authorization: Bearer …` value is. Every digest is compared in full
    /// (no early exit), so timing does not tell how close a guess was or which token matched.
    pub fn identify(&self, header: Option<&[u8]>) -> Option<Caller<'_>> {
        // The scheme is case-insensitive (RFC 7235): `bearer` is as good as `Bearer`.
        let token = header
            .filter(|h| h.len() > 7 && h[..7].eq_ignore_ascii_case(b"bearer "))
            .map(|h| &h[7..])?;
        let given: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for t in &self.tokens {
            let diff = given
                .iter()
                .zip(t.digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(Caller {
                    name: &t.name,
                    roles: &t.roles,
                });
            }
        }
        found
    }

    /// The caller when the token is valid and has `role`: 401 without a valid token, 403 with
    /// a token that lacks the role.
    pub fn authorize(&self, header: Option<&[u8]>, role: Role) -> Result<Caller<'_>, Refused> {
        let caller = self.identify(header).ok_or(Refused::Unauthorized)?;
        if caller.has(role) {
            Ok(caller)
        } else {
            Err(Refused::Forbidden(format!(
                "token `{}` lacks the `{role}` role (it has: {})",
                caller.name,
                caller.roles_list()
            )))
        }
    }

    /// A valid token with the `operate` role (the rollout commands).
    pub fn check(&self, header: Option<&[u8]>) -> bool {
        self.authorize(header, Role::Operate).is_ok()
    }
}

fn read_token(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

// === impl Caller ===

impl Caller<'_> {
    /// Every token may read; `read` is the role of tokens that may do nothing else.
    pub fn has(&self, role: Role) -> bool {
        role == Role::Read || self.roles.contains(&role)
    }

    fn roles_list(&self) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
        names.join(", ")
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
    notes: &crate::breakglass::OperatorNotes,
    req: CommandRequest<'_>,
) -> Result<Value, Refused> {
    let CommandRequest {
        authorization,
        actor,
        model,
        action,
        body,
    } = req;
    let caller = auth
        .ok_or(Refused::Unauthorized)?
        .authorize(authorization, Role::Operate)?;
    let actor = crate::breakglass::actor(caller.name, actor);
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
    let applied = driver.command(model, cmd).ok_or(Refused::Busy)?;
    // The driver applies the command on its next step, at once (it was woken). A timeout only
    // means the "after" below may not show it yet. A refusal changed nothing: it is answered,
    // logged, and not audited (as the 401/403/409 refusals of the sync calls).
    if let Ok(Ok(Err(why))) = tokio::time::timeout(APPLY_WAIT, applied).await {
        tracing::info!(%model, action, actor, token = caller.name, %reason, refused = %why, "operator command refused");
        return Err(Refused::Conflict(format!(
            "`{action}` on model `{model}` refused: {why}"
        )));
    }
    let after = driver.status().into_iter().find(|s| s.model == model);
    notes.record(model, action, actor, &reason);
    let entry = json!({
        "time": unix_secs(),
        "actor": actor,
        "token": caller.name,
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
