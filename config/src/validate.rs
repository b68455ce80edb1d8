//! Raw sections to validated config: defaults, ranges and rules across fields.
//!
//! Every `TryFrom` here returns all of its errors with paths relative to the section; the
//! caller puts them under the section's key, so paths compose from the root down
//! (`models[2]` + `stable` + `endpoints[1]`). Rules that look at another key only look at
//! whether it is present, not whether it is valid, so one mistake is reported once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::raw::{
    Bytes, Field, Parsed, RawAdmin, RawAdminToken, RawConfig, RawEjection, RawLimits, RawModel,
    RawRouting, RawTls, RawUpstream,
};
use crate::{
    AccessLog, Admin, AdminToken, Config, ConfigError, DataPlane, Ejection, Errors, Limits, Model,
    Role, Routing, Tls, Upstream,
};

pub(crate) mod gitops;
mod model;
mod policy;
mod rollout;
pub(crate) mod yaml;

pub use yaml::MAX_CONFIG_BYTES;

const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most data-plane workers: each is a thread with its own runtime, listener and upstream
/// pool, so more than any machine's cores only adds idle runtimes and connections.
const MAX_WORKERS: usize = 1024;

/// Errors found while converting one raw section, with paths relative to it.
#[derive(Debug, Default)]
pub(crate) struct Collect(Errors);

