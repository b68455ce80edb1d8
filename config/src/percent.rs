//! Percent-encoding (RFC 3986) of names in URLs: model names hold `/`, `:`, spaces or any UTF-8
//! (`meta-llama/Llama-3-8B`, `org/model:tag`), and travel in paths (`GET /v1/models/{id}`, the
//! admin API, `rollgate ctl`) and in query strings (PromQL gates). One encoder and one decoder
//! for the data plane, the control plane and the CLI.

use std::borrow::Cow;

/// Why text does not percent-decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error(
        "invalid percent-encoding in `{text}` at byte {at}: `%` must be followed by two hex digits"
    )]
    BadEscape { text: String, at: usize },
    #[error("`{0}` does not percent-decode to UTF-8")]
    NotUtf8(String),
}

/// Percent-encodes `s` as one path segment (or query value): everything but RFC 3986's
/// unreserved characters (`A–Z a–z 0–9 - . _ ~`), so a `/` in a model name stays inside it.
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes a path (or a part of one) into UTF-8; borrowed when there is no `%`. `+`
/// stays `+`: it means a space only in form-encoded query strings.
pub fn percent_decode(text: &str) -> Result<Cow<'_, str>, PercentError> {
    if !text.contains('%') {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let hex = |i: usize| {
        bytes
            .get(i)
            .and_then(|&b| char::from(b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(PercentError::BadEscape {
                text: text.to_owned(),
                at: i,
            });
        };
        out.push((hi << 4) | lo);
        i += 3;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PercentError::NotUtf8(text.to_owned()))
}
