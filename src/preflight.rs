//! What `rollgate run` needs from this machine besides a valid config: the files the config
//! names (TLS certificate and key, admin tokens, the audit log's, the access log's and the
//! state's directories, golden suites) and this build's features. `rollgate validate FILE` and every reload run
//! these checks, so that a config that could not start (or whose rollout would fail on a missing
//! suite) is refused before it is applied, and what `validate` accepts `run` accepts. Listener
//! addresses are not probed: only binding tells whether a port is free.
//!
//! Nothing is changed on the machine: a directory that does not exist yet is judged by making
//! and removing an empty probe directory in its nearest existing ancestor.

use std::fmt;
use std::path::{Path, PathBuf};

use rollgate_config::Config;
use rollgate_control::synthetic::{Suite, SuiteError};

/// A golden suite that `rollgate run` could not use.
pub(crate) struct SuiteProblem {
    /// The setting that names it, as config errors write paths:
    /// `models[0].rollout.synthetic.suite`.
    pub(crate) at: String,
    /// The file, resolved against the config's folder.
    pub(crate) path: PathBuf,
    pub(crate) fault: SuiteFault,
}

pub(crate) enum SuiteFault {
    /// Not on this machine, or not readable by this user.
    Unreadable(std::io::Error),
    /// Read, but not a valid suite: the file itself is wrong, wherever it is checked.
    Invalid(SuiteError),
}

/// Every problem, each naming the setting; empty when the config can start here.
pub(crate) fn check(config: &Config, base_dir: &Path) -> Vec<String> {
    let mut errors = machine(config);
    errors.extend(suites(config, base_dir).iter().map(ToString::to_string));
    errors
}

/// What [`check`] finds besides the golden suites: the files and build features `rollgate run`
/// needs.
pub(crate) fn machine(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(tls) = &config.tls {
        // Each file on its own first, so that two missing files are two errors.
        let unreadable: Vec<String> = [("tls.cert", &tls.cert), ("tls.key", &tls.key)]
            .into_iter()
            .filter_map(|(at, p)| {
                (std::fs::File::open(p).err()).map(|e| format!("{at}: {}: {e}", p.display()))
            })
            .collect();
        if !unreadable.is_empty() {
            errors.extend(unreadable);
        } else if let Err(e) = rollgate_proxy::load_tls(&tls.cert, &tls.key) {
            errors.push(format!("tls: {e}"));
        }
    }
    let env_token = std::env::var("ROLLGATE_ADMIN_TOKEN").is_ok_and(|t| !t.trim().is_empty());
    errors.extend(token_files(&config.admin, env_token));
    errors.extend(reads_without_token(&config.admin, env_token));
    if let Some(dir) = &config.state_dir {
        if let Err(e) = can_hold(dir, true) {
            errors.push(format!("state_dir: {}: {e}", dir.display()));
        }
    }
    let audit = (config.admin.audit_log.clone())
        .map(|p| ("admin.audit_log", p))
        .or_else(|| (config.state_dir.as_ref()).map(|d| ("state_dir", d.join("audit.log"))));
    if let Some((setting, path)) = audit {
        if let Err(e) = can_hold(&path, false) {
            errors.push(format!("{setting}: the audit log {}: {e}", path.display()));
        }
    }
    if let Some(rollgate_config::AccessLog::File(path)) = &config.access_log {
        if let Err(e) = can_hold(path, false) {
            errors.push(format!("access_log: {}: {e}", path.display()));
        }
    }
    if config.gitops.kubernetes.is_some() && !cfg!(feature = "k8s") {
        errors.push(
            "gitops.kubernetes: this rollgate was built without the `k8s` feature: remove the \
             `gitops.kubernetes` key, or run a build with it (`cargo build --release --features \
             k8s`)"
                .to_owned(),
        );
    }
    errors
}