/// Reads, converts and validates a YAML document, collecting every error.
pub(crate) fn parse(yaml: &str) -> Result<Config, Errors> {
    let (mut value, duplicates) = yaml::load(yaml)?;
    if value.is_null() {
        // An empty document is an empty mapping: it reports the missing required keys.
        value = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(map) = &mut value {
        // `x-…` keys hold YAML anchors for the rest of the file (the docker-compose convention).
        map.retain(|key, _| !key.as_str().is_some_and(|k| k.starts_with("x-")));
    }
    // Duplicate keys come first, in document order; the first value of each was kept.
    let mut c = Collect::default();
    for error in duplicates {
        c.0.push(error);
    }
    let config = c
        .item("", Parsed::<RawConfig>::read(value))
        .and_then(|raw| c.convert("", raw));
    c.finish(config)
}

/// Converts the models; rules that span models (unique names, one default) report on the
/// later model, right after its own errors.
fn models(c: &mut Collect, field: Field<Vec<Parsed<RawModel>>>) -> Option<Vec<Model>> {
    let items = c.required("models", field)?;
    if items.is_empty() {
        c.error("models", "at least one model is required");
        return None;
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut default: Option<(usize, String)> = None;
    let mut models = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("models[{i}]");
        let name = raw_name(&item).unwrap_or_default().to_owned();
        let is_default = raw_default(&item);
        models.push(c.item(&key, item).and_then(|raw| c.convert(&key, raw)));
        if let Some(first) = names.get(&name) {
            let message = format!("duplicate model name `{name}` (also models[{first}])");
            c.error(&format!("{key}.name"), message);
        } else if !name.is_empty() {
            names.insert(name.clone(), i);
        }
        match &default {
            Some((first, first_name)) if is_default => c.error(
                &format!("{key}.default"),
                format!("models[{first}] (`{first_name}`) is already the default; at most one model may be default"),
            ),
            None if is_default => default = Some((i, name)),
            _ => {}
        }
    }
    models.into_iter().collect()
}

fn raw_name(item: &Parsed<RawModel>) -> Option<&str> {
    item.value.as_ref()?.name.as_ref()?.value.as_deref()
}

fn raw_default(item: &Parsed<RawModel>) -> bool {
    let default = item.value.as_ref().and_then(|m| m.default.as_ref());
    default.and_then(|d| d.value).unwrap_or(false)
}

// === impl Collect ===

impl Collect {
    /// The value of a key when present and usable; errors found reading it go under `key`.
    pub(crate) fn take<T>(&mut self, key: &str, field: Field<T>) -> Option<T> {
        self.item(key, field?)
    }

    /// Like [`Collect::take`], for a value that is always there (a list item, the root).
    pub(crate) fn item<T>(&mut self, key: &str, parsed: Parsed<T>) -> Option<T> {
        self.0.extend_under(key, parsed.errors);
        parsed.value
    }

    /// Like [`Collect::take`]; an absent key is an error.
    pub(crate) fn required<T>(&mut self, key: &str, field: Field<T>) -> Option<T> {
        if field.is_none() {
            self.error(key, "required key is missing");
        }
        self.take(key, field)
    }

    /// Converts a raw section, keeping its errors under `key`.
    pub(crate) fn convert<R, T>(&mut self, key: &str, raw: R) -> Option<T>
    where
        T: TryFrom<R, Error = Errors>,
    {
        T::try_from(raw)
            .map_err(|e| self.0.extend_under(key, e))
            .ok()
    }

    /// A section with defaults: when absent (or unusable) it converts from an empty section.
    pub(crate) fn section<R, T>(&mut self, key: &str, field: Field<R>) -> Option<T>
    where
        R: Default,
        T: TryFrom<R, Error = Errors>,
    {
        let raw = self.take(key, field).unwrap_or_default();
        self.convert(key, raw)
    }

    /// A value that must not be zero (timeouts, counts, sizes).
    pub(crate) fn positive<T>(&mut self, key: &str, field: Field<T>, default: T) -> T
    where
        T: Default + PartialEq,
    {
        match self.take(key, field) {
            Some(v) if v == T::default() => {
                self.error(key, "must be greater than 0");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    /// A non-zero byte size that must fit in memory (`usize`).
    pub(crate) fn size(&mut self, key: &str, field: Field<Bytes>, default: usize) -> usize {
        let Bytes(bytes) = self.positive(key, field, Bytes(default as u64));
        usize::try_from(bytes).unwrap_or_else(|_| {
            self.error(key, format!("{bytes} bytes is too large for this platform"));
            default
        })
    }

    /// No error collected so far (rules that would only repeat an earlier error skip).
    pub(crate) fn is_clean(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn error(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    /// The value when nothing was wrong; otherwise every error.
    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, Errors> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => {
                if self.0.is_empty() {
                    // Unusable values always carry an error; this keeps `Err` non-empty regardless.
                    self.error("", "invalid configuration");
                }
                Err(self.0)
            }
        }
    }
}

// === impl Config ===

impl TryFrom<RawConfig> for Config {
    type Error = Errors;

    fn try_from(raw: RawConfig) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let listen = c.required("listen", raw.listen);
        let workers = c.take("workers", raw.workers).unwrap_or(0);
        if workers > MAX_WORKERS {
            c.error(
                "workers",
                format!("{workers} is above {MAX_WORKERS}; each worker is a thread with its own runtime, listener and upstream pool (0 = one per core)"),
            );
        }
        let tls = c.take("tls", raw.tls).and_then(|tls| c.convert("tls", tls));
        // Read before converting, so a mistake elsewhere in `admin` does not hide a clash.
        let admin_listen = match &raw.admin {
            None => Some(Admin::default().listen),
            Some(admin) => admin.value.as_ref().and_then(|a| match &a.listen {
                None => Some(Admin::default().listen),
                Some(listen) => listen.value,
            }),
        };
        let admin: Option<Admin> = c.section("admin", raw.admin);
        let limits = c.section("limits", raw.limits);
        let upstream = c.section("upstream", raw.upstream);
        let ejection = c.section("ejection", raw.ejection);
        let routing = c.section("routing", raw.routing);
        let state_dir = non_empty_path(&mut c, "state_dir", raw.state_dir);
        let gitops = c.section("gitops", raw.gitops);
        let data_plane = match c.take("data_plane", raw.data_plane).as_deref() {
            None | Some("fast") => DataPlane::Fast,
            Some("hyper") => DataPlane::Hyper,
            Some(other) => {
                c.error("data_plane", format!("`{other}` is not fast or hyper"));
                DataPlane::Fast
            }
        };
        let drain_timeout = c
            .take("drain_timeout", raw.drain_timeout)
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        let access_log = non_empty_path(&mut c, "access_log", raw.access_log).map(|p| {
            if p.as_os_str() == "-" {
                AccessLog::Stdout
            } else {
                AccessLog::File(p)
            }
        });
        let env = c.take("env", raw.env);
        if env.as_deref().is_some_and(|e| e.trim().is_empty()) {
            c.error("env", "must not be empty; leave it out instead");
        }
        let policy = c.section("policy", raw.policy);
        let models = models(&mut c, raw.models);
        if let (Some(listen), Some(admin_listen)) = (listen, admin_listen) {
            if canonical(admin_listen) == canonical(listen) && listen.port() != 0 {
                c.error(
                    "admin.listen",
                    format!("{listen} is also the data-plane `listen` address"),
                );
            } else if overlaps(admin_listen, listen) {
                c.error(
                    "admin.listen",
                    format!("{} and the data-plane `listen` address {listen} share port {}, and an unspecified address (0.0.0.0, [::]) takes it on every address: both cannot bind", admin_listen, listen.port()),
                );
            }
        }
        let config = (|| {
            Some(Config {
                listen: listen?,
                workers,
                tls,
                admin: admin?,
                limits: limits?,
                upstream: upstream?,
                ejection: ejection?,
                routing: routing?,
                data_plane,
                drain_timeout,
                access_log,
                state_dir,
                env,
                policy: policy?,
                gitops: gitops?,
                models: models?,
            })
        })();
        c.finish(config)
    }
}

/// Two different addresses that cannot both be bound: the same port where one side is the
/// unspecified address of the other's family, or `[::]` (dual-stack, so it covers IPv4 too).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (a, b) = (canonical(a), canonical(b));
    let covers =
        |u: SocketAddr, x: SocketAddr| u.ip().is_unspecified() && (u.is_ipv6() || x.is_ipv4());
    a.port() == b.port() && a.port() != 0 && (covers(a, b) || covers(b, a))
}

/// An IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]:80`) as the IPv4 address it binds.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// An optional path that, when present, names something (an empty one means the working
/// directory, which nobody means).
fn non_empty_path(c: &mut Collect, key: &str, field: Field<PathBuf>) -> Option<PathBuf> {
    let path = c.take(key, field)?;
    if path.as_os_str().is_empty() {
        c.error(key, "must not be empty; leave it out instead");
        return None;
    }
    Some(path)
}

// === impl Tls ===

impl TryFrom<RawTls> for Tls {
    type Error = Errors;

    fn try_from(raw: RawTls) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let cert = tls_path(&mut c, "cert", raw.cert);
        let key = tls_path(&mut c, "key", raw.key);
        c.finish(cert.zip(key).map(|(cert, key)| Tls { cert, key }))
    }
}

fn tls_path(c: &mut Collect, key: &str, field: Field<PathBuf>) -> Option<PathBuf> {
    let path = c.required(key, field)?;
    if path.as_os_str().is_empty() {
        c.error(key, "must not be empty");
    }
    Some(path)
}

// === impl Admin ===

impl Default for Admin {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_file: None,
            audit_log: None,
            tokens: Vec::new(),
            sync_pause_approvers: 1,
            protect_reads: false,
        }
    }
}

