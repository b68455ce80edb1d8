//! Criterion benchmarks of every per-request hot path of the data plane: model resolution (JSON
//! body prefix and routing header), cohort hash and split decision, endpoint choice, SSE event
//! parsing and observation recording, and the HTTP/1.1 fast path's head parsing and rewriting
//! and chunked decoding, a sampled request's mirror admission; plus the config validation a
//! reload runs, the metrics encoding a scrape runs and the scoring of a shadow pair.
//!
//! `cargo bench -p rollgate-benches -- --quick` for a fast pass; see docs/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::registry::Registry;
use rollgate_control::scoring::{self, Answer};
use rollgate_proxy::bench_api::{self, Endpoints, Histogram};
use rollgate_proxy::h1::parse::ChunkedDecoder;
use rollgate_proxy::scan::JsonPrefixScanner;
use rollgate_proxy::sse::SseObserver;
use rollgate_proxy::{cohort_of, ProxyHandle};

const EXAMPLE: &str = include_str!("../../deploy/examples/rollgate.yaml");
const PREFIX_LIMIT: usize = 64 << 10;

/// A typical small chat request, `model` first.
fn chat_body(model_last: bool, history: usize) -> Vec<u8> {
    let messages: Vec<String> = (0..history)
        .map(|i| {
            format!(
                r#"{{"role":"{}","content":"message {i}: the quick brown fox jumps over the lazy dog \u00e9 \"quoted\""}}"#,
                if i % 2 == 0 { "user" } else { "assistant" }
            )
        })
        .collect();
    let messages = messages.join(",");
    if model_last {
        format!(
            r#"{{"messages":[{messages}],"max_tokens":64,"stream":true,"user":"user-4711","model":"chat-small"}}"#
        )
    } else {
        format!(
            r#"{{"model":"chat-small","user":"user-4711","messages":[{messages}],"max_tokens":64,"stream":true}}"#
        )
    }
    .into_bytes()
}

/// `len` bytes of JSON-string-safe prose, one paragraph break (`\\n`) per ~500 bytes; with
/// `utf8`, one non-ASCII word (`naïve`, `café`) per sentence.
fn prose(len: usize, utf8: bool) -> String {
    let sentence = if utf8 {
        "The naïve café owner said the delivery arrives at nine, before the market opens. "
    } else {
        "The quick brown fox jumps over the lazy dog while the market opens at nine. "
    };
    let mut s = String::with_capacity(len + 100);
    while s.len() < len {
        s.push_str(sentence);
        if s.len() % 500 < sentence.len() {
            s.push_str("\\n\\n");
        }
    }
    s
}

/// A config with `n` models (one stable endpoint, a candidate at 10 %, header cohort).
fn config_yaml(n: usize) -> String {
    let mut y =
        String::from("listen: 127.0.0.1:0\nworkers: 1\nadmin: { listen: 127.0.0.1:0 }\nmodels:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - name: model-{i}\n    stable: {{ endpoints: [\"http://127.0.0.1:{}\"] }}\n    candidate: {{ endpoints: [\"http://127.0.0.1:{}\"] }}\n    weight: 10%\n    cohort: {{ header: x-user-id }}\n",
            21_000 + 2 * i,
            21_001 + 2 * i
        ));
    }
    y
}

fn handle(yaml: &str) -> (ProxyHandle, Registry) {
    let cfg = rollgate_config::parse(yaml).expect("valid config");
    let mut registry = Registry::default();
    let handle = ProxyHandle::new(cfg, "bench", &mut registry);
    (handle, registry)
}

