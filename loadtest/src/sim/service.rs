//! Routing, the small endpoints, and the response and error shapes they share.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    inference::inference,
    metrics, openai,
    state::{hex, State},
    stream::SimBody,
    Engine, Faults,
};

/// `POST /sim/faults` bodies are tiny; this bounds what a confused client can make us hold.
const MAX_CONTROL_BODY: u64 = 1 << 20;

/// A request body read to its end: its hash and length, and the bytes when they fit.
pub(super) struct ReadBody {
    pub bytes: Option<Bytes>,
    pub len: u64,
    pub sha256: String,
}

/// A refusal in OpenAI shape.
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

/// Answers one request; every response carries `x-sim-name`.
pub(super) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    let mut response = route(&state, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    response
        .headers_mut()
        .insert("x-sim-name", state.name.clone());
    response
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Result<Response<SimBody>, ApiError> {
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::POST, p) if p.starts_with("/v1/") => inference(state, req).await,
        (&Method::GET, "/health") => Ok(health(state)),
        (&Method::GET, "/v2/health/ready") if triton(state) => Ok(triton_health(state, true)),
        (&Method::GET, "/v2/health/live") if triton(state) => Ok(triton_health(state, false)),
        (&Method::GET, "/metrics") => Ok(text(metrics::render(state))),
        (&Method::GET, "/v1/models") => {
            let model = openai::models(&state.args.model, state.args.max_model_len);
            Ok(json_response(
                StatusCode::OK,
                json!({"object": "list", "data": [model]}),
            ))
        }
        (&Method::GET, p) if p.strip_prefix("/v1/models/") == Some(state.args.model.as_str()) => {
            let model = openai::models(&state.args.model, state.args.max_model_len);
            Ok(json_response(StatusCode::OK, model))
        }
        (&Method::GET, "/sim/faults") => Ok(faults_response(&state.faults().faults)),
        (&Method::POST | &Method::PUT, "/sim/faults") => set_faults(state, req).await,
        (&Method::GET, "/sim/requests") => Ok(received_response(state)),
        (&Method::DELETE, "/sim/requests") => {
            state.reset_received();
            Ok(received_response(state))
        }
        (_, "/health" | "/metrics" | "/v1/models" | "/sim/faults" | "/sim/requests") => {
            Err(ApiError::method_not_allowed(req.method(), &path))
        }
        (_, "/v2/health/ready" | "/v2/health/live") if triton(state) => {
            Err(ApiError::method_not_allowed(req.method(), &path))
        }
        _ => Err(ApiError::not_found(req.method(), &path)),
    }
}

/// Reads the whole body, hashing as it goes; keeps the bytes only while they fit in `max`.
pub(super) async fn read_body(mut body: Incoming, max: u64) -> Result<ReadBody, ApiError> {
    let mut hasher = Sha256::new();
    let mut kept = Some(BytesMut::new());
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("reading the request body failed: {e}"), None)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        hasher.update(&data);
        len += data.len() as u64;
        if len > max {
            kept = None;
        }
        if let Some(buf) = kept.as_mut() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(ReadBody {
        bytes: kept.map(BytesMut::freeze),
        len,
        sha256: hex(&hasher.finalize()),
    })
}

async fn set_faults(state: &State, req: Request<Incoming>) -> Result<Response<SimBody>, ApiError> {
    let body = read_body(req.into_body(), MAX_CONTROL_BODY).await?;
    let bytes = body
        .bytes
        .ok_or_else(|| ApiError::too_large(body.len, MAX_CONTROL_BODY))?;
    let faults = Faults::from_json(&bytes).map_err(|e| ApiError::bad_request(e, None))?;
    state.set_faults(faults.clone());
    Ok(faults_response(&faults))
}

fn health(state: &State) -> Response<SimBody> {
    if state.faults().faults.fail_health {
        let body = openai::error("simulated health failure", "server_error", None, None);
        return json_bytes(StatusCode::SERVICE_UNAVAILABLE, body);
    }
    json_bytes(StatusCode::OK, Bytes::from_static(b"{}"))
}

/// Triton's KServe v2 health routes, which only Triton serves (so a gateway configured for
/// Triton in front of a vLLM profile sees the 404 a real vLLM would give).
fn triton(state: &State) -> bool {
    state.args.engine == Engine::Triton
}

/// Triton's answer: 200 or 400, both with an empty body. Ready follows `fail_health` as
/// `/health` does; live stays 200, since the simulated server is up, only not fit to serve.
fn triton_health(state: &State, ready: bool) -> Response<SimBody> {
    let fit = !ready || !state.faults().faults.fail_health;
    let mut response = Response::new(SimBody::full(Bytes::new()));
    if !fit {
        *response.status_mut() = StatusCode::BAD_REQUEST;
    }
    response
}

fn faults_response(faults: &Faults) -> Response<SimBody> {
    let value = serde_json::to_value(faults).unwrap_or_default();
    json_response(StatusCode::OK, value)
}

fn received_response(state: &State) -> Response<SimBody> {
    let (total, shadow, received) = state.received();
    let value = json!({"total": total, "shadow": shadow, "received": received});
    json_response(StatusCode::OK, value)
}

fn text(body: String) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

pub(super) fn sse_response(body: SimBody) -> Response<SimBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<SimBody> {
    json_bytes(status, openai::to_bytes(&value))
}

pub(super) fn json_bytes(status: StatusCode, body: Bytes) -> Response<SimBody> {
    let mut response = Response::new(SimBody::full(body));
    *response.status_mut() = status;
    let content_type = HeaderValue::from_static("application/json");
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

// === impl ApiError ===

impl ApiError {
    pub(super) fn bad_request(message: String, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    pub(super) fn not_found(method: &Method, path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("Invalid URL ({method} {path})"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    fn method_not_allowed(method: &Method, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("Method {method} is not allowed on {path}"),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub(super) fn too_large(len: u64, max: u64) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body of {len} bytes is over the limit of {max} bytes"),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_too_large"),
        }
    }

    pub(super) fn internal(message: &str) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.to_owned(),
            kind: "server_error",
            param: None,
            code: Some("internal_error"),
        }
    }

    pub(super) fn queue_full(max: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("The server is overloaded: {max} requests are already waiting."),
            kind: "server_error",
            param: None,
            code: Some("queue_full"),
        }
    }

    pub(super) fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{model}` does not exist."),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        }
    }

    /// vLLM's refusal when prompt plus output would not fit the context.
    pub(super) fn context_too_long(max: u64, prompt: u64, output: u64) -> Self {
        let message = format!(
            "This model's maximum context length is {max} tokens. However, you requested {} \
             tokens ({prompt} in the messages, {output} in the completion).",
            prompt + output
        );
        Self::bad_request(message, Some("max_tokens"))
    }

    fn into_response(self) -> Response<SimBody> {
        let body = openai::error(&self.message, self.kind, self.param, self.code);
        let mut response = json_bytes(self.status, body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
