//! Table tests of the scorer, reassembly and window stats; live pairs from two simulators in
//! `tests/live.rs`.

use serde_json::json;

use super::*;

mod live;

const CHAT: &str = "/v1/chat/completions";

fn ok(body: impl Into<Bytes>) -> Answer {
    Answer {
        status: 200,
        body: body.into(),
        ..Answer::default()
    }
}

fn chat(text: &str) -> Answer {
    ok(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    })
    .to_string())
}

fn tool_call(name: &str, args: &str) -> Answer {
    let call =
        json!({"id": "c1", "type": "function", "function": {"name": name, "arguments": args}});
    ok(json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}}]}).to_string())
}

/// An SSE body of chat deltas, one event each, then a finish event and `[DONE]`.
fn chat_sse(pieces: &[&str]) -> String {
    let mut out = String::new();
    for p in pieces {
        let chunk =
            json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    out + "data: [DONE]\n\n"
}

fn embeddings(vectors: &[&[f32]]) -> Answer {
    let data: Vec<_> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    ok(json!({"object": "list", "data": data}).to_string())
}

fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i)) as usize & 63]
            } else {
                b'='
            };
            out.push(char::from(c));
        }
    }
    out
}

const ANSWER: &str =
    "the model answer is a simulated token stream of words that stays stable for each prompt";

#[test]
fn text_pairs() {
    let reworded = ANSWER.replace("stable", "steady");
    let other = "quick brown fox jumps over lazy dog river mountain cloud light north south east west green";
    // (case, stable, candidate, exact, normalized, score range)
    let table = [
        ("identical", ANSWER, ANSWER, true, true, (1.0, 1.0)),
        (
            "whitespace and case",
            "Paris is  the capital.",
            " paris IS the\n capital. ",
            false,
            true,
            (1.0, 1.0),
        ),
        (
            "one word of sixteen",
            ANSWER,
            reworded.as_str(),
            false,
            false,
            (0.8, 0.95),
        ),
        ("different text", ANSWER, other, false, false, (0.0, 0.3)),
        (
            "half the answer",
            ANSWER,
            "the model answer is a simulated token stream",
            false,
            false,
            (0.4, 0.6),
        ),
        ("both empty", "", "", true, true, (1.0, 1.0)),
    ];
    for (case, a, b, exact, normalized, (lo, hi)) in table {
        let s = score(CHAT, false, &chat(a), &chat(b));
        assert_eq!(s.kind, Kind::Chat, "{case}");
        assert_eq!(
            (s.exact, s.normalized),
            (exact, normalized),
            "{case}: {s:?}"
        );
        assert!(
            s.score >= lo && s.score <= hi,
            "{case}: {} not in {lo}..={hi}",
            s.score
        );
        assert!(
            s.comparable && s.status_match && s.json_shape.is_none(),
            "{case}: {s:?}"
        );
    }
}

#[test]
fn length_ratio_counts_tokens() {
    let s = score(CHAT, false, &chat("one two three four"), &chat("one two"));
    assert_eq!(s.length_ratio, 0.5);
    let s = score(CHAT, false, &chat("Paris."), &chat("Paris"));
    assert_eq!(s.length_ratio, 0.5, "punctuation is a token");
}

