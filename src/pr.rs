//! The PR pipeline: `rollgate validate` (a file, or a file in a Git commit) and `rollgate diff`
//! between two commits, each with the policy checks, and exit codes a CI job can branch on.
//!
//! Commits are read with the `git` CLI (`git -C REPO show REV:PATH`), so any repository Git can
//! read works, shallow clones included as long as the commits are there.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;
use rollgate_config::{Change, ChangeKind, Config, Violation};
use rollgate_control::gitops::count;
use serde_json::{json, Value};

/// Exit code: the config is valid and breaks no policy rule.
const OK: u8 = 0;
/// Exit code: invalid config, or it could not be read (missing revision, path, repository).
const INVALID: u8 = 1;
/// Exit code: valid, but the change breaks a policy rule.
const VIOLATION: u8 = 3;

/// `rollgate validate`.
#[derive(Args, Debug)]
#[command(
    override_usage = "rollgate validate [--config-only] FILE\n       rollgate validate --repo REPO --rev REV [--path PATH]"
)]
pub(crate) struct ValidateArgs {
    /// A config file on disk. Leave out with --repo/--rev.
    #[arg(required_unless_present = "repo", conflicts_with = "repo")]
    file: Option<PathBuf>,
    /// A Git repository (its work tree or a bare repository).
    #[arg(long, requires = "rev")]
    repo: Option<PathBuf>,
    /// The commit to validate (a SHA, branch, tag or any revision Git understands).
    #[arg(long, requires = "repo")]
    rev: Option<String>,
    /// The config file's path inside the repository.
    #[arg(long, default_value = "rollgate.yaml", requires = "repo")]
    path: String,
    /// Check the config only, not what `rollgate run` needs from this machine (the TLS,
    /// token and suite files it names, state_dir, build features). A config from Git
    /// (`--repo`) is always checked this way: its paths are the deployment machine's.
    #[arg(long)]
    config_only: bool,
}

/// `rollgate diff`.
#[derive(Args, Debug)]
pub(crate) struct DiffArgs {
    /// A Git repository (its work tree or a bare repository).
    #[arg(long)]
    repo: PathBuf,
    /// The base commit (e.g. the PR's merge base).
    #[arg(long)]
    from: String,
    /// The commit with the change (e.g. the PR's head).
    #[arg(long)]
    to: String,
    /// The config file's path inside the repository.
    #[arg(long, default_value = "rollgate.yaml")]
    path: String,
    /// Print one JSON object instead of Markdown.
    #[arg(long)]
    json: bool,
}

/// A config read from somewhere, named for messages.
struct Source {
    /// `FILE`, or `REV (SHA12):PATH`.
    name: String,
    /// The revision as given on the command line, when read from Git.
    rev: Option<String>,
    /// The full commit SHA, when read from Git.
    commit: Option<String>,
    text: String,
}

/// `rollgate validate FILE` or `rollgate validate --repo R --rev X [--path P]`.
pub(crate) fn validate(args: ValidateArgs) -> ExitCode {
    let (new, old) = match (&args.file, &args.repo, &args.rev) {
        (Some(file), _, _) => match read_file(file) {
            Ok(s) => (s, None),
            Err(e) => return fail(&e),
        },
        (None, Some(repo), Some(rev)) => match read_commit(repo, rev, &args.path) {
            Ok(s) => {
                let parent = parent_source(repo, &s, &args.path);
                (s, parent)
            }
            Err(e) => return fail(&e),
        },
        // clap requires FILE or --repo with --rev.
        _ => return fail("give a FILE, or --repo and --rev"),
    };
    let Some(config) = parse_or_report(&new) else {
        return ExitCode::from(INVALID);
    };
    if let (Some(file), false) = (&args.file, args.config_only) {
        let base = file.parent().unwrap_or(Path::new(""));
        if !preflight(&new.name, &config, base) {
            return ExitCode::from(INVALID);
        }
    }
    let n = config.models.len();
    eprintln!("{}: valid ({})", new.name, count(n, "model"));
    let old = old.and_then(|o| parse_parent(&o));
    let violations = rollgate_config::check(old.as_ref(), &config);
    for v in &violations {
        eprintln!("{}: policy violation {v}", new.name);
    }
    exit(&violations)
}

