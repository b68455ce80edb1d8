//! PromQL gates: instant queries against a Prometheus HTTP API (`/api/v1/query`).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

/// Largest answer read: one aggregated value is a few hundred bytes.
const MAX_ANSWER: usize = 1 << 20;

/// Runs one instant query; `$model` in it is replaced by `model`. The answer must be a scalar
/// or a vector of exactly one series (aggregate in the query otherwise).
pub async fn query(
    client: &Client<HttpConnector, Empty<Bytes>>,
    base: &str,
    promql: &str,
    model: &str,
    timeout: Duration,
) -> Result<f64, String> {
    let q = promql.replace("$model", model);
    let url = format!(
        "{base}/api/v1/query?query={}",
        rollgate_config::encode_path_segment(&q)
    );
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let req = hyper::Request::get(uri)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("{base}: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{base}: reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{base}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        value(&body)
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("{base}: no answer within {timeout:?}"))?
}

/// The single value of a Prometheus query answer.
pub fn value(body: &[u8]) -> Result<f64, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "query failed: {}",
            v["error"].as_str().unwrap_or("unknown error")
        ));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) => return Err("the query returned no series".into()),
            Some(many) => {
                return Err(format!(
                    "the query returned {} series; aggregate it to one",
                    many.len()
                ))
            }
            None => return Err("malformed vector result".into()),
        },
        other => return Err(format!("unsupported result type {other:?}")),
    };
    let text = sample
        .get(1)
        .and_then(Value::as_str)
        .ok_or("malformed sample")?;
    let x: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if x.is_nan() {
        return Err("the query returned NaN".into());
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_or_refused_with_a_reason() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(value(vector), Ok(0.25));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(value(scalar), Ok(3.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(value(empty).is_err_and(|e| e.contains("no series")));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#;
        assert!(value(two).is_err_and(|e| e.contains("aggregate")));
        let error = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(value(error).is_err_and(|e| e.contains("parse error")));
        assert!(value(b"<html>").is_err());
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            rollgate_config::encode_path_segment(r#"sum(rate(x{m="a b"}[1m]))"#),
            "sum%28rate%28x%7Bm%3D%22a%20b%22%7D%5B1m%5D%29%29"
        );
    }
}