/// Each golden suite that cannot be read or is not valid, named by its model's index as every
/// other config error is (`models[0].…`).
pub(crate) fn suites(config: &Config, base_dir: &Path) -> Vec<SuiteProblem> {
    let named = config.models.iter().enumerate().filter_map(|(i, m)| {
        let suite = m.rollout.as_ref()?.synthetic.as_ref()?;
        Some((i, base_dir.join(&suite.suite)))
    });
    named
        .filter_map(|(i, path)| {
            let fault = match std::fs::read_to_string(&path) {
                Ok(text) => SuiteFault::Invalid(Suite::from_yaml(&text).err()?),
                Err(e) => SuiteFault::Unreadable(e),
            };
            let at = format!("models[{i}].rollout.synthetic.suite");
            Some(SuiteProblem { at, path, fault })
        })
        .collect()
}

// === impl SuiteProblem ===

impl SuiteProblem {
    /// Its errors, one line each, when the file was read but is not a valid suite.
    pub(crate) fn invalid(&self) -> Option<Vec<String>> {
        let SuiteFault::Invalid(e) = &self.fault else {
            return None;
        };
        let lines = e
            .issues
            .iter()
            .map(|issue| format!("{}: {}: {issue}", self.at, self.path.display()));
        Some(lines.collect())
    }
}

impl fmt::Display for SuiteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (at, path) = (&self.at, self.path.display());
        match &self.fault {
            SuiteFault::Unreadable(e) => write!(f, "{at}: {path}: {e}"),
            SuiteFault::Invalid(e) => write!(f, "{at}: {path}: {e}"),
        }
    }
}

/// Each token file that `rollgate run` would read: readable and not empty. `token_file` is
/// not read when `ROLLGATE_ADMIN_TOKEN` is set (`env`; it takes precedence).
fn token_files(admin: &rollgate_config::Admin, env: bool) -> Vec<String> {
    let legacy = admin
        .token_file
        .iter()
        .filter(|_| !env)
        .map(|p| ("admin.token_file".to_owned(), p));
    let named = (admin.tokens.iter().enumerate())
        .map(|(i, t)| (format!("admin.tokens[{i}].file"), &t.file));
    legacy
        .chain(named)
        .filter_map(|(at, p)| match std::fs::read_to_string(p) {
            Ok(t) if t.trim().is_empty() => Some(format!("{at}: {} is empty", p.display())),
            Ok(_) => None,
            Err(e) => Some(format!("{at}: {}: {e}", p.display())),
        })
        .collect()
}

/// `admin.protect_reads` with no token at all (`ROLLGATE_ADMIN_TOKEN`, `admin.token_file`,
/// `admin.tokens`): every read, Prometheus's scrape included, would be refused.
fn reads_without_token(admin: &rollgate_config::Admin, env_token: bool) -> Option<String> {
    let any = env_token || admin.token_file.is_some() || !admin.tokens.is_empty();
    (admin.protect_reads && !any).then(|| {
        "admin.protect_reads: no admin token to read with: set admin.token_file, admin.tokens or ROLLGATE_ADMIN_TOKEN, or leave protect_reads out".to_owned()
    })
}

/// Whether `path` can be a directory (`dir`) or an appendable file: it is one already, or it
/// can be made under its nearest existing ancestor.
fn can_hold(path: &Path, dir: bool) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if dir && !m.is_dir() => return Err("not a directory".to_owned()),
        Ok(m) if !dir && m.is_dir() => return Err("is a directory".to_owned()),
        Ok(_) if dir => return probe(path),
        Ok(_) => {
            return std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(drop)
                .map_err(|e| e.to_string())
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.to_string()),
        Err(_) => {}
    }
    let mut ancestor = path.parent();
    while let Some(a) = ancestor {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        match std::fs::metadata(a) {
            Ok(m) if m.is_dir() => return probe(a).map_err(|e| format!("cannot be created: {e}")),
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    a.display()
                ))
            }
            Err(_) => ancestor = a.parent(),
        }
    }
    Err("cannot be created: no existing parent directory".to_owned())
}

