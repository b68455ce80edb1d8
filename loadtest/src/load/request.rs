//! The requests a run sends, built once before it starts: method, headers and every body as
//! `Bytes`, so sending one clones reference counts instead of building JSON.

use std::path::Path;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use serde_json::{json, Map, Value};

use super::{parse_header, parse_method, Api, LoadArgs};

/// Words of the synthetic prompt, cycled; short common words are about one token each.
const WORDS: [&str; 16] = [
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "red",
    "birds", "sing", "in", "spring",
];

/// Everything about a request except its target.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pub method: Method,
    /// Headers without `Host` (added per target).
    pub headers: HeaderMap,
    /// Used in turn, cycling; never empty once built.
    pub bodies: Vec<Bytes>,
    /// Read the body as an OpenAI SSE stream: time tokens, expect `[DONE]`.
    pub sse: bool,
}

// === impl Template ===

impl Template {
    /// A placeholder while flags are reported as invalid.
    pub fn empty() -> Self {
        Self {
            method: Method::GET,
            headers: HeaderMap::new(),
            bodies: vec![Bytes::new()],
            sse: false,
        }
    }

    pub fn build(a: &LoadArgs) -> anyhow::Result<Self> {
        let bodies = if let Some(file) = &a.body {
            vec![Bytes::from(
                std::fs::read(file).with_context(|| format!("--body {}", file.display()))?,
            )]
        } else if let Some(file) = &a.prompts {
            read_prompts(file, a)?
        } else if a.api == Api::Raw {
            vec![Bytes::new()]
        } else {
            vec![body_for(a, &synthetic_prompt(a.prompt_tokens))]
        };
        let method = match &a.method {
            Some(m) => parse_method(m)?,
            None if a.api == Api::Raw && a.body.is_none() => Method::GET,
            None => Method::POST,
        };
        if a.stream && a.api == Api::Embeddings {
            bail!("--stream: embeddings are not streamed");
        }
        let mut headers = HeaderMap::new();
        let content_type = if a.api == Api::Raw {
            "application/octet-stream"
        } else {
            "application/json"
        };
        if method != Method::GET || a.body.is_some() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        if a.stream {
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        let mut errors = Vec::new();
        for h in &a.headers {
            match parse_header(h) {
                Ok((name, value)) => {
                    headers.insert(name, value);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("\n  "));
        }
        Ok(Self {
            method,
            headers,
            bodies,
            sse: a.stream,
        })
    }
}

/// A prompt of `words` words.
pub(crate) fn synthetic_prompt(words: usize) -> String {
    let mut out = String::with_capacity(words * 6);
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[i % WORDS.len()]);
    }
    out
}

/// The OpenAI request body for `prompt`.
fn body_for(a: &LoadArgs, prompt: &str) -> Bytes {
    let mut body = match a.api {
        Api::Chat => json!({
            "model": a.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": a.max_tokens,
        }),
        Api::Completions => json!({
            "model": a.model,
            "prompt": prompt,
            "max_tokens": a.max_tokens,
        }),
        Api::Embeddings => json!({"model": a.model, "input": prompt}),
        Api::Raw => return Bytes::from(prompt.to_owned()),
    };
    if a.stream {
        body["stream"] = Value::Bool(true);
        // The usage chunk gives the exact output tokens (and the prompt's) for the token
        // throughput and TPOT; without it they are counted from the token events.
        body["stream_options"] = json!({"include_usage": true});
    }
    Bytes::from(body.to_string())
}

/// A whole body from a prompts file, as the run needs it: with `--stream`, one that names no
/// `stream` gets `"stream": true` (as generated bodies do), appended so the rest of its bytes
/// stay as written; a body whose `stream` disagrees with `--stream` is refused, since either
/// way the run would measure something other than what was meant (a JSON answer read as a cut
/// stream, or a stream read as a plain body with no token timings).
fn whole_body(line: &str, body: &Map<String, Value>, stream: bool) -> Result<Bytes, String> {
    match (stream, body.get("stream")) {
        (true, None) => {
            // `line` is a trimmed JSON object, so it ends with its closing brace.
            let open = line.strip_suffix('}').unwrap_or(line).trim_end();
            let comma = if open.ends_with('{') { "" } else { "," };
            Ok(Bytes::from(format!("{open}{comma}\"stream\":true}}")))
        }
        (true, Some(Value::Bool(true))) => Ok(Bytes::from(line.to_owned())),
        (true, Some(other)) => Err(format!(
            "\"stream\": {other} in a --stream run; remove the key (--stream adds \
             \"stream\": true) or set it to true"
        )),
        (false, Some(Value::Bool(true))) => Err("the body asks for a stream (\"stream\": \
             true) but the run has no --stream, so its tokens would not be timed; add --stream, \
             or remove the key"
            .to_owned()),
        // What the server makes of any other `stream` is its answer to measure.
        (false, _) => Ok(Bytes::from(line.to_owned())),
    }
}

/// Reads a JSONL file of prompts (JSON strings) or whole bodies (JSON objects).
fn read_prompts(file: &Path, a: &LoadArgs) -> anyhow::Result<Vec<Bytes>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("--prompts {}", file.display()))?;
    let mut bodies = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::String(prompt)) => bodies.push(body_for(a, &prompt)),
            Ok(Value::Object(body)) => match whole_body(line, &body, a.stream) {
                Ok(body) => bodies.push(body),
                Err(e) => errors.push(format!("line {}: {e}", i + 1)),
            },
            Ok(_) => errors.push(format!(
                "line {}: neither a JSON string nor an object",
                i + 1
            )),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    if !errors.is_empty() {
        bail!("--prompts {}:\n  {}", file.display(), errors.join("\n  "));
    }
    if bodies.is_empty() {
        bail!("--prompts {}: no prompts", file.display());
    }
    Ok(bodies)
}