/// What `rollgate run` needs besides a valid config, each problem printed; whether there was
/// none. An invalid golden suite is the file's own mistake, not this machine's: it is named
/// invalid with each of its errors, whatever else is missing here.
fn preflight(name: &str, config: &Config, base: &Path) -> bool {
    let mut problems = crate::preflight::machine(config);
    let (mut invalid, mut suite_errors) = (Vec::new(), Vec::new());
    for suite in crate::preflight::suites(config, base) {
        match suite.invalid() {
            Some(errors) => {
                let (path, n) = (suite.path.display(), count(errors.len(), "error"));
                invalid.push(format!("the synthetic suite {path} ({}) has {n}", suite.at));
                suite_errors.extend(errors);
            }
            None => problems.push(suite.to_string()),
        }
    }
    for p in problems.iter().chain(&suite_errors) {
        eprintln!("{name}: {p}");
    }
    let cannot_start = format!(
        "`rollgate run` cannot start it on this machine ({}; --config-only skips these checks)",
        count(problems.len(), "problem")
    );
    match (invalid.is_empty(), problems.is_empty()) {
        (true, true) => return true,
        (true, false) => eprintln!("{name}: valid, but {cannot_start}"),
        (false, true) => eprintln!("{name}: invalid: {}", invalid.join("; ")),
        (false, false) => eprintln!(
            "{name}: invalid: {}; and {cannot_start}",
            invalid.join("; ")
        ),
    }
    false
}

/// `rollgate diff --repo R --from A --to B [--path P] [--json]`.
#[allow(clippy::print_stdout)] // The report (or, with --json, why there is none) is the output.
pub(crate) fn diff(args: DiffArgs) -> ExitCode {
    let read = |rev: &str| read_commit(&args.repo, rev, &args.path);
    // With --json a failure is JSON on stdout too, so a CI step that parses it learns why.
    let refuse = |errors: Vec<String>| {
        if args.json {
            println!("{}", json!({ "valid": false, "errors": errors }));
        }
        ExitCode::from(INVALID)
    };
    let (from, to) = match (read(&args.from), read(&args.to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            fail(&e);
            return refuse(vec![e]);
        }
    };
    let (Some(old), Some(new)) = (parse_or_report(&from), parse_or_report(&to)) else {
        let errors = [&from, &to]
            .iter()
            .flat_map(|s| match rollgate_config::parse(&s.text) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.iter().map(|e| format!("{}: {e}", s.name)).collect(),
            })
            .collect();
        return refuse(errors);
    };
    let changes = rollgate_config::diff(&old, &new);
    let violations = rollgate_config::check(Some(&old), &new);
    let report = Report {
        from: &from,
        to: &to,
        path: &args.path,
        old: &old,
        new: &new,
        changes: &changes,
        violations: &violations,
    };
    let text = if args.json {
        report.json().to_string()
    } else {
        report.markdown()
    };
    println!("{text}");
    exit(&violations)
}

fn exit(violations: &[Violation]) -> ExitCode {
    ExitCode::from(if violations.is_empty() { OK } else { VIOLATION })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rollgate: {message}");
    ExitCode::from(INVALID)
}

/// The config, or every error printed with where it came from.
fn parse_or_report(source: &Source) -> Option<Config> {
    match rollgate_config::parse(&source.text) {
        Ok(c) => Some(c),
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{}: {e}", source.name);
            }
            eprintln!("{}: {}", source.name, count(errors.len(), "error"));
            None
        }
    }
}

/// The parent's config, when it parses: a parent that was itself invalid (or had no config)
/// sets no baseline, and the new config is judged on its own.
fn parse_parent(source: &Source) -> Option<Config> {
    match rollgate_config::parse(&source.text) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprintln!(
                "{}: parent config is invalid ({}); policy checks ignore it",
                source.name,
                count(errors.len(), "error")
            );
            None
        }
    }
}