fn model_resolution(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve");
    for (name, body) in [
        ("body_model_first_300B", chat_body(false, 2)),
        ("body_model_last_4KiB", chat_body(true, 36)),
        // What `rollgate loadtest` sends (serde_json sorts keys): `model` after the messages,
        // as in many hand-built bodies (the openai client writes it first).
        (
            "body_model_last_72B",
            br#"{"max_tokens":1,"messages":[{"content":"hi","role":"user"}],"model":"m"}"#.to_vec(),
        ),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sc = JsonPrefixScanner::new(None, PREFIX_LIMIT);
                let _ = black_box(sc.feed(black_box(&body)));
                black_box(sc.model().map(str::len))
            })
        });
    }
    let body = chat_body(false, 2);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("body_model_and_cohort_field_300B", |b| {
        b.iter(|| {
            let mut sc = JsonPrefixScanner::new(Some("user"), PREFIX_LIMIT);
            let _ = black_box(sc.feed(black_box(&body)));
            black_box((sc.model().map(str::len), sc.field().map(str::len)))
        })
    });
    let body = chat_body(true, 36);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("body_model_last_4KiB_in_1460B_segments", |b| {
        b.iter(|| {
            let mut sc = JsonPrefixScanner::new(None, PREFIX_LIMIT);
            for chunk in body.chunks(1460) {
                let _ = black_box(sc.feed(black_box(chunk)));
            }
            black_box(sc.model().map(str::len))
        })
    });
    // `messages` before `model` (JSON leaves key order to the client; many hand-written ones
    // write it so) with a long retrieved context: the scanner reads the whole prompt first.
    for (name, text) in [
        ("body_model_last_32KiB_prose", prose(32 << 10, false)),
        ("body_model_last_32KiB_prose_utf8", prose(32 << 10, true)),
    ] {
        let body = format!(
            r#"{{"messages":[{{"role":"system","content":"{text}"}},{{"role":"user","content":"What does the context say?"}}],"model":"chat-small","stream":true}}"#
        );
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sc = JsonPrefixScanner::new(None, PREFIX_LIMIT);
                let _ = black_box(sc.feed(black_box(body.as_bytes())));
                black_box(sc.model().map(str::len))
            })
        });
    }
    g.throughput(Throughput::Elements(1));

    let (h, _registry) = handle(&config_yaml(10));
    let snap = h.snapshot();
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "gateway.example:8080"),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
        ("authorization", "Bearer sk-0123456789abcdef"),
        ("x-user-id", "user-4711"),
        ("x-gateway-model-name", "model-7"),
    ] {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    g.bench_function("routing_header_10_models", |b| {
        b.iter(|| black_box(bench_api::header_model(&snap, black_box(&headers)).map(str::len)))
    });
    g.finish();
}

fn split(c: &mut Criterion) {
    let mut g = c.benchmark_group("split");
    g.bench_function("cohort_hash_16B_key", |b| {
        b.iter(|| black_box(cohort_of(black_box(b"user-4711-abcdef"))))
    });
    let (h, _registry) = handle(&config_yaml(10));
    let snap = h.snapshot();
    g.bench_function("decision_keyed", |b| {
        b.iter(|| {
            black_box(bench_api::split(
                &snap,
                black_box("model-3"),
                Some(b"user-4711"),
            ))
        })
    });
    g.bench_function("decision_random_cohort", |b| {
        b.iter(|| black_box(bench_api::split(&snap, black_box("model-3"), None)))
    });
    g.finish();
}

fn endpoint(c: &mut Criterion) {
    let mut g = c.benchmark_group("endpoint");
    let one = Endpoints::new(1, None);
    g.bench_function("single", |b| b.iter(|| black_box(one.pick(None))));
    for n in [4, 16] {
        let p2c = Endpoints::new(n, None);
        g.bench_function(format!("p2c_{n}"), |b| b.iter(|| black_box(p2c.pick(None))));
        let ring = Endpoints::new(n, Some(1.25));
        let key = 0x1234_5678_9abc_def0u64.to_le_bytes();
        g.bench_function(format!("ketama_affinity_{n}"), |b| {
            b.iter(|| black_box(ring.pick(Some(black_box(&key)))))
        });
    }
    g.finish();
}

