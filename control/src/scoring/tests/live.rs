//! Pairs from a stable and a candidate simulator answering the same requests, captured whole as
//! the data plane would capture them.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rollgate_loadtest::sim::{self, Faults, Ratio, Sim, SimArgs};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::scoring::{score, Answer, Kind, ScoreStats};

async fn start_sim(faults: Faults) -> Sim {
    let args = SimArgs {
        model: "chat-small".to_owned(),
        faults,
        ..SimArgs::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(args, listener).await.unwrap()
}

/// The mirrored requests: chat and completions, whole and streamed, and embeddings.
fn requests() -> Vec<(&'static str, bool, Value)> {
    let mut out = Vec::new();
    for prompt in ["capital of France?", "say hi", "count to three"] {
        let messages = json!([{"role": "user", "content": prompt}]);
        for stream in [false, true] {
            let chat = json!({"model": "chat-small", "messages": messages, "max_tokens": 24,
                "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }});
            out.push(("/v1/chat/completions", stream, chat));
            let completion = json!({"model": "chat-small", "prompt": prompt, "stream": stream});
            out.push(("/v1/completions", stream, completion));
        }
        let format = if prompt.len() % 2 == 0 {
            "float"
        } else {
            "base64"
        };
        let embed =
            json!({"model": "embed", "input": [prompt, "hello"], "encoding_format": format});
        out.push(("/v1/embeddings", false, embed));
    }
    out
}

/// One side of a pair: the whole answer, or as much as came before the body broke.
async fn capture(base: &str, path: &str, body: &Value) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut buf, mut failed) = (Vec::new(), false);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => buf.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    Answer {
        status,
        body: buf.into(),
        overflow: false,
        failed,
    }
}

async fn score_all(stable: &Sim, candidate: &Sim) -> (Vec<crate::scoring::PairScore>, ScoreStats) {
    let mut stats = ScoreStats::default();
    let mut scores = Vec::new();
    for (path, streamed, body) in requests() {
        let primary = capture(&stable.url(), path, &body).await;
        let shadow = capture(&candidate.url(), path, &body).await;
        let s = score(path, streamed, &primary, &shadow);
        stats.record(&s);
        scores.push(s);
    }
    (scores, stats)
}

#[tokio::test(start_paused = true)]
async fn same_model_scores_one() {
    let stable = start_sim(Faults::default()).await;
    let candidate = start_sim(Faults::default()).await;
    let (scores, stats) = score_all(&stable, &candidate).await;
    for s in &scores {
        assert!(s.comparable && s.exact && s.score == 1.0, "{s:?}");
    }
    assert!(scores
        .iter()
        .any(|s| s.kind == Kind::Embedding && s.cosine.is_some()));
    let gate = stats.gate_input().unwrap();
    assert_eq!((gate.value, gate.samples), (1.0, scores.len() as u64));
}

#[tokio::test(start_paused = true)]
async fn wrong_answers_score_low() {
    let stable = start_sim(Faults::default()).await;
    let wrong = Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    };
    let candidate = start_sim(wrong).await;
    let (scores, stats) = score_all(&stable, &candidate).await;
    for s in &scores {
        assert!(s.comparable && !s.exact && s.status_match, "{s:?}");
        match s.kind {
            // Random unit vectors in 384 dimensions are nearly orthogonal.
            Kind::Embedding => assert!(s.score < 0.3, "{s:?}"),
            _ => assert!(s.score < 0.5, "{s:?}"),
        }
    }
    assert_eq!(stats.gate_input().unwrap().value, 0.0);
    assert!(stats.mean().unwrap() < 0.5);
}

#[tokio::test(start_paused = true)]
async fn failing_candidate_disagrees_on_status() {
    let stable = start_sim(Faults::default()).await;
    let failing = Faults {
        error_rate: Ratio::ONE,
        ..Faults::default()
    };
    let candidate = start_sim(failing).await;
    let (scores, _) = score_all(&stable, &candidate).await;
    for s in &scores {
        assert!(s.comparable && !s.status_match && s.score == 0.0, "{s:?}");
    }
    // A cut stream is not comparable: partial text says nothing about correctness.
    candidate.set_faults(Faults {
        truncate_rate: Ratio::ONE,
        ..Faults::default()
    });
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    let primary = capture(&stable.url(), "/v1/chat/completions", &body).await;
    let shadow = capture(&candidate.url(), "/v1/chat/completions", &body).await;
    assert!(shadow.failed);
    let s = score("/v1/chat/completions", true, &primary, &shadow);
    assert!(!s.comparable, "{s:?}");
}