fn read_file(file: &Path) -> Result<Source, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", file.display());
    // Refused before reading, as `run` and the reload funnel refuse it.
    let len = std::fs::metadata(file).map_err(|e| fail(&e))?.len();
    let max = rollgate_config::MAX_CONFIG_BYTES as u64;
    if len > max {
        return Err(fail(&format!(
            "{len} bytes; a config file is at most {max} bytes (64 MiB)"
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| fail(&e))?;
    Ok(Source {
        name: file.display().to_string(),
        rev: None,
        commit: None,
        text,
    })
}

/// The file at `path` in commit `rev`.
fn read_commit(repo: &Path, rev: &str, path: &str) -> Result<Source, String> {
    let verify = |spec: &str| {
        git(repo, &["rev-parse", "--verify", "--end-of-options", spec])
            .map(|sha| sha.trim_end().to_owned())
    };
    let commit = verify(&format!("{rev}^{{commit}}")).map_err(|e| {
        // A tree or a blob exists but holds no config history to judge.
        match verify(rev).and_then(|sha| git(repo, &["cat-file", "-t", &sha])) {
            Ok(kind) => format!(
                "{}: `{rev}` is a {}, not a commit",
                repo.display(),
                kind.trim()
            ),
            Err(_) => format!("{}: revision `{rev}` not found: {e}", repo.display()),
        }
    })?;
    let name = format!("{rev} ({}):{path}", short(&commit));
    if path.trim_matches('/').is_empty() {
        return Err(format!("{name}: --path is empty; name the config file"));
    }
    let object = format!("{commit}:{path}");
    let kind = git(repo, &["cat-file", "-t", &object])
        .map_err(|e| format!("{name}: cannot read the config: {e}"))?;
    if kind.trim() != "blob" {
        return Err(format!(
            "{name}: is a {} in the commit, not a file",
            match kind.trim() {
                "tree" => "directory",
                other => other,
            }
        ));
    }
    let text = git(repo, &["cat-file", "blob", &object])
        .map_err(|e| format!("{name}: cannot read the config: {e}"))?;
    Ok(Source {
        name,
        rev: Some(rev.to_owned()),
        commit: Some(commit),
        text,
    })
}

/// The same path in the first parent of `source`'s commit, if there is one and it has the file.
fn parent_source(repo: &Path, source: &Source, path: &str) -> Option<Source> {
    let commit = source.commit.as_deref()?;
    let parent = format!("{commit}^1");
    git(repo, &["rev-parse", "--verify", "--quiet", &parent]).ok()?;
    let mut parent = read_commit(repo, &parent, path).ok()?;
    // `parent of 7d4e2a1c2b9f (0c1f5a2e11aa):rollgate.yaml`, not the full SHA and `^1`.
    let sha = parent.commit.as_deref().map(short).unwrap_or_default();
    parent.name = format!("parent of {} ({sha}):{path}", short(commit));
    Some(parent)
}

/// Runs `git -C repo args…`: its stdout, or its stderr as the error.
fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(if err.is_empty() {
            format!("git {} failed ({})", args.join(" "), out.status)
        } else {
            err
        });
    }
    String::from_utf8(out.stdout).map_err(|_| "not UTF-8 text".to_owned())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Everything `rollgate diff` shows.
struct Report<'a> {
    from: &'a Source,
    to: &'a Source,
    path: &'a str,
    old: &'a Config,
    new: &'a Config,
    changes: &'a [Change],
    violations: &'a [Violation],
}

/// The changes of one model (or of the top-level settings when `name` is None).
struct Group<'a> {
    name: Option<&'a str>,
    /// What the new candidate changes relative to stable, when there is one.
    kind: Option<&'static str>,
    changes: Vec<(&'a Change, String)>,
}

// === impl Report ===

