//! Output tokens, TPOT, token throughput and goodput: a stream's usage chunk or its token events,
//! a whole answer's `usage` read from its tail, vLLM's TPOT per request, `--slo` parsed and
//! judged, and the report's token, goodput and TPOT rows.

use super::*;
use crate::load::{
    client::{Tail, USAGE_TAIL},
    slo::{Measured, Slo},
    sse::{usage, Usage},
};

/// A chat chunk as OpenAI writes it when usage was asked for: `"usage":null` on every chunk.
fn openai_chunk(choice: u32, content: &str) -> String {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":\
         {choice},\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}],\
         \"usage\":null}}\n\n"
    )
}

/// OpenAI's (and vLLM's) last chunk with `include_usage`: no choices, the whole usage.
const USAGE_CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\
    \"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21,\
    \"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":\
    {\"reasoning_tokens\":0}}}\n\n";

/// Feeds `stream` in chunks of `size` bytes, one read every 10 ms from 100 ms; returns the
/// sample, the stream's start and when it ended.
fn feed(stream: &str, size: usize) -> (Sample, Instant, Instant) {
    let t0 = Instant::now();
    let mut s = Sample {
        streamed: true,
        ..Sample::default()
    };
    let mut end = StreamEnd::default();
    let mut scanner = SseScanner::default();
    let mut at = t0 + Duration::from_millis(100);
    for chunk in stream.as_bytes().chunks(size) {
        scanner.feed(chunk, |e| end.on_event(e, at, &mut s));
        at += Duration::from_millis(10);
    }
    scanner.finish(|e| end.on_event(e, at, &mut s));
    assert_eq!(end.outcome(true), Ok(()), "{stream}");
    (s, t0, at)
}

#[test]
fn a_streams_output_tokens_come_from_its_usage_chunk_else_from_its_token_events() {
    // Three token events; the server says nine tokens (it sends several per event).
    let tokens: String = ["a", "b", "c"].map(|t| openai_chunk(0, t)).concat();
    let with_usage = format!("{tokens}{USAGE_CHUNK}data: [DONE]\n\n");
    for size in [1, 5, 64, with_usage.len()] {
        let (s, _, _) = feed(&with_usage, size);
        assert_eq!(s.token_events, 3, "chunks of {size}");
        assert_eq!(
            s.usage,
            Some(Usage {
                completion: 9,
                prompt: Some(12)
            })
        );
        assert_eq!(
            s.output_tokens(),
            Some(9),
            "usage wins over the event count"
        );
    }
    let (s, _, _) = feed(&format!("{tokens}data: [DONE]\n\n"), 64);
    assert_eq!(s.usage, None, "`\"usage\":null` is no usage");
    assert_eq!(s.output_tokens(), Some(3), "counted from the token events");
    // A stream of no token still has a count, 0; a whole answer without usage has none.
    let (s, _, _) = feed("data: [DONE]\n\n", 64);
    assert_eq!(s.output_tokens(), Some(0));
    assert_eq!(Sample::default().output_tokens(), None);
}

#[test]
fn usage_is_read_only_where_it_is_an_object_with_completion_tokens() {
    let cases: [(&[u8], Option<Usage>); 6] = [
        (
            br#"{"choices":[],"usage":{"completion_tokens":7,"prompt_tokens":3,"total_tokens":10}}"#,
            Some(Usage { completion: 7, prompt: Some(3) }),
        ),
        // vLLM's order, details objects before the key, spaces.
        (
            br#"{"usage": {"prompt_tokens_details": {"completion_tokens": 99}, "prompt_tokens" : 4, "total_tokens": 9, "completion_tokens": 5}}"#,
            Some(Usage { completion: 5, prompt: Some(4) }),
        ),
        (br#"{"choices":[],"usage":{"completion_tokens":2}}"#, Some(Usage { completion: 2, prompt: None })),
        (br#"{"choices":[],"usage":null}"#, None),
        // Embeddings: no output tokens.
        (br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#, None),
        (br#"{"text":"the \"usage\":{\"completion_tokens\":3}"}"#, None),
    ];
    for (data, want) in cases {
        assert_eq!(usage(data), want, "{}", String::from_utf8_lossy(data));
    }
    assert_eq!(
        classify(
            USAGE_CHUNK
                .trim_start_matches("data: ")
                .trim_end()
                .as_bytes()
        ),
        Event::Usage(Usage {
            completion: 9,
            prompt: Some(12)
        })
    );
    // A token event is a token, usage or not (vLLM's continuous usage puts it on every chunk;
    // its last usage-only chunk carries the total).
    assert_eq!(
        classify(
            br#"{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":{"completion_tokens":1}}"#
        ),
        Event::Token(0)
    );
}

#[test]
fn n_choices_count_every_token_and_tpot_is_per_choice() {
    // Three choices, four tokens each, one step every 10 ms (one read per step).
    let step = |i: usize| {
        (0..3)
            .map(|j| openai_chunk(j, ["w", "x", "y", "z"][i]))
            .collect::<String>()
    };
    let stream = format!("{}data: [DONE]\n\n", (0..4).map(step).collect::<String>());
    let (s, t0, _) = feed(&stream, step(0).len());
    assert_eq!((s.token_events, s.choices), (12, 3));
    assert_eq!(s.output_tokens(), Some(12));
    // The last token came at 130 ms: 30 ms over three tokens after the first of each choice.
    let last = t0 + Duration::from_millis(130);
    assert_eq!(s.tpot(last), Some(Duration::from_millis(10)));
    // The same with the usage chunk: 12 tokens over 3 choices.
    let with_usage = stream.replace(
        "data: [DONE]",
        "data: {\"choices\":[],\"usage\":{\"completion_tokens\":12}}\n\ndata: [DONE]",
    );
    let (s, t0, _) = feed(&with_usage, step(0).len());
    assert_eq!(s.usage.map(|u| u.completion), Some(12));
    assert_eq!(
        s.tpot(t0 + Duration::from_millis(130)),
        Some(Duration::from_millis(10))
    );
}

#[test]
fn tpot_is_the_time_after_the_first_token_over_the_tokens_after_it() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let sample = |tokens: u64| Sample {
        head: Some(ms(5)),
        first_token: Some(ms(100)),
        streamed: true,
        token_events: tokens,
        choices: 1,
        ..Sample::default()
    };
    // 16 tokens: the first at 100 ms, the end at 250 ms, so 15 more in 150 ms.
    assert_eq!(sample(16).tpot(ms(250)), Some(Duration::from_millis(10)));
    assert_eq!(sample(2).tpot(ms(250)), Some(Duration::from_millis(150)));
    assert_eq!(sample(1).tpot(ms(250)), None, "one token has no TPOT");
    let whole = Sample {
        head: Some(ms(5)),
        usage: Some(Usage {
            completion: 16,
            prompt: Some(4),
        }),
        ..Sample::default()
    };
    assert_eq!(whole.tpot(ms(250)), None, "no TTFT without a stream");

    let mut rec = Recorder::default();
    rec.record(t0, ms(250), &sample(16), &Slo::default());
    rec.record(t0, ms(250), &sample(1), &Slo::default());
    rec.record(t0, ms(250), &whole, &Slo::default());
    let failed = Sample {
        error: Some(ErrorKind::Cut),
        ..sample(16)
    };
    rec.record(t0, ms(250), &failed, &Slo::default());
    assert_eq!(rec.tpot.len(), 1, "only the stream of two or more tokens");
    assert!(rec.tpot.max().abs_diff(10_000) <= 10, "{}", rec.tpot.max());
    // 16 + 1 + 16 output tokens over the three successful requests; the prompt is known for
    // the one with usage only. The failed request's tokens stay out.
    assert_eq!(
        (
            rec.tokens.counted,
            rec.tokens.output,
            rec.tokens.prompted,
            rec.tokens.prompt
        ),
        (3, 33, 1, 4)
    );
    assert_eq!(
        rec.slo_met, 3,
        "without --slo every successful request is good"
    );
}

#[test]
fn a_whole_answers_usage_is_read_from_its_tail_in_any_framing() {
    let answer = |padding: usize| {
        format!(
            "{{\"id\":\"x\",\"choices\":[{{\"index\":0,\"message\":{{\"content\":\"{}\"}}}}],\
             \"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":22,\"total_tokens\":33}},\
             \"system_fingerprint\":\"fp\"}}",
            "w".repeat(padding)
        )
    };
    let want = Some(Usage {
        completion: 22,
        prompt: Some(11),
    });
    let mut tail = Tail::default();
    for padding in [0, 100, USAGE_TAIL, 10 * USAGE_TAIL] {
        let body = answer(padding);
        for size in [1, 7, 300, USAGE_TAIL - 1, USAGE_TAIL + 1, body.len()] {
            tail.reset();
            for frame in body.as_bytes().chunks(size) {
                tail.push(frame);
            }
            assert_eq!(
                tail.usage(),
                want,
                "{padding} bytes of content, frames of {size}"
            );
        }
    }
    // Usage further than the tail from the end is not found (and not guessed).
    tail.reset();
    tail.push(
        format!(
            "{{\"usage\":{{\"completion_tokens\":1}},\"x\":\"{}\"}}",
            "w".repeat(USAGE_TAIL)
        )
        .as_bytes(),
    );
    assert_eq!(tail.usage(), None);
}

#[test]
fn slo_flags_parse_every_metric_and_refuse_what_they_cannot_judge() {
    let slo: Slo = "ttft=200ms, tpot=50ms,total=2s,ttfb=1".parse().unwrap();
    assert_eq!(slo.ttft, Some(Duration::from_millis(200)));
    assert_eq!(slo.tpot, Some(Duration::from_millis(50)));
    assert_eq!(slo.total, Some(Duration::from_secs(2)));
    assert_eq!(slo.ttfb, Some(Duration::from_millis(1)));
    assert_eq!(
        slo.to_string(),
        "ttfb ≤ 1ms, ttft ≤ 200ms, tpot ≤ 50ms, total ≤ 2s"
    );
    let err = "ttft=fast,latency=2s,tpot,ttft=1s,total=3s,total=4s"
        .parse::<Slo>()
        .unwrap_err();
    for want in [
        "ttft: \"fast\" is not a duration",
        "unknown metric \"latency\" (use ttfb, ttft, tpot, total)",
        "\"tpot\": use METRIC=DURATION",
        "total is named twice",
    ] {
        assert!(err.contains(want), "{want:?} missing from {err}");
    }
    // On the command line: a clap error naming the flag.
    let err = Cli::try_parse_from(["loadtest", "http://127.0.0.1:1", "--slo", "p99=1s"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--slo") && err.contains("unknown metric \"p99\""),
        "{err}"
    );
    // TTFT and TPOT bounds need a stream to time.
    let err = Plan::try_from(&args(&["http://127.0.0.1:1", "--slo", "ttft=1s,tpot=1s"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--slo ttft: needs --stream"), "{err}");
    assert!(err.contains("--slo tpot: needs --stream"), "{err}");
    assert!(Plan::try_from(&args(&["http://127.0.0.1:1", "--slo", "total=1s"])).is_ok());
}

#[test]
fn a_good_request_meets_every_named_bound() {
    let ms = Duration::from_millis;
    let m = Measured {
        ttfb: Some(ms(10)),
        ttft: Some(ms(150)),
        tpot: Some(ms(40)),
        total: ms(1500),
    };
    let slo = |s: &str| s.parse::<Slo>().unwrap();
    let cases = [
        ("ttft=200ms,tpot=50ms,total=2s", m, true),
        ("ttft=150ms", m, true),
        ("ttft=149ms", m, false),
        ("tpot=39ms", m, false),
        ("total=1s", m, false),
        ("ttfb=9ms", m, false),
        // A stream without a token missed its TTFT; one of a single token has no TPOT and
        // meets any bound on it (vLLM counts it so).
        ("ttft=10s", Measured { ttft: None, ..m }, false),
        ("tpot=1ms", Measured { tpot: None, ..m }, true),
    ];
    for (bounds, m, want) in cases {
        assert_eq!(slo(bounds).met(&m), want, "{bounds} {m:?}");
    }
}

/// A recorder of `n` successful 16-token streams (usage with 8 prompt tokens): TTFT
/// `ttft_ms`, then one token every `tpot_ms`.
fn streams(n: u64, ttft_ms: u64, tpot_ms: u64, slo: &Slo) -> Recorder {
    let t0 = Instant::now();
    let mut rec = Recorder::default();
    for _ in 0..n {
        let first = t0 + Duration::from_millis(ttft_ms);
        let s = Sample {
            head: Some(t0 + Duration::from_millis(1)),
            first_token: Some(first),
            streamed: true,
            token_events: 16,
            choices: 1,
            usage: Some(Usage {
                completion: 16,
                prompt: Some(8),
            }),
            ..Sample::default()
        };
        rec.record(t0, first + Duration::from_millis(15 * tpot_ms), &s, slo);
    }
    rec
}

#[test]
fn the_report_gives_tpot_token_throughput_and_goodput_in_table_json_and_csv() {
    let flags = [
        "--compare",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "--rate",
        "100",
        "--stream",
        "--slo",
        "ttft=150ms,tpot=30ms",
    ];
    let plan = Plan::try_from(&args(&flags)).unwrap();
    let slo = plan.slo.unwrap();
    // A: 100 streams of TTFT 100 ms, TPOT 20 ms, all good. B: 60 of those and 40 of TPOT
    // 40 ms, which miss the TPOT bound. 10 s each.
    let a = streams(100, 100, 20, &slo);
    let mut b = streams(60, 100, 20, &slo);
    b.merge(&streams(40, 100, 40, &slo));
    let outcome = Outcome {
        recorders: [a, b],
        measured: [Duration::from_secs(10), Duration::from_secs(10)],
    };
    let report = Report::new(&plan, &outcome);
    let (ta, tb) = (&report.targets[0], &report.targets[1]);
    let tokens = ta.tokens.as_ref().unwrap();
    assert_eq!(
        (tokens.requests, tokens.output, tokens.prompt),
        (100, 1600, Some(800))
    );
    assert!(
        (tokens.output_per_s - 160.0).abs() < 1e-9,
        "{}",
        tokens.output_per_s
    );
    assert_eq!(tokens.total_per_s, Some(240.0));
    assert_eq!(tokens.mean_output, 16.0);
    let (ga, gb) = (ta.goodput.as_ref().unwrap(), tb.goodput.as_ref().unwrap());
    assert_eq!((ga.met, ga.per_s, ga.share), (100, 10.0, 1.0));
    assert_eq!((gb.met, gb.per_s, gb.share), (60, 6.0, 0.6));
    assert!(
        ta.latency_us.tpot.p50.abs_diff(20_000) <= 20,
        "{:?}",
        ta.latency_us.tpot
    );
    let cmp = report.compare.as_ref().unwrap();
    let added = cmp.added_us.tpot.as_ref().unwrap();
    assert!(added.p99.abs_diff(20_000) <= 40, "B's slow 40 %: {added:?}");
    assert_eq!(cmp.output_tokens_ratio, Some(1.0));

    let table = report.table();
    for want in [
        "  tokens/s 160.0 output, 240.0 total  (16.0 output tokens per request)\n",
        "  goodput 10.0/s  100 of 100 ok requests (100.0%) met ttft ≤ 150ms, tpot ≤ 30ms\n",
        "  goodput 6.0/s  60 of 100 ok requests (60.0%) met ttft ≤ 150ms, tpot ≤ 30ms\n",
        "  tpot     20.0",
        "  output tokens/s B/A 1.000\n",
    ] {
        assert!(table.contains(want), "{want:?} missing from\n{table}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["run"]["slo_us"],
        serde_json::json!({"ttft": 150_000, "tpot": 30_000})
    );
    assert_eq!(json["targets"][1]["goodput"]["met"], 60);
    assert_eq!(json["targets"][1]["goodput"]["share"], 0.6);
    assert_eq!(json["targets"][0]["tokens"]["output_per_s"], 160.0);
    assert_eq!(json["targets"][0]["tokens"]["total_per_s"], 240.0);
    assert_eq!(json["targets"][0]["latency_us"]["tpot"]["count"], 100);
    assert!(
        json["compare"]["added_us"]["tpot"]["p99"].is_i64(),
        "{json}"
    );
    let csv = report.csv();
    for want in [
        "A,http://127.0.0.1:1,tpot,p50,",
        "A,http://127.0.0.1:1,tokens,output_per_s,160.0\n",
        "A,http://127.0.0.1:1,tokens,total_per_s,240.0\n",
        "A,http://127.0.0.1:1,tokens,mean_output,16.0\n",
        "B,http://127.0.0.1:2,goodput,per_s,6.0\n",
        "B,http://127.0.0.1:2,goodput,share,0.6000\n",
        "B-A,,tpot,p99,",
    ] {
        assert!(csv.contains(want), "{want:?} missing from\n{csv}");
    }
}

#[test]
fn without_token_counts_or_slo_the_report_leaves_their_rows_out() {
    // Plain requests: no stream, no usage, no --slo.
    let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--rate", "100"])).unwrap();
    let outcome = Outcome {
        recorders: [recorder_of(1..=100, false), Recorder::default()],
        measured: [Duration::from_secs(1), Duration::ZERO],
    };
    let report = Report::new(&plan, &outcome);
    let (table, csv) = (report.table(), report.csv());
    for absent in ["tokens", "goodput", "tpot"] {
        assert!(!table.contains(absent), "{absent} in\n{table}");
        assert!(!csv.contains(absent), "{absent} in\n{csv}");
    }
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["targets"][0]["tokens"].is_null(), "{json}");
    assert!(json["targets"][0]["goodput"].is_null(), "{json}");
    assert!(json["run"]["slo_us"].is_null(), "{json}");
    assert_eq!(json["targets"][0]["latency_us"]["tpot"]["count"], 0);

    // Streams counted from their events: no prompt tokens, so no total rate.
    let t0 = Instant::now();
    let mut rec = Recorder::default();
    let s = Sample {
        first_token: Some(t0),
        streamed: true,
        token_events: 4,
        choices: 1,
        ..Sample::default()
    };
    rec.record(t0, t0 + Duration::from_millis(30), &s, &Slo::default());
    let plan = Plan::try_from(&args(&["http://127.0.0.1:1", "--stream"])).unwrap();
    let outcome = Outcome {
        recorders: [rec, Recorder::default()],
        measured: [Duration::from_secs(2), Duration::ZERO],
    };
    let report = Report::new(&plan, &outcome);
    let tokens = report.targets[0].tokens.as_ref().unwrap();
    assert_eq!(
        (tokens.output_per_s, tokens.prompt, tokens.total_per_s),
        (2.0, None, None)
    );
    assert!(report
        .table()
        .contains("  tokens/s 2.0 output  (4.0 output tokens per request)\n"));
    assert!(!report.csv().contains("total_per_s"));
}

#[test]
fn the_goodput_line_says_how_many_failed_requests_its_share_leaves_out() {
    let slo: Slo = "total=1s".parse().unwrap();
    let g = crate::load::report::Goodput::new(57, 57, 2.0);
    let mut out = String::new();
    g.table(&mut out, 57, 64, &slo);
    assert_eq!(
        out,
        "  goodput 28.5/s  57 of 57 ok requests (100.0%) met total ≤ 1s; 64 failed requests not counted\n"
    );
    let mut out = String::new();
    g.table(&mut out, 57, 0, &slo);
    assert!(out.ends_with("met total ≤ 1s\n"), "{out}");
}