fn config(c: &mut Criterion) {
    let mut g = c.benchmark_group("config");
    g.bench_function("parse_validate_example", |b| {
        b.iter(|| black_box(rollgate_config::parse(black_box(EXAMPLE)).is_ok()))
    });
    let ten = config_yaml(10);
    g.bench_function("parse_validate_10_models", |b| {
        b.iter(|| black_box(rollgate_config::parse(black_box(&ten)).is_ok()))
    });
    g.finish();
}

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let (h, registry) = handle(&config_yaml(10));
    let snap = h.snapshot();
    for i in 0..10 {
        for ms in [1, 4, 20, 90, 400] {
            bench_api::record(&snap, &format!("model-{i}"), Duration::from_millis(ms));
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("encode_text_10_models", |b| {
        b.iter_batched_ref(
            || String::with_capacity(out.len()),
            |buf| prometheus_client::encoding::text::encode(buf, &registry).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(10));
    g.bench_function("observe_10_models", |b| {
        b.iter(|| black_box(h.observe().len()))
    });
    g.finish();
}

fn sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    let event = |i: usize| {
        format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"chat-small\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"
        )
    };
    let events: Vec<Vec<u8>> = (0..16)
        .map(|i| event(i).into_bytes())
        .chain([b"data: [DONE]\n\n".to_vec()])
        .collect();
    let whole: Vec<u8> = events.concat();
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("stream_17_events_one_chunk_per_event", |b| {
        b.iter(|| {
            let mut o = SseObserver::new();
            for e in &events {
                black_box(o.feed(black_box(e)));
            }
            black_box((o.events(), o.done()))
        })
    });
    g.bench_function("stream_17_events_one_chunk", |b| {
        b.iter(|| {
            let mut o = SseObserver::new();
            black_box(o.feed(black_box(&whole)));
            black_box((o.events(), o.done()))
        })
    });
    g.finish();
}

fn observe(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe");
    let hist = Histogram::default();
    g.bench_function("histogram_observe", |b| {
        b.iter(|| hist.observe(black_box(Duration::from_micros(1_800))))
    });
    let (h, _registry) = handle(&config_yaml(1));
    let snap = h.snapshot();
    g.bench_function("record_request", |b| {
        b.iter(|| {
            bench_api::record(
                &snap,
                black_box("model-0"),
                black_box(Duration::from_micros(1_800)),
            )
        })
    });
    g.finish();
}

fn h1(c: &mut Criterion) {
    let mut g = c.benchmark_group("h1");
    let (h, _registry) = handle(&config_yaml(10));
    let snap = h.snapshot();
    // The head the `openai` Python client (3.57, httpx) sends, as captured, with a cohort header.
    let request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway.example:8080\r\n\
Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nauthorization: Bearer sk-0123456789abcdef\r\n\
accept: application/json\r\ncontent-type: application/json\r\nuser-agent: OpenAI/Python 3.57.0\r\n\
x-stainless-lang: python\r\nx-stainless-package-version: 3.57.0\r\nx-stainless-os: Linux\r\n\
x-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\nx-stainless-runtime-version: 3.11.7\r\n\
x-stainless-async: false\r\nx-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n\
x-user-id: user-4711\r\nContent-Length: 312\r\n\r\n";
    let mut out = Vec::with_capacity(1024);
    g.bench_function("request_head_openai_client_19_headers", |b| {
        b.iter(|| {
            black_box(bench_api::h1_request_head(
                &snap,
                black_box(request),
                &mut out,
            ))
        })
    });
    assert!(bench_api::h1_request_head(&snap, request, &mut out) > 0);
    // A vLLM (uvicorn) streaming answer head, and a non-streaming one.
    for (name, head) in [
        (
            "response_head_vllm_sse",
            &b"HTTP/1.1 200 OK\r\ndate: Thu, 26 Nov 2026 12:00:00 GMT\r\nserver: uvicorn\r\n\
content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        ),
        (
            "response_head_vllm_json",
            &b"HTTP/1.1 200 OK\r\ndate: Thu, 26 Nov 2026 12:00:00 GMT\r\nserver: uvicorn\r\n\
content-length: 512\r\ncontent-type: application/json\r\n\r\n"[..],
        ),
    ] {
        assert!(bench_api::h1_response_head(&snap, head, &mut out) > 0);
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(bench_api::h1_response_head(
                    &snap,
                    black_box(head),
                    &mut out,
                ))
            })
        });
    }
    // An SSE body of 17 events as uvicorn sends it: one chunk per event.
    let mut body = Vec::new();
    for i in 0..17 {
        let event = if i == 16 {
            "data: [DONE]\n\n".to_owned()
        } else {
            format!("data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n")
        };
        body.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let decode = |input: &[u8]| {
        let mut dec = ChunkedDecoder::new();
        let (mut at, mut data) = (0, 0);
        loop {
            let step = dec.step(&input[at..]).expect("valid chunked body");
            data += step.data.len();
            at += step.consumed;
            if step.done || at == input.len() {
                break data;
            }
        }
    };
    assert!(decode(&body) > 0);
    g.throughput(Throughput::Elements(17));
    g.bench_function("chunked_sse_17_events", |b| {
        b.iter(|| black_box(decode(black_box(&body))))
    });
    g.finish();
}

