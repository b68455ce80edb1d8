//! Every error the data plane answers itself, mapped in one place to an HTTP status, an
//! OpenAI-shaped body and a bounded metrics label.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::scan::ScanError;

/// Why the gateway answered a request itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Reject {
    #[error("The model `{0}` does not exist")]
    UnknownModel(String),
    #[error("The request names no model: set `model` in the JSON body or the x-gateway-model-name header")]
    NoModel,
    /// A body that is not the JSON it claims to be, before its `model` was found.
    #[error("Malformed request body: {0}")]
    Malformed(String),
    /// A body whose `model` is a number, a boolean, an object or an array.
    #[error("{0}")]
    ModelNotString(ScanError),
    /// HTTP framing the gateway cannot read unambiguously: a bad request line or header, a
    /// conflicting or invalid length, a broken chunked body.
    #[error("Malformed request: {0}")]
    Framing(String),
    #[error("Request headers exceed {limit} {what}")]
    HeadersTooLarge { limit: usize, what: &'static str },
    #[error("Request body exceeds the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("Invalid x-rollgate-variant override: expected `stable` or `candidate` with a candidate configured")]
    BadOverride,
    #[error("No endpoint available for model `{0}`")]
    NoEndpoint(String),
    #[error("Upstream unavailable: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("Upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
}

/// Failures talking to a model server, before a response head arrived.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    #[error("handshake failed: {0}")]
    Handshake(hyper::Error),
    #[error("exchange failed: {0}")]
    Exchange(hyper::Error),
}

/// Bounded label values for `rollgate_proxy_rejected_total{reason}`.
pub(crate) const REJECT_REASONS: [&str; 9] = [
    "unknown_model",
    "no_model",
    "malformed",
    "headers_too_large",
    "body_too_large",
    "bad_override",
    "no_endpoint",
    "upstream",
    "upstream_timeout",
];

// === impl Reject ===

impl Reject {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Reject::UnknownModel(_) => StatusCode::NOT_FOUND,
            Reject::NoModel
            | Reject::Malformed(_)
            | Reject::ModelNotString(_)
            | Reject::Framing(_)
            | Reject::BadOverride => StatusCode::BAD_REQUEST,
            Reject::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::NoEndpoint(_) => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Upstream(_) => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The client's own mistake (a body over the limit, broken framing, no such model), not
    /// the backend's: it must not count against a variant's error rate or its endpoints.
    pub(crate) fn is_client_fault(&self) -> bool {
        self.status().is_client_error()
    }

    /// [`REJECT_REASONS`]'s label.
    pub(crate) fn reason_str(&self) -> &'static str {
        REJECT_REASONS[self.reason()]
    }

    /// Index into [`REJECT_REASONS`].
    pub(crate) fn reason(&self) -> usize {
        match self {
            Reject::UnknownModel(_) => 0,
            Reject::NoModel => 1,
            Reject::Malformed(_) | Reject::ModelNotString(_) | Reject::Framing(_) => 2,
            Reject::HeadersTooLarge { .. } => 3,
            Reject::BodyTooLarge(_) => 4,
            Reject::BadOverride => 5,
            Reject::NoEndpoint(_) => 6,
            Reject::Upstream(_) => 7,
            Reject::UpstreamTimeout(_) => 8,
        }
    }

    fn kind(&self) -> (&'static str, Option<&'static str>, &'static str) {
        match self {
            Reject::UnknownModel(_) => ("invalid_request_error", Some("model"), "model_not_found"),
            Reject::NoModel => (
                "invalid_request_error",
                Some("model"),
                "model_not_specified",
            ),
            Reject::Malformed(_) => ("invalid_request_error", None, "invalid_json"),
            Reject::ModelNotString(_) => ("invalid_request_error", Some("model"), "invalid_type"),
            Reject::Framing(_) => ("invalid_request_error", None, "invalid_request"),
            Reject::HeadersTooLarge { .. } => ("invalid_request_error", None, "headers_too_large"),
            Reject::BodyTooLarge(_) => ("invalid_request_error", None, "request_too_large"),
            Reject::BadOverride => (
                "invalid_request_error",
                Some("x-rollgate-variant"),
                "bad_override",
            ),
            Reject::NoEndpoint(_) => ("server_error", None, "service_unavailable"),
            Reject::Upstream(_) => ("server_error", None, "upstream_unavailable"),
            Reject::UpstreamTimeout(_) => ("server_error", None, "upstream_timeout"),
        }
    }

    /// The OpenAI-shaped error response.
    pub(crate) fn response(&self) -> Response<ResponseBody> {
        error_response(self.status(), Bytes::from(self.json()))
    }

    /// The OpenAI-shaped error body.
    pub(crate) fn json(&self) -> String {
        let (kind, param, code) = self.kind();
        serde_json::json!({
            "error": { "message": self.to_string(), "type": kind, "param": param, "code": code }
        })
        .to_string()
    }
}

/// A body the scanner refused, when the request has no model header to route by.
impl From<ScanError> for Reject {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::ModelNotString(_) => Reject::ModelNotString(e),
            _ => Reject::Malformed(e.to_string()),
        }
    }
}

pub(crate) fn error_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