impl TryFrom<RawAdmin> for Admin {
    type Error = Errors;

    fn try_from(raw: RawAdmin) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let listen = c
            .take("listen", raw.listen)
            .unwrap_or(Admin::default().listen);
        let token_file = non_empty_path(&mut c, "token_file", raw.token_file);
        let audit_log = non_empty_path(&mut c, "audit_log", raw.audit_log);
        let items = c.take("tokens", raw.tokens).unwrap_or_default();
        let tokens = admin_tokens(&mut c, items);
        let sync_pause_approvers = match c.take("sync_pause_approvers", raw.sync_pause_approvers) {
            None => 1,
            Some(n @ (1 | 2)) => n,
            Some(n) => {
                c.error("sync_pause_approvers", format!("{n} is not 1 or 2"));
                1
            }
        };
        let protect_reads = c.take("protect_reads", raw.protect_reads).unwrap_or(false);
        c.finish(Some(Admin {
            listen,
            token_file,
            audit_log,
            tokens,
            sync_pause_approvers,
            protect_reads,
        }))
    }
}

/// Named tokens: a non-empty unique name (`admin` is the `token_file` token's), a file, and
/// at least one known role.
fn admin_tokens(c: &mut Collect, items: Vec<Parsed<RawAdminToken>>) -> Vec<AdminToken> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("tokens[{i}]");
        let Some(raw) = c.item(&key, item) else {
            continue;
        };
        let name = c.required(&format!("{key}.name"), raw.name);
        let file = c.required(&format!("{key}.file"), raw.file);
        let roles = c.required(&format!("{key}.roles"), raw.roles);
        if let Some(name) = &name {
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                c.error(&format!("{key}.name"), "must be a non-empty printable name");
            } else if name == "admin" {
                c.error(
                    &format!("{key}.name"),
                    "`admin` is the name of the admin.token_file / ROLLGATE_ADMIN_TOKEN token; pick another",
                );
            } else if let Some(first) = names.get(name) {
                c.error(
                    &format!("{key}.name"),
                    format!("duplicate token name `{name}` (also tokens[{first}])"),
                );
            } else {
                names.insert(name.clone(), i);
            }
        }
        if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            c.error(&format!("{key}.file"), "must not be empty");
        }
        let roles = roles.map(|r| token_roles(c, &format!("{key}.roles"), r));
        if let (Some(name), Some(file), Some(roles)) = (name, file, roles) {
            out.push(AdminToken { name, file, roles });
        }
    }
    out
}

fn token_roles(c: &mut Collect, key: &str, items: Vec<Parsed<String>>) -> Vec<Role> {
    if items.is_empty() {
        c.error(key, "at least one role is required (operate, sync, read)");
    }
    let mut roles = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Some(name) = c.item(&at, item) else {
            continue;
        };
        match Role::ALL.into_iter().find(|r| r.as_str() == name) {
            Some(r) if !roles.contains(&r) => roles.push(r),
            Some(_) => {}
            None => c.error(
                &at,
                format!("unknown role `{name}`; roles are operate, sync, read"),
            ),
        }
    }
    roles
}