/// Makes and removes an empty directory in `dir`: the one sure test that it takes new entries
/// (permissions, read-only mounts, `/proc`).
fn probe(dir: &Path) -> Result<(), String> {
    let probe: PathBuf = dir.join(format!(".rollgate-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Best effort: the probe is empty, and the error above already proved the point.
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, model_extra: &str) -> Config {
        let admin = if extra.contains("admin:") {
            ""
        } else {
            "admin: { listen: 127.0.0.1:0 }\n"
        };
        let yaml = format!(
            "listen: 127.0.0.1:0\n{admin}{extra}models:\n  - name: m\n    stable: {{ endpoints: [\"http://127.0.0.1:9\"] }}\n{model_extra}"
        );
        rollgate_config::parse(&yaml).expect("valid config")
    }

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("rollgate-preflight-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_config_that_cannot_start_here_names_every_missing_piece() {
        let dir = temp("missing");
        let file = dir.join("a-file");
        std::fs::write(&file, "x").expect("write");
        std::fs::write(dir.join("empty"), "\n").expect("write");
        let c = config(
            &format!(
                "tls: {{ cert: {d}/nope.crt, key: {d}/nope.key }}\nadmin: {{ listen: 127.0.0.1:0, token_file: {d}/nope/token, tokens: [ {{ name: ops, file: {d}/empty, roles: [operate] }} ] }}\nstate_dir: {f}/state\ngitops: {{ kubernetes: {{ namespace: ns }} }}\n",
                d = dir.display(),
                f = file.display()
            ),
            "    candidate: { endpoints: [\"http://127.0.0.1:10\"] }\n    rollout:\n      synthetic: { suite: nosuch.yaml }\n      steps: [ { weight: 10%, for: 1m } ]\n",
        );
        let errors = check(&c, &dir);
        let has = |what: &str| errors.iter().any(|e| e.starts_with(what));
        assert!(has("admin.token_file: "), "{errors:#?}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("admin.tokens[0].file: ") && e.ends_with("is empty")),
            "an empty secret is not a token: {errors:#?}"
        );
        assert!(
            has("tls.cert: ") && has("tls.key: "),
            "both TLS files: {errors:#?}"
        );
        assert!(
            has("state_dir: ")
                && errors
                    .iter()
                    .any(|e| e.to_lowercase().contains("not a directory")),
            "{errors:#?}"
        );
        assert!(has("models[0].rollout.synthetic.suite: "), "{errors:#?}");
        assert_eq!(
            has("gitops.kubernetes"),
            !cfg!(feature = "k8s"),
            "{errors:#?}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn protected_reads_need_a_token_from_somewhere() {
        let cases = [
            ("admin: { listen: 127.0.0.1:0, protect_reads: true }\n", false, true),
            ("admin: { listen: 127.0.0.1:0, protect_reads: true }\n", true, false),
            ("admin: { listen: 127.0.0.1:0, protect_reads: true, token_file: /t }\n", false, false),
            (
                "admin: { listen: 127.0.0.1:0, protect_reads: true, tokens: [ { name: ci, file: /t, roles: [read] } ] }\n",
                false,
                false,
            ),
            ("admin: { protect_reads: false }\n", false, false),
            ("", false, false),
        ];
        for (admin, env, refused) in cases {
            let c = config(admin, "");
            let error = reads_without_token(&c.admin, env);
            assert_eq!(error.is_some(), refused, "{admin} (env token: {env})");
            if let Some(e) = error {
                assert!(e.starts_with("admin.protect_reads: "), "{e}");
            }
        }
    }

    #[test]
    fn what_can_be_made_passes_and_nothing_is_left_behind() {
        let dir = temp("ok");
        std::fs::write(dir.join("golden.yaml"), "requests:\n  - name: hi\n    path: /v1/chat/completions\n    body: { model: m, messages: [ { role: user, content: hi } ] }\n    expect: { status: 200 }\n").expect("suite");
        let c = config(
            &format!("state_dir: {}/state/deeper\n", dir.display()),
            "    candidate: { endpoints: [\"http://127.0.0.1:10\"] }\n    rollout:\n      synthetic: { suite: golden.yaml }\n      steps: [ { weight: 10%, for: 1m } ]\n",
        );
        assert_eq!(check(&c, &dir), Vec::<String>::new());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["golden.yaml"], "the probe leaves nothing");
        // A suite that does not parse is named with its problem.
        std::fs::write(dir.join("golden.yaml"), "requests: 5\n").expect("suite");
        let errors = check(&c, &dir);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("golden.yaml"), "{errors:#?}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