fn shadow(c: &mut Criterion) {
    let mut g = c.benchmark_group("shadow");
    let mut yaml = config_yaml(1);
    yaml.push_str("    shadow: { sample: 100% }\n");
    let (h, _registry) = handle(&yaml);
    let snap = h.snapshot();
    let now = tokio::time::Instant::now();
    // A free slot: taken and released, as a mirror that starts and ends.
    g.bench_function("admit_taken", |b| {
        b.iter(|| {
            assert_eq!(
                bench_api::shadow_admit(&snap, black_box("model-0"), now),
                Some(true)
            )
        })
    });
    // Every slot held (the default bound, 64), as against a slow shadow: what most sampled
    // requests do there (34 refusals per mirror against the comparison's 50 ms shadow).
    let held = bench_api::shadow_hold(&snap, "model-0", 64);
    assert_eq!(held.len(), 64);
    g.bench_function("admit_refused_full_bound", |b| {
        b.iter(|| {
            assert_eq!(
                bench_api::shadow_admit(&snap, black_box("model-0"), now),
                Some(false)
            )
        })
    });
    drop(held);
    // The decision before admission, for a draw that needs the saturation reading (99 % of a
    // 100 % sample under the default `saturated_sample`): the cached reading, and the kernel
    // read when it is due (every 2 ms; the clock advanced by hand so that each call reads).
    g.bench_function("sampled_cached_reading", |b| {
        let now = std::time::Instant::now();
        b.iter(|| bench_api::shadow_sampled(&snap, black_box("model-0"), now))
    });
    let mut clock = std::time::Instant::now();
    g.bench_function("sampled_fresh_reading", |b| {
        b.iter(|| {
            clock += std::time::Duration::from_millis(2);
            bench_api::shadow_sampled(&snap, black_box("model-0"), clock)
        })
    });
    g.finish();
}

