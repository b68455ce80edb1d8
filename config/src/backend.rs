//! Parsing the scalars of a backend: endpoint URLs and engine names.
//!
//! An endpoint is `http://host[:port][/]`: the port defaults to 80, one trailing slash is
//! dropped, and anything else after the authority is refused, because the proxy forwards the
//! client's path unchanged and a base path would be silently ignored.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::{Endpoint, Engine, ParseError};

const DEFAULT_PORT: u16 = 80;

/// DNS limits (RFC 1035): 63 bytes a label, 253 a name.
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 253;

const ENGINES: [Engine; 5] = [
    Engine::Vllm,
    Engine::Sglang,
    Engine::Tgi,
    Engine::Triton,
    Engine::Openai,
];

// === impl Endpoint ===

impl FromStr for Endpoint {
    type Err = ParseError;

    /// Every problem of the text in one message: `https://h:1/v1` is refused for its scheme
    /// and for its path at once, so fixing one does not reveal the other.
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut problems = Vec::new();
        let rest = strip_scheme(text).unwrap_or_else(|(why, rest)| {
            problems.push(why);
            rest
        });
        let (rest, query) = match rest.find(['?', '#']) {
            Some(at) => (&rest[..at], true),
            None => (rest, false),
        };
        if query {
            problems.push("has a query or fragment".to_owned());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() {
            problems.push(format!(
                "has a path `/{path}` (the request path is forwarded as is)"
            ));
        }
        let authority = match authority.rsplit_once('@') {
            Some((_, host)) => {
                problems.push("has credentials (not supported)".to_owned());
                host
            }
            None => authority,
        };
        let host_port = split_host_port(authority).map_err(|why| problems.push(why));
        match host_port {
            Ok((host, port)) if problems.is_empty() => {
                let authority = format!("{host}:{port}");
                Ok(Endpoint {
                    url: format!("http://{authority}"),
                    authority,
                })
            }
            _ => Err(ParseError::new(format!(
                "`{text}` {}; an endpoint is http://host:port",
                and_list(&problems)
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

// === impl Engine ===

impl FromStr for Engine {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        ENGINES
            .into_iter()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = ENGINES.iter().map(|e| e.as_str()).collect();
                ParseError::new(format!(
                    "unknown engine `{text}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The part after `http://`; for another scheme, what is wrong with it and the rest of the
/// text, still checked for other problems.
fn strip_scheme(text: &str) -> Result<&str, (String, &str)> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(("has no scheme".to_owned(), text));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(rest),
        "https" => Err((
            "is https://, but upstream TLS is not supported yet".to_owned(),
            rest,
        )),
        _ => Err((format!("has an unsupported scheme `{scheme}`"), rest)),
    }
}

/// Host (normalised: lowercase name, dotted IPv4 or bracketed canonical IPv6) and port.
fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("has no host".to_owned());
    }
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or("has an unclosed `[`")?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("has an invalid IPv6 address `{ip}`"))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => parse_port(after.strip_prefix(':').ok_or("has junk after `]`")?)?,
        };
        return Ok((format!("[{ip}]"), port));
    }
    let (host, port) = match authority.split_once(':') {
        None => (authority, DEFAULT_PORT),
        Some((_, port)) if port.contains(':') => {
            return Err("has an IPv6 address without brackets; write http://[::1]:8000".to_owned());
        }
        Some((host, port)) => (host, parse_port(port)?),
    };
    Ok((check_host(host)?, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) => Err("has port 0".to_owned()),
        Ok(port) => Ok(port),
        Err(_) if port.is_empty() => Err("has an empty port".to_owned()),
        Err(_) => Err(format!("has an invalid port `{port}`")),
    }
}

/// A dotted IPv4 address or a DNS name, lowercased.
fn check_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("has no host".to_owned());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| format!("has an invalid IPv4 address `{host}`"));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > MAX_NAME || !host.split('.').all(valid_label) {
        return Err(format!("has an invalid host name `{host}`"));
    }
    Ok(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accepted() {
        let cases = [
            (
                "http://10.0.0.1:8000",
                "http://10.0.0.1:8000",
                "10.0.0.1:8000",
            ),
            (
                "http://10.0.0.1:8000/",
                "http://10.0.0.1:8000",
                "10.0.0.1:8000",
            ),
            (
                "http://vllm-0.models.svc",
                "http://vllm-0.models.svc:80",
                "vllm-0.models.svc:80",
            ),
            ("HTTP://Model-A:9000", "http://model-a:9000", "model-a:9000"),
            ("http://[::1]:8000", "http://[::1]:8000", "[::1]:8000"),
            ("http://[fd00:0::1]", "http://[fd00::1]:80", "[fd00::1]:80"),
            ("http://localhost:1", "http://localhost:1", "localhost:1"),
        ];
        for (text, url, authority) in cases {
            let ep: Endpoint = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (ep.url.as_str(), ep.authority.as_str()),
                (url, authority),
                "{text}"
            );
        }
    }

    #[test]
    fn endpoints_rejected() {
        let cases = [
            ("https://10.0.0.1:8000", "upstream TLS is not supported yet"),
            ("10.0.0.1:8000", "has no scheme"),
            ("grpc://10.0.0.1:8000", "unsupported scheme `grpc`"),
            ("http://10.0.0.1:8000/v1", "has a path `/v1`"),
            ("http://10.0.0.1:8000//", "has a path `//`"),
            ("http://h:8000?x=1", "query or fragment"),
            ("http://user:pw@h:8000", "credentials"),
            ("http://", "has no host"),
            ("http://:8000", "has no host"),
            ("http://h:", "empty port"),
            ("http://h:0", "port 0"),
            ("http://h:70000", "invalid port `70000`"),
            ("http://::1:8000", "without brackets"),
            ("http://[::1", "unclosed"),
            ("http://[zz]:1", "invalid IPv6"),
            ("http://[::1]x", "junk after"),
            ("http://300.0.0.1:1", "invalid IPv4"),
            ("http://a..b:1", "invalid host name"),
            ("http://-a:1", "invalid host name"),
        ];
        for (text, want) in cases {
            let err = text.parse::<Endpoint>().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
    }

    /// An endpoint with several problems names them all, not only the first found.
    #[test]
    fn every_problem_of_an_endpoint_is_named() {
        let cases = [
            (
                "https://127.0.0.1:18102/v1",
                "`https://127.0.0.1:18102/v1` is https://, but upstream TLS is not supported yet and has a path `/v1` (the request path is forwarded as is); an endpoint is http://host:port",
            ),
            (
                "10.0.0.1:8000/v1",
                "`10.0.0.1:8000/v1` has no scheme and has a path `/v1` (the request path is forwarded as is); an endpoint is http://host:port",
            ),
            (
                "grpc://u@h:0?x",
                "`grpc://u@h:0?x` has an unsupported scheme `grpc`, has a query or fragment, has credentials (not supported) and has port 0; an endpoint is http://host:port",
            ),
        ];
        for (text, want) in cases {
            let err = text.parse::<Endpoint>().expect_err(text).to_string();
            assert_eq!(err, want, "{text}");
        }
    }

    #[test]
    fn engines() {
        for engine in ENGINES {
            assert_eq!(engine.as_str().parse::<Engine>(), Ok(engine));
        }
        let err = "vlm".parse::<Engine>().expect_err("unknown").to_string();
        assert_eq!(
            err,
            "unknown engine `vlm`; expected one of vllm, sglang, tgi, triton, openai"
        );
    }
}