#[test]
fn json_shapes() {
    let obj = r#"{"city": "Paris", "population": 2100000}"#;
    let table = [
        (
            "same keys, other values",
            obj,
            r#"{"city":"Lyon","population":500000}"#,
            Some(true),
        ),
        (
            "fenced",
            obj,
            "```json\n{\"city\": \"Rome\", \"population\": 1}\n```",
            Some(true),
        ),
        ("key missing", obj, r#"{"city": "Paris"}"#, Some(false)),
        (
            "type changed",
            obj,
            r#"{"city": "Paris", "population": "2.1M"}"#,
            Some(false),
        ),
        ("prose instead", obj, "The city is Paris.", Some(false)),
        ("scalars are prose", "42", "43", None),
    ];
    for (case, a, b, want) in table {
        let s = score(CHAT, false, &chat(a), &chat(b));
        assert_eq!(s.json_shape, want, "{case}");
        if want == Some(false) {
            assert!(s.score <= JSON_SHAPE_CAP, "{case}: {}", s.score);
        }
    }
    let a = tool_call("get_weather", r#"{"city":"Paris"}"#);
    let same = tool_call("get_weather", r#"{"city":"Lyon"}"#);
    let renamed = tool_call("get_time", r#"{"city":"Paris"}"#);
    assert_eq!(score(CHAT, false, &a, &same).json_shape, Some(true));
    assert_eq!(score(CHAT, false, &a, &renamed).json_shape, Some(false));
    assert_eq!(
        score(CHAT, false, &a, &chat("sunny")).json_shape,
        Some(false)
    );
}

#[test]
fn statuses() {
    let err = |status| Answer {
        status,
        body: Bytes::from_static(br#"{"error":{"message":"x"}}"#),
        ..Answer::default()
    };
    // (stable, candidate, status_match, score)
    let table = [
        (chat("hi"), err(500), false, 0.0),
        (err(500), chat("hi"), false, 0.0),
        (err(429), err(429), true, 1.0),
        (err(400), err(404), true, 0.5),
        (err(500), err(503), true, 0.5),
        (err(400), err(503), false, 0.0),
    ];
    for (a, b, status_match, want) in table {
        let s = score(CHAT, false, &a, &b);
        let case = (a.status, b.status);
        assert_eq!(s.status_match, status_match, "{case:?}");
        assert_eq!(s.score, want, "{case:?}");
        assert!(s.comparable, "{case:?}");
    }
}

#[test]
fn cut_or_overflowed_answers_are_not_comparable() {
    let overflow = Answer {
        overflow: true,
        ..chat(ANSWER)
    };
    let failed = Answer {
        failed: true,
        ..chat(ANSWER)
    };
    for (a, b) in [(&overflow, &chat(ANSWER)), (&chat(ANSWER), &failed)] {
        let s = score(CHAT, false, a, b);
        assert!(!s.comparable, "{s:?}");
        assert!(!s.notes.is_empty());
    }
    let no_done = ok(chat_sse(&["Par", "is"]).replace("data: [DONE]\n\n", ""));
    let s = score(CHAT, true, &ok(chat_sse(&["Paris"])), &no_done);
    assert!(
        !s.comparable && s.exact,
        "text matched, stream unfinished: {s:?}"
    );
    let error_event = ok(format!(
        "{}data: {{\"error\":{{\"message\":\"engine died\"}}}}\n\ndata: [DONE]\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Par\"}}]}\n\n"
    ));
    let s = score(CHAT, true, &ok(chat_sse(&["Paris"])), &error_event);
    assert!(!s.comparable, "{s:?}");
    assert!(
        s.notes.iter().any(|n| n.contains("engine died")),
        "{:?}",
        s.notes
    );
}

#[test]
fn sse_reassembly_matches_whole_answer() {
    let streamed = ok(chat_sse(&["Pa", "ris is", "", " the cap", "ital", "."]));
    let s = score(CHAT, true, &chat("Paris is the capital."), &streamed);
    assert!(s.exact && s.comparable && s.score == 1.0, "{s:?}");
}

#[test]
fn sse_reassembler_takes_bytes_split_anywhere() {
    // Keep-alive comments, CRLF, `data:` without a space, a usage-only chunk, two choices out
    // of order, a multi-byte character, and `[DONE]`.
    let body = concat!(
        ": keep-alive\r\n\r\n",
        "event: message\r\ndata:{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"B\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"caf\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"é \\u00e9\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
        "data: {\"choices\":null,\"usage\":{\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    );
    let whole = Reassembled::from_sse(body.as_bytes());
    for step in [1, 2, 3, 7, 64] {
        let mut r = SseReassembler::default();
        for piece in body.as_bytes().chunks(step) {
            r.feed(piece);
        }
        assert_eq!(r.finish(), whole, "split every {step} bytes");
    }
    assert!(whole.complete(), "{whole:?}");
    assert_eq!(whole.answer_text(), "café é\nB");
    assert_eq!(whole.choices[0].finish_reason.as_deref(), Some("stop"));
    let doc = whole.to_json();
    assert_eq!(doc["choices"][0]["message"]["content"], "café é");
    assert_eq!(doc["choices"][1]["text"], "B");
}

#[test]
fn sse_tool_calls_and_broken_events() {
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"get_\",\"arguments\":\"{\\\"ci\"}}]}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"weather\",\"arguments\":\"ty\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: not json\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"cut\"}}]}\n",
    );
    let r = Reassembled::from_sse(body.as_bytes());
    let call = &r.choices[0].tool_calls[0];
    assert_eq!(
        (call.name.as_str(), call.arguments.as_str()),
        ("get_weather", r#"{"city":"Paris"}"#)
    );
    assert!(!r.done && !r.complete());
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert!(r.errors[1].contains("mid-event"));
    assert_eq!(r.choices[0].text, "", "the cut event does not count");
}

#[test]
fn completions_and_other_paths() {
    let completion = |text: &str| ok(json!({"choices": [{"index": 0, "text": text}]}).to_string());
    let s = score(
        "/v1/completions",
        false,
        &completion("A b"),
        &completion("a  B"),
    );
    assert_eq!(s.kind, Kind::Completion);
    assert!(s.normalized && !s.exact);
    let s = score(
        "/v1/rerank",
        false,
        &ok(r#"{"results":[1]}"#),
        &ok(r#"{"results":[2]}"#),
    );
    assert_eq!(
        (s.kind, s.exact, s.json_shape),
        (Kind::Other, false, Some(true))
    );
    let s = score(CHAT, false, &ok("not json"), &ok("not json"));
    assert!(s.exact && s.score == 1.0 && !s.notes.is_empty(), "{s:?}");
}

#[test]
fn embeddings_compare_by_cosine() {
    const EMB: &str = "/v1/embeddings";
    let a = [1.0f32, 0.0, 0.0];
    let b = [0.0f32, 1.0, 0.0];
    let near = [1.0f32, 0.01, 0.0];
    let s = score(EMB, false, &embeddings(&[&a]), &embeddings(&[&a]));
    assert_eq!(
        (s.kind, s.exact, s.normalized, s.score),
        (Kind::Embedding, true, true, 1.0)
    );
    let s = score(EMB, false, &embeddings(&[&a]), &embeddings(&[&b]));
    assert_eq!((s.cosine, s.score, s.exact), (Some(0.0), 0.0, false));
    let s = score(EMB, false, &embeddings(&[&a]), &embeddings(&[&near]));
    assert!(s.score > 0.99 && !s.normalized, "{s:?}");
    let opposite = embeddings(&[&[-1.0, 0.0, 0.0]]);
    assert_eq!(score(EMB, false, &embeddings(&[&a]), &opposite).score, 0.0);
    // Two inputs, one agreeing: the mean.
    let s = score(EMB, false, &embeddings(&[&a, &a]), &embeddings(&[&a, &b]));
    assert_eq!(s.cosine, Some(0.5));
    // base64 on one side, floats on the other.
    let v = [0.25f32, -0.5, 0.125, 1.0];
    let b64 = ok(json!({"data": [{"index": 0, "embedding": base64_f32(&v)}]}).to_string());
    let s = score(EMB, false, &embeddings(&[&v]), &b64);
    assert!(s.exact && s.normalized && s.score > 0.999_999, "{s:?}");
    let s = score(EMB, false, &embeddings(&[&v]), &embeddings(&[&a]));
    assert_eq!(s.score, 0.0);
    assert!(s.notes[0].contains("4 vs 3 dimensions"), "{:?}", s.notes);
}

#[test]
fn similarity_is_bounded_to_a_prefix() {
    let long = "word ".repeat(200_000);
    let longer = format!("{long} tail");
    let s = score(CHAT, false, &chat(&long), &chat(&longer));
    assert!(!s.normalized && s.score > 0.99, "{s:?}");
    assert_eq!(bounded("aé").len(), 3);
    assert_eq!(
        bounded(&"é".repeat(MAX_SIMILARITY_BYTES)).len(),
        MAX_SIMILARITY_BYTES
    );
}

/// The scorer's text functions as they were written first (a char at a time, a `HashMap` keyed
/// by the strings): the byte-wise and sorted versions must give the same numbers.
mod reference {
    use std::collections::HashMap;

    pub(super) fn normalize(text: &str) -> String {
        let mut out = String::new();
        for word in text.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
        out
    }

    pub(super) fn tokens(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            rest = rest.trim_start();
            let Some(first) = rest.chars().next() else {
                return out;
            };
            let end = if first.is_alphanumeric() {
                rest.find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(rest.len())
            } else {
                first.len_utf8()
            };
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }

    pub(super) fn similarity(a: &str, b: &str) -> f64 {
        let mut counts: HashMap<(&str, &str), (u32, u32)> = HashMap::new();
        for (text, first) in [(a, true), (b, false)] {
            let mut prev = None;
            for t in tokens(text) {
                for key in [Some((t, "")), prev.map(|p| (p, t))].into_iter().flatten() {
                    let c = counts.entry(key).or_default();
                    if first {
                        c.0 += 1;
                    } else {
                        c.1 += 1;
                    }
                }
                prev = Some(t);
            }
        }
        let (min, max) = counts.values().fold((0u64, 0u64), |(min, max), (x, y)| {
            (min + u64::from(*x.min(y)), max + u64::from(*x.max(y)))
        });
        if max == 0 {
            1.0
        } else {
            min as f64 / max as f64
        }
    }
}

fn sim(a: &str, b: &str) -> f64 {
    similarity(Grams::of(a), Grams::of(b))
}

#[test]
fn text_functions_match_the_reference() {
    let texts = [
        "",
        "ok",
        "OK",
        "  The capital of France is Paris.\n\nParis has been the capital since 987.",
        "Paris is the capital of France. It has been the capital since 987!",
        "the the the cat cat",
        "cat the the the cat",
        "Café CRÈME, naïve façade; ΣΊΣΥΦΟΣ ÉTÉ x2y3 über-cool",
        "café crème naïve façade",
        "日本語のテキスト、句読点。 and ascii٣٤ digits ①②",
        "a\u{a0}b\u{2003}c\td\re",
        "{\"a\": [1, 2.5, -3], \"b\": null}",
        "x\u{0}y \u{1F600}\u{1F600} emoji🙂ok",
        "İstanbul ǅemal ß ẞ",
    ];
    for a in texts {
        let n = normalize(a);
        assert_eq!(n, reference::normalize(a), "normalize {a:?}");
        assert_eq!(
            tokens(&n).collect::<Vec<_>>(),
            reference::tokens(&n),
            "tokens {n:?}"
        );
        assert_eq!(
            tokens(a).collect::<Vec<_>>(),
            reference::tokens(a),
            "tokens {a:?}"
        );
        for b in texts {
            let (na, nb) = (normalize(a), normalize(b));
            let (got, want) = (sim(&na, &nb), reference::similarity(&na, &nb));
            assert!((got - want).abs() < 1e-12, "{a:?} / {b:?}: {got} vs {want}");
        }
    }
    // Order matters to the bigrams, and repeats to the multiset.
    assert!(sim("a b c", "c b a") < 1.0);
    assert!(sim("a a b", "a b b") < 1.0);
    assert_eq!(sim("a b a b", "a b a b"), 1.0);
    // The token count, from the keys or (past the prefix) counted.
    assert_eq!(Grams::of("").tokens, 0);
    assert_eq!(Grams::of("a").tokens, 1);
    assert_eq!(Grams::of("a, b!").tokens, 4);
    let long = "word ".repeat(MAX_SIMILARITY_BYTES);
    assert_eq!(Grams::of(long.trim_end()).tokens, MAX_SIMILARITY_BYTES);
}

#[test]
fn stats_over_a_window() {
    let pair = |score: f64, comparable: bool| PairScore {
        kind: Kind::Chat,
        exact: false,
        normalized: false,
        json_shape: None,
        length_ratio: 1.0,
        cosine: None,
        status_match: score > 0.0,
        score,
        comparable,
        notes: Vec::new(),
    };
    let mut stats = ScoreStats::default();
    assert_eq!(stats.gate_input(), None, "no data is not a pass");
    for (s, c) in [
        (1.0, true),
        (1.0, true),
        (0.85, true),
        (0.0, true),
        (0.1, false),
        (f64::NAN, true),
    ] {
        stats.record(&pair(s, c));
    }
    assert_eq!((stats.count(), stats.comparable()), (6, 5));
    assert!((stats.mean().unwrap() - 0.57).abs() < 1e-9);
    assert_eq!(
        stats.gate_input(),
        Some(GateInput {
            value: 0.6,
            samples: 5
        })
    );
    assert_eq!(stats.status_mismatches(), 2);
    let hist: Vec<(f64, u64)> = stats.histogram().collect();
    assert_eq!(hist.first(), Some(&(0.1, 2)));
    assert_eq!(hist.iter().find(|(b, _)| *b == 0.85), Some(&(0.85, 3)));
    assert_eq!(hist.last(), Some(&(1.0, 5)));
    let mut merged = ScoreStats::new(0.9);
    merged.merge(&stats);
    assert_eq!(merged.threshold(), 0.9);
    assert_eq!(merged.comparable(), 5);
    assert_eq!(ScoreStats::new(7.0).threshold(), 1.0);
    assert_eq!(
        ScoreStats::new(f64::NAN).threshold(),
        DEFAULT_PAIR_THRESHOLD
    );
}

/// Answers are read with typed fields and a `Value` only as the fallback; whatever the JSON, both
/// ways must give the same reassembled answer (or the same error), whole or as a stream event.
#[test]
fn typed_and_value_reads_agree() {
    use super::reassemble::SseReassembler;
    let bodies = [
        r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","refusal":null,"tool_calls":[],"reasoning_content":null},"logprobs":null,"finish_reason":"stop","stop_reason":null}],"usage":{"prompt_tokens":9,"total_tokens":11,"completion_tokens":2,"prompt_tokens_details":null},"prompt_logprobs":null}"#,
        r#"{"object":"text_completion","choices":[{"index":1,"text":"b"},{"index":0,"text":"a","finish_reason":"length"}]}"#,
        r#"{"choices":[{"message":{"content":[{"type":"text","text":"x"},{"type":"image_url"},{"text":"y"}]}}]}"#,
        r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"index":5,"function":{"name":"g"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"he"}},{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        r#"{"choices":[{"index":0,"delta":{"role":"assistant"},"message":{"content":"m"},"text":"t"}]}"#,
        r#"{"error":null}"#,
        r#"{"error":{"message":"overloaded","type":"server_error"},"choices":[{"text":"x"}]}"#,
        r#"{"error":"plain"}"#,
        r#"{"choices":null}"#,
        r#"{"choices":{}}"#,
        r#"{"choices":[1,"x",null,{"text":"ok"}]}"#,
        r#"{"choices":[[0,"positional"]]}"#,
        r#"[{"choices":[{"text":"in an array"}]}]"#,
        r#"[null]"#,
        r#"[]"#,
        r#""a string""#,
        "5",
        "null",
        r#"{"choices":[{"text":"first"}],"choices":[{"text":"second"}]}"#,
        r#"{"choices":[{"text":"a","text":"b"}]}"#,
        r#"{"choices":[{"index":1.5,"text":"float"},{"index":-1,"text":"neg"},{"index":"2","text":"str"},{"index":null,"text":"null"},{"index":3,"text":"three"}]}"#,
        r#"{"choices":[{"text":5,"finish_reason":7}]}"#,
        r#"{"choices":[{"text":null,"finish_reason":null,"message":null,"delta":null}]}"#,
        r#"{"choices":[{"text":"te\"xt\u00e9\n"}]}"#,
        r#"{"choices":[{"message":{"content":"\ud83d\ude00 caf\u00e9"}}]}"#,
        "{",
        "",
        "nope",
        r#"{"choices":[{"text":"x"}]} trailing"#,
    ];
    // A choice's `message` (whole bodies) or `delta` (stream chunks), each form tried as both.
    let messages = [
        r#"{"role":"assistant","content":"ok"}"#,
        r#"{"content":"caf\u00e9 \"q\"\n"}"#,
        r#"{"content":5}"#,
        r#"{"content":{"text":"o"}}"#,
        r#"{"content":true}"#,
        r#"{"content":[1,"s",null,{"text":"a"},{"text":null},{}]}"#,
        r#"{"content":[{"text":5}]}"#,
        r#"{"content":[{"text":"a","text":"b"}]}"#,
        r#"{"content":"a","content":"b"}"#,
        r#""flat""#,
        r#"["a"]"#,
        "null",
        "7",
        r#"{"tool_calls":null}"#,
        r#"{"tool_calls":{"0":{}}}"#,
        r#"{"tool_calls":[1,{"function":{"name":"f"}}]}"#,
        r#"{"tool_calls":[{},{"function":null},{"function":"f"},{"function":[]}]}"#,
        r#"{"tool_calls":[{"function":{"name":5}}]}"#,
        r#"{"tool_calls":[{"index":1.5,"function":{"name":"f"}},{"index":null,"function":{"arguments":"{}"}}]}"#,
        r#"{"tool_calls":[{"index":2,"function":{"name":"f","arguments":"{\"a\""}},{"index":2,"function":{"arguments":":1}"}}]}"#,
        r#"{"tool_calls":[{"index":0,"index":1}]}"#,
        r#"{"content":"x","tool_calls":[{"function":{"name":"g","name":"h"}}]}"#,
        r#"{"content":[{"type":"text","text":"a"},{"text":null},{"type":"image_url"}]}"#,
        r#"{"tool_calls":[{},{"function":null},{"function":{}},{"index":0,"function":{"name":"f"}}]}"#,
    ];
    // The forms engines send take the typed path (the fallback would agree by construction).
    for (i, m) in messages.iter().enumerate() {
        let body = format!(r#"{{"choices":[{{"message":{m}}}]}}"#);
        let expect = [0, 1, 11, 13, 19, 22, 23].contains(&i);
        assert_eq!(
            super::reassemble::reads_typed(body.as_bytes()),
            expect,
            "{body}"
        );
    }
    let mut generated = Vec::new();
    for m in messages {
        for key in ["message", "delta"] {
            generated.push(format!(r#"{{"choices":[{{"index":0,"{key}":{m}}}]}}"#));
        }
    }
    for b in bodies
        .iter()
        .copied()
        .chain(generated.iter().map(String::as_str))
    {
        let typed = Reassembled::from_json_bytes(b.as_bytes()).map_err(|e| e.to_string());
        let value = serde_json::from_slice::<serde_json::Value>(b.as_bytes())
            .map(|v| Reassembled::from_json(&v))
            .map_err(|e| e.to_string());
        assert_eq!(typed, value, "whole body {b}");

        let mut fed = SseReassembler::default();
        fed.feed(format!("data: {b}\n\n").as_bytes());
        let mut reference = SseReassembler::default();
        reference.absorb_value(b.as_bytes());
        assert_eq!(fed.finish(), reference.finish(), "stream event {b}");
    }
}

#[test]
fn tool_calls_of_one_shape_score_the_share_of_arguments_that_agree() {
    let stable = tool_call(
        "get_weather",
        r#"{"city":"Paris","days":3,"units":"metric"}"#,
    );
    // (candidate's arguments, score)
    let table = [
        // Another engine's key order and spacing, `3.0` for `3`, other case: the same call.
        (
            r#"{ "units": "Metric", "days": 3.0, "city": "paris" }"#,
            1.0,
        ),
        // One value of three is wrong.
        (r#"{"city":"Lyon","days":3,"units":"metric"}"#, 2.0 / 3.0),
        // Every value wrong, however alike the JSON text.
        (r#"{"city":"Lyon","days":5,"units":"imperial"}"#, 0.0),
    ];
    for (args, want) in table {
        let s = score(CHAT, false, &stable, &tool_call("get_weather", args));
        assert_eq!(s.json_shape, Some(true), "{args}");
        assert!((s.score - want).abs() < 1e-9, "{args}: {}", s.score);
    }
    // Nested values count leaf by leaf; a longer list is a disagreement on the extra items.
    let stable = tool_call("plan", r#"{"stops":[{"city":"Paris"},{"city":"Rome"}]}"#);
    let longer = tool_call(
        "plan",
        r#"{"stops":[{"city":"Paris"},{"city":"Rome"},{"city":"Oslo"}]}"#,
    );
    let s = score(CHAT, false, &stable, &longer);
    assert!((s.score - 2.0 / 3.0).abs() < 1e-9, "{}", s.score);
    // Another function stays capped by its shape.
    let other = tool_call("get_time", r#"{"city":"Paris","days":3,"units":"metric"}"#);
    let s = score(
        CHAT,
        false,
        &tool_call(
            "get_weather",
            r#"{"city":"Paris","days":3,"units":"metric"}"#,
        ),
        &other,
    );
    assert!(s.score <= JSON_SHAPE_CAP, "{}", s.score);
}