fn scoring(c: &mut Criterion) {
    let mut g = c.benchmark_group("scoring");
    let answer = |body: &'static str| Answer {
        status: 200,
        body: Bytes::from_static(body.as_bytes()),
        overflow: false,
        failed: false,
    };
    // The comparison's upstream (nginx `return 200`) and `rollgate sim`'s one-token answer.
    let stable = answer(
        r#"{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#,
    );
    let sim = answer(
        r#"{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"message":{"content":"lazy","role":"assistant"}}],"created":1795788199,"id":"chatcmpl-910a2dec89025cc1","model":"m","object":"chat.completion","usage":{"completion_tokens":1,"prompt_tokens":4,"total_tokens":5}}"#,
    );
    g.bench_function("chat_pair_identical", |b| {
        b.iter(|| {
            let s = scoring::score("/v1/chat/completions", false, &stable, black_box(&stable));
            assert!(s.comparable && s.exact);
        })
    });
    g.bench_function("chat_pair_different", |b| {
        b.iter(|| {
            let s = scoring::score("/v1/chat/completions", false, &stable, black_box(&sim));
            assert!(s.comparable && !s.exact);
        })
    });
    // Two 40-token paraphrases, as two revisions of a real model answer: the word similarity
    // decides the score.
    let long = answer(
        r#"{"id":"chatcmpl-7","object":"chat.completion","created":1795788199,"model":"llama-3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"The capital of France is Paris. It is known for the Eiffel Tower, the Louvre museum, and its cafes along the Seine.\n\nParis has been the capital since the 10th century."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":40,"total_tokens":52}}"#,
    );
    let paraphrase = answer(
        r#"{"id":"chatcmpl-8","object":"chat.completion","created":1795788200,"model":"llama-3-8b","choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France. It is famous for the Eiffel Tower, the Louvre, and cafes by the Seine.\n\nIt has been the capital since the 10th century."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":38,"total_tokens":50}}"#,
    );
    g.bench_function("chat_pair_paraphrase", |b| {
        b.iter(|| {
            let s = scoring::score("/v1/chat/completions", false, &long, black_box(&paraphrase));
            assert!(s.comparable && !s.normalized && s.score > 0.5);
        })
    });
    // Two streamed 500-token answers as vLLM's OpenAI server sends them, one event per token;
    // one word in seven differs. The driver scores at most 5 ms of pairs per 100 ms batch, so
    // this time says how many streamed pairs a batch takes.
    let (a, b) = (vllm_stream(0), vllm_stream(7));
    // Throughput in events (both sides, `[DONE]` included), for the cost of one.
    let events = [&a, &b]
        .iter()
        .map(|x| {
            x.body
                .split(|&c| c == b'\n')
                .filter(|l| l.starts_with(b"data:"))
                .count()
        })
        .sum::<usize>();
    g.throughput(Throughput::Elements(events as u64));
    g.bench_function("stream_pair_500_events", |bench| {
        bench.iter(|| {
            let s = scoring::score("/v1/chat/completions", true, &a, black_box(&b));
            assert!(s.comparable && !s.normalized && s.score > 0.5);
        })
    });
    g.finish();
}

/// A streamed chat answer of 500 content chunks, as vLLM's OpenAI server writes them (pydantic's
/// compact JSON, `logprobs` and `finish_reason` always present), between the role chunk and the
/// finish chunk, then `[DONE]`. With `differ` > 0, every `differ`-th word is another one.
fn vllm_stream(differ: usize) -> Answer {
    let words: Vec<&str> =
        "the model answers with a long paragraph about Paris, which is known for its museums and"
            .split(' ')
            .collect();
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-5f2c8e0a9b7d4c1e8f3a6b2d9c0e1f47\",\"object\":\"chat.completion.chunk\",\"created\":1795788199,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut body = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for i in 0..500 {
        let word = if differ > 0 && i % differ == 3 {
            "cafes"
        } else {
            words[(i * 7 + i / 16) % words.len()]
        };
        // A paragraph break now and then, as an escape in the JSON string.
        let sep = if i % 100 == 99 { "\\n\\n" } else { " " };
        body.push_str(&chunk(&format!(r#"{{"content":"{sep}{word}"}}"#), "null"));
    }
    body.push_str(&chunk(r#"{"content":""}"#, r#""stop""#));
    body.push_str("data: [DONE]\n\n");
    Answer {
        status: 200,
        body: Bytes::from(body),
        overflow: false,
        failed: false,
    }
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = model_resolution, split, endpoint, config, metrics, sse, observe, h1, shadow, scoring
}
criterion_main!(hot_paths);