impl Report<'_> {
    /// Changes by model, in the order the diff lists them; settings first.
    fn groups(&self) -> Vec<Group<'_>> {
        let mut groups: Vec<Group<'_>> = Vec::new();
        for change in self.changes {
            let (name, rel) = self.split(&change.path);
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) => g.changes.push((change, rel)),
                None => groups.push(Group {
                    name,
                    kind: name
                        .and_then(|n| self.new.model(n))
                        .and_then(|m| Some((m, m.candidate.as_ref()?)))
                        .map(|(m, c)| rollgate_config::rollout_change(&m.stable, c).as_str()),
                    changes: vec![(change, rel)],
                }),
            }
        }
        groups
    }

    /// The model a change belongs to and the path relative to it.
    fn split<'c>(&'c self, path: &str) -> (Option<&'c str>, String) {
        let names = self.old.models.iter().chain(&self.new.models);
        for m in names {
            let prefix = format!("models[{}]", m.name);
            if let Some(rest) = path.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with('.') {
                    return (Some(&m.name), rest.trim_start_matches('.').to_owned());
                }
            }
        }
        (None, path.to_owned())
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "### rollgate diff `{}` -> `{}` ({})\n\n",
            self.from.commit.as_deref().map_or("", short),
            self.to.commit.as_deref().map_or("", short),
            self.path
        );
        let groups = self.groups();
        if groups.is_empty() {
            out.push_str("No changes.\n\n");
        }
        for g in &groups {
            out.push_str(&match (g.name, g.kind) {
                (None, _) => "**Settings**\n".to_owned(),
                (Some(n), Some(k)) => {
                    format!("**Model `{n}`** (its candidate differs from stable in: {k})\n")
                }
                (Some(n), None) => format!("**Model `{n}`**\n"),
            });
            for (change, rel) in &g.changes {
                out.push_str(&format!("- {}\n", line(change, rel)));
            }
            out.push('\n');
        }
        out.push_str("### Policy\n\n");
        if self.violations.is_empty() {
            out.push_str("No policy violations.\n");
        }
        for v in self.violations {
            out.push_str(&format!(
                "- **{}** model `{}`: {}\n",
                v.rule, v.model, v.message
            ));
        }
        out
    }

    fn json(&self) -> Value {
        let models: Vec<Value> = self
            .groups()
            .iter()
            .filter_map(|g| {
                let name = g.name?;
                let status = match (self.old.model(name), self.new.model(name)) {
                    (None, _) => "added",
                    (_, None) => "removed",
                    _ => "changed",
                };
                Some(json!({ "name": name, "status": status, "candidate_change": g.kind }))
            })
            .collect();
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                let (model, rel) = self.split(&c.path);
                let mut v = json!({
                    "path": c.path,
                    "model": model,
                    "field": rel,
                    "restart_required": c.restart_required,
                });
                let (kind, extra) = match &c.kind {
                    ChangeKind::Added(what) => ("added", json!({ "new": what })),
                    ChangeKind::Removed(what) => ("removed", json!({ "old": what })),
                    ChangeKind::Changed { old, new } => {
                        ("changed", json!({ "old": old, "new": new }))
                    }
                };
                v["kind"] = kind.into();
                if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                    v.extend(extra);
                }
                v
            })
            .collect();
        let violations: Vec<Value> = self
            .violations
            .iter()
            .map(|v| json!({ "rule": v.rule, "model": v.model, "message": v.message }))
            .collect();
        json!({
            "from": { "rev": self.from.rev, "commit": self.from.commit },
            "to": { "rev": self.to.rev, "commit": self.to.commit },
            "path": self.path,
            "models": models,
            "changes": changes,
            "violations": violations,
        })
    }
}

/// `` `weight`: 10% -> 30% `` for one Markdown list item.
fn line(change: &Change, rel: &str) -> String {
    let field = if rel.is_empty() { "(model)" } else { rel };
    let mut text = match &change.kind {
        ChangeKind::Added(what) => format!("`{field}`: added ({what})"),
        ChangeKind::Removed(what) => format!("`{field}`: removed ({what})"),
        ChangeKind::Changed { old, new } => format!("`{field}`: {old} -> {new}"),
    };
    if change.restart_required {
        text.push_str(" (restart required)");
    }
    text
}
