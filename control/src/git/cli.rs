//! Runs the `git` CLI for the Git source: never interactive (no terminal prompt, SSH in batch
//! mode), credentials passed through the environment (never on the command line, never logged),
//! one timeout per command, the child killed when it runs past it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

/// How `git` reaches the remote.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    /// https: a token file, sent as `Authorization: Basic x-access-token:<token>`; re-read on
    /// every command so that a rotated token is picked up.
    pub(crate) token_file: Option<PathBuf>,
    /// ssh: a private key, used alone (`IdentitiesOnly`).
    pub(crate) ssh_key: Option<PathBuf>,
}

/// The `git` CLI bound to one bare repository.
#[derive(Debug)]
pub(crate) struct GitCli {
    dir: PathBuf,
    creds: Credentials,
    timeout: Duration,
}

// === impl GitCli ===

impl GitCli {
    pub(crate) fn new(dir: PathBuf, creds: Credentials, timeout: Duration) -> GitCli {
        GitCli {
            dir,
            creds,
            timeout,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `git --git-dir <dir> <args>` with `stdin`; stdout on success, else a message
    /// naming the command and git's stderr.
    pub(crate) async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C")
            // Notes are written by rollgate, whatever identity the host has (or lacks).
            .env("GIT_AUTHOR_NAME", "rollgate")
            .env("GIT_AUTHOR_EMAIL", "rollgate@localhost")
            .env("GIT_COMMITTER_NAME", "rollgate")
            .env("GIT_COMMITTER_EMAIL", "rollgate@localhost")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        self.credentials(&mut cmd)?;
        let what = format!("git {}", args.first().copied().unwrap_or(""));
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{what}: cannot start git: {e}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)
                .await
                .map_err(|e| format!("{what}: writing stdin: {e}"))?;
        }
        let out = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("{what}: timed out after {:?}", self.timeout))?
            .map_err(|e| format!("{what}: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!("{what}: {}", one_line(&stderr)))
        }
    }

    /// The token as an extra HTTP header and the SSH key, through the environment
    /// (`GIT_CONFIG_*` is not visible in the process list the way `-c` arguments are).
    fn credentials(&self, cmd: &mut Command) -> Result<(), String> {
        if let Some(file) = &self.creds.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("token file {}: {e}", file.display()))?;
            let basic = base64(format!("x-access-token:{}", token.trim()).as_bytes());
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        let mut ssh = String::from("ssh -o BatchMode=yes");
        if let Some(key) = &self.creds.ssh_key {
            ssh.push_str(&format!(
                " -i '{}' -o IdentitiesOnly=yes",
                key.display().to_string().replace('\'', r"'\''")
            ));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        Ok(())
    }
}

/// What a failed command without any stderr reports.
pub(crate) const NO_MESSAGE: &str = "failed (no message)";

/// git's stderr as one line for logs and `/status` (hints and blank lines dropped).
fn one_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    if lines.is_empty() {
        NO_MESSAGE.to_owned()
    } else {
        lines.join(" / ")
    }
}

/// Standard base64 with padding (only for the Basic auth header).
pub(crate) fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The URL without any `user:password@` part, for logs and status.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_travel_in_the_environment_never_in_arguments() {
        let dir = std::env::temp_dir().join(format!("rollgate-cli-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "ghs_s3cret\n").expect("token");
        let cli = GitCli::new(
            dir.join("mirror"),
            Credentials {
                token_file: Some(token),
                ssh_key: Some(PathBuf::from("/keys/deploy key")),
            },
            Duration::from_secs(1),
        );
        let mut cmd = Command::new("git");
        cli.credentials(&mut cmd).expect("credentials");
        let env: std::collections::HashMap<String, String> = cmd
            .as_std()
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        assert_eq!(env["GIT_CONFIG_KEY_0"], "http.extraHeader");
        assert_eq!(
            env["GIT_CONFIG_VALUE_0"],
            format!(
                "Authorization: Basic {}",
                base64(b"x-access-token:ghs_s3cret")
            )
        );
        assert_eq!(
            env["GIT_SSH_COMMAND"],
            "ssh -o BatchMode=yes -i '/keys/deploy key' -o IdentitiesOnly=yes"
        );
        assert_eq!(cmd.as_std().get_args().count(), 0);
        let _ = std::fs::remove_dir_all(&dir); // cleanup only
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact("https://user:tok@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact("https://github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(redact("/srv/repo"), "/srv/repo");
        assert_eq!(redact("git@github.com:o/r.git"), "git@github.com:o/r.git");
    }

    #[test]
    fn stderr_becomes_one_line_without_hints() {
        assert_eq!(
            one_line("error: x\nhint: do y\n\nfatal: z\n"),
            "error: x / fatal: z"
        );
    }
}