/// `routing.candidate_fallback_status`: 429 and 500–599, sorted, duplicates dropped.
fn fallback_statuses(c: &mut Collect, items: Vec<Parsed<u32>>) -> Vec<u16> {
    let key = "candidate_fallback_status";
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Some(code) = c.item(&at, item) else {
            continue;
        };
        match u16::try_from(code) {
            Ok(s @ (429 | 500..=599)) => out.push(s),
            _ => c.error(
                &at,
                format!(
                    "{code} is not a status to fall back on: 429 or 500–599 (an answer \
                     a retry elsewhere can mend)"
                ),
            ),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_body: 64 << 20,
            model_prefix: 1 << 20,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

impl TryFrom<RawLimits> for Limits {
    type Error = Errors;

    fn try_from(raw: RawLimits) -> Result<Self, Errors> {
        let d = Limits::default();
        let mut c = Collect::default();
        let limits = Limits {
            max_header_bytes: c.size("max_header_bytes", raw.max_header_bytes, d.max_header_bytes),
            max_headers: c.positive("max_headers", raw.max_headers, d.max_headers),
            max_body: c.positive("max_body", raw.max_body, Bytes(d.max_body)).0,
            model_prefix: c.size("model_prefix", raw.model_prefix, d.model_prefix),
            header_read_timeout: c.positive(
                "header_read_timeout",
                raw.header_read_timeout,
                d.header_read_timeout,
            ),
        };
        c.finish(Some(limits))
    }
}

// === impl Upstream ===

impl Default for Upstream {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 128,
        }
    }
}

impl TryFrom<RawUpstream> for Upstream {
    type Error = Errors;

    fn try_from(raw: RawUpstream) -> Result<Self, Errors> {
        let d = Upstream::default();
        let mut c = Collect::default();
        let upstream = Upstream {
            connect_timeout: c.positive("connect_timeout", raw.connect_timeout, d.connect_timeout),
            response_timeout: c.positive(
                "response_timeout",
                raw.response_timeout,
                d.response_timeout,
            ),
            idle_timeout: c.positive("idle_timeout", raw.idle_timeout, d.idle_timeout),
            pool_idle_timeout: c.positive(
                "pool_idle_timeout",
                raw.pool_idle_timeout,
                d.pool_idle_timeout,
            ),
            // 0 turns pooling off.
            pool_max_idle: c
                .take("pool_max_idle", raw.pool_max_idle)
                .unwrap_or(d.pool_max_idle),
        };
        c.finish(Some(upstream))
    }
}

// === impl Ejection ===

impl Default for Ejection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

impl TryFrom<RawEjection> for Ejection {
    type Error = Errors;

    fn try_from(raw: RawEjection) -> Result<Self, Errors> {
        let d = Ejection::default();
        let mut c = Collect::default();
        let ejection = Ejection {
            consecutive_failures: c.positive(
                "consecutive_failures",
                raw.consecutive_failures,
                d.consecutive_failures,
            ),
            base: c.positive("base", raw.base, d.base),
            max: c.positive("max", raw.max, d.max),
        };
        if ejection.max < ejection.base {
            let (max, base) = (ejection.max, ejection.base);
            c.error("max", format!("{max:?} is shorter than base ({base:?})"));
        }
        c.finish(Some(ejection))
    }
}

// === impl Routing ===

impl Default for Routing {
    fn default() -> Self {
        Self {
            variant_header: true,
            allow_override: false,
            candidate_fallback: true,
            candidate_fallback_status: Vec::new(),
        }
    }
}

impl TryFrom<RawRouting> for Routing {
    type Error = Errors;

    fn try_from(raw: RawRouting) -> Result<Self, Errors> {
        let d = Routing::default();
        let mut c = Collect::default();
        let routing = Routing {
            variant_header: c
                .take("variant_header", raw.variant_header)
                .unwrap_or(d.variant_header),
            allow_override: c
                .take("allow_override", raw.allow_override)
                .unwrap_or(d.allow_override),
            candidate_fallback: c
                .take("candidate_fallback", raw.candidate_fallback)
                .unwrap_or(d.candidate_fallback),
            candidate_fallback_status: c
                .take("candidate_fallback_status", raw.candidate_fallback_status)
                .map(|items| fallback_statuses(&mut c, items))
                .unwrap_or_default(),
        };
        if !routing.candidate_fallback && !routing.candidate_fallback_status.is_empty() {
            c.error(
                "candidate_fallback_status",
                "needs candidate_fallback: true (it falls back on these answers too)",
            );
        }
        c.finish(Some(routing))
    }
}

#[cfg(test)]
mod tests;
