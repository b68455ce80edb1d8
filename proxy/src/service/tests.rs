use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Uri, Version};

use super::*;

fn config(extra: &str) -> Config {
    rollgate_config::parse(&format!(
        "listen: 127.0.0.1:0\n{extra}models:\n  - name: m\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n"
    ))
    .expect("valid config")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn header_limits_count_names_and_values() {
    let cfg = config("limits: { max_header_bytes: 100, max_headers: 3 }\n");
    assert!(check_headers(&headers(&[("a", "b"), ("c", "d")]), &cfg).is_ok());
    let many = headers(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
    assert!(matches!(
        check_headers(&many, &cfg),
        Err(Reject::HeadersTooLarge {
            what: "headers",
            ..
        })
    ));
    let big = headers(&[("x", &"v".repeat(100))]);
    assert!(matches!(
        check_headers(&big, &cfg),
        Err(Reject::HeadersTooLarge { what: "bytes", .. })
    ));
}

#[test]
fn bodies_worth_scanning() {
    for (ct, scan) in [
        (None, true),
        (Some("application/json"), true),
        (Some("application/x-www-form-urlencoded"), true),
        (Some("multipart/form-data; boundary=x"), false),
        (Some("application/octet-stream"), false),
    ] {
        let h = ct.map_or_else(HeaderMap::new, |c| headers(&[("content-type", c)]));
        assert_eq!(may_be_json(&h), scan, "{ct:?}");
    }
}

#[test]
fn api_key_from_bearer_or_x_api_key() {
    assert_eq!(
        api_key(&headers(&[("authorization", "Bearer sk-1")])),
        Some(&b"sk-1"[..])
    );
    assert_eq!(api_key(&headers(&[("x-api-key", "k2")])), Some(&b"k2"[..]));
    assert_eq!(api_key(&HeaderMap::new()), None);
}

#[test]
fn upstream_requests_are_origin_form_http1_without_hop_by_hop_or_control_headers() {
    let req = Request::post("http://gw.example:8080/v1/chat/completions?x=1")
        .version(Version::HTTP_2)
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("te", "trailers")
        .header("keep-alive", "timeout=5")
        .header("x-rollgate-variant", "candidate")
        .header("x-rollgate-shadow", "1")
        .header("x-keep", "yes")
        .body(())
        .expect("request");
    let (mut parts, ()) = req.into_parts();
    prepare_upstream(&mut parts);
    assert_eq!(parts.uri, Uri::from_static("/v1/chat/completions?x=1"));
    assert_eq!(parts.version, Version::HTTP_11);
    for gone in [
        "connection",
        "x-drop-me",
        "te",
        "keep-alive",
        "x-rollgate-variant",
        "x-rollgate-shadow",
    ] {
        assert!(
            !parts.headers.contains_key(gone),
            "{gone} must not be forwarded"
        );
    }
    assert_eq!(parts.headers["x-keep"], "yes");
}

#[test]
fn content_length_parses_or_is_absent() {
    assert_eq!(
        content_length(&headers(&[("content-length", "42")])),
        Some(42)
    );
    assert_eq!(content_length(&headers(&[("content-length", "x")])), None);
    assert_eq!(content_length(&HeaderMap::new()), None);
}
