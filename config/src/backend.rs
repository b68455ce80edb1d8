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

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let rest = strip_scheme(text)?;
        if rest.contains(['?', '#']) {
            return Err(ParseError::new(format!(
                "`{text}` has a query or fragment; an endpoint is http://host:port"
            )));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !path.is_empty() {
            return Err(ParseError::new(format!(
                "`{text}` has a path `/{path}`; an endpoint is http://host:port (the request path is forwarded as is)"
            )));
        }
        if authority.contains('@') {
            return Err(ParseError::new(format!(
                "`{text}` has credentials; they are not supported in endpoints"
            )));
        }
        let (host, port) =
            split_host_port(authority).map_err(|why| ParseError::new(format!("`{text}` {why}")))?;
        let authority = format!("{host}:{port}");
        Ok(Endpoint {
            url: format!("http://{authority}"),
            authority,
        })
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

/// The part after `http://`; other schemes get a message saying what to write instead.
fn strip_scheme(text: &str) -> Result<&str, ParseError> {
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(ParseError::new(format!(
            "`{text}` has no scheme; write http://host:port"
        )));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(rest),
        "https" => Err(ParseError::new(format!(
            "`{text}`: upstream TLS is not supported yet; use an http:// endpoint"
        ))),
        _ => Err(ParseError::new(format!(
            "`{text}` has an unsupported scheme `{scheme}`; write http://host:port"
        ))),
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
