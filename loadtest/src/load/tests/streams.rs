//! Streams with several choices (`n` > 1) and how prompt files meet `--stream`: inter-token
//! gaps are per choice, a tool call's own `index` is not its choice's, whole bodies get the
//! `stream` that `--stream` means or are refused, and a JSON answer to a stream request says
//! so. One run drives the real generator against the simulator with `n: 3`.

use super::*;
use crate::load::run::execute;

/// A chat chunk of choice `j` as OpenAI and vLLM write it (`index` first).
fn vllm_chunk(j: u32, delta: &str) -> String {
    format!(
        "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":{j},\
         \"delta\":{delta},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )
}

/// The same chunk as the simulator writes it (serde_json's sorted keys: `index` after `delta`).
fn sim_chunk(j: u32, delta: &str) -> String {
    format!(
        "data: {{\"choices\":[{{\"delta\":{delta},\"finish_reason\":null,\"index\":{j},\
         \"logprobs\":null}}],\"id\":\"c\",\"object\":\"chat.completion.chunk\"}}\n\n"
    )
}

/// Feeds `steps` token steps of `n` choices, a step every 5 ms from 20 ms, each choice's chunk
/// 10 µs after the previous one's (one read each), then `[DONE]`; returns the sample.
fn interleaved(chunk: fn(u32, &str) -> String, n: u32, steps: u64, delta: &str) -> Sample {
    let t0 = Instant::now();
    let mut s = Sample::default();
    let mut end = StreamEnd::default();
    let mut scanner = SseScanner::default();
    for step in 0..steps {
        for j in 0..n {
            let at = t0
                + Duration::from_millis(20 + 5 * step)
                + Duration::from_micros(10 * u64::from(j));
            scanner.feed(chunk(j, delta).as_bytes(), |e| end.on_event(e, at, &mut s));
        }
    }
    scanner.feed(b"data: [DONE]\n\n", |e| end.on_event(e, t0, &mut s));
    assert_eq!(end.outcome(true), Ok(()));
    assert_eq!(s.first_token, Some(t0 + Duration::from_millis(20)));
    s
}

#[test]
fn interleaved_choices_each_get_their_own_token_gaps() {
    for chunk in [vllm_chunk, sim_chunk] {
        let s = interleaved(chunk, 3, 6, r#"{"content":"tok"}"#);
        // Five gaps per choice, each the 5 ms step, none the 10 µs between choices.
        assert_eq!(s.gaps.len(), 3 * 5, "{}", chunk(1, "{}"));
        assert!(
            s.gaps.iter().all(|g| *g == Duration::from_millis(5)),
            "{:?}",
            s.gaps
        );
    }
}

#[test]
fn a_tool_calls_own_index_is_not_its_choices() {
    // The delta's tool call is number 0 (sim order) or 5 (vLLM order) in every chunk; the
    // choices are 0, 1 and 2.
    let sim_delta = r#"{"tool_calls":[{"function":{"arguments":"{\"a"},"index":0}]}"#;
    let vllm_delta = r#"{"tool_calls":[{"index":5,"function":{"arguments":"{\"a"}}]}"#;
    for (chunk, delta) in [
        (sim_chunk as fn(u32, &str) -> String, sim_delta),
        (vllm_chunk, vllm_delta),
    ] {
        let s = interleaved(chunk, 3, 4, delta);
        assert_eq!(s.gaps.len(), 3 * 3, "{}", chunk(2, delta));
        assert!(s.gaps.iter().all(|g| *g == Duration::from_millis(5)));
    }
    let cases: [(&[u8], u32); 6] = [
        (br#"{"choices":[{"delta":{"content":"x"}}]}"#, 0),
        (br#"{"choices": [ {"index" : 7, "text":"x"}]}"#, 7),
        (
            br#"{"choices":[{"delta":{"content":"say \"index\":9 {["},"index":2}]}"#,
            2,
        ),
        (br#"{"choices":[{"text":"index","index":4}]}"#, 4),
        (
            br#"{"choices":[{"text":"x","index":99999999999}]}"#,
            u32::MAX,
        ),
        (br#"{"text":"x","index":3}"#, 0),
    ];
    for (data, want) in cases {
        assert_eq!(
            classify(data),
            Event::Token(want),
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn choices_past_the_tracked_ones_count_for_ttft_but_give_no_gap() {
    let t0 = Instant::now();
    let mut s = Sample::default();
    let mut end = StreamEnd::default();
    end.on_event(Event::Token(500), t0, &mut s);
    end.on_event(Event::Token(500), t0 + Duration::from_millis(1), &mut s);
    end.on_event(Event::Token(3), t0 + Duration::from_millis(2), &mut s);
    end.on_event(Event::Token(3), t0 + Duration::from_millis(7), &mut s);
    assert_eq!(s.first_token, Some(t0));
    assert_eq!(s.gaps, [Duration::from_millis(5)]);
    // A reused recorder forgets the last stream's clocks.
    end.reset();
    s.reset();
    end.on_event(Event::Token(3), t0 + Duration::from_millis(9), &mut s);
    assert!(s.gaps.is_empty());
}

#[test]
fn an_answer_without_done_is_cut_or_not_a_stream_by_its_content_type() {
    let mut end = StreamEnd::default();
    assert_eq!(end.outcome(true), Err(ErrorKind::Cut));
    assert_eq!(end.outcome(false), Err(ErrorKind::NotAStream));
    end.done = true;
    assert_eq!(
        end.outcome(false),
        Ok(()),
        "an SSE body with [DONE] is fine"
    );
    end.error_event = true;
    assert_eq!(end.outcome(true), Err(ErrorKind::ErrorEvent));
}

/// Writes `lines` to a fresh prompts file and builds the plan of `flags` plus `--prompts`.
fn plan_with_prompts(name: &str, lines: &str, flags: &[&str]) -> anyhow::Result<Plan> {
    let dir = std::env::temp_dir().join(format!("rollgate-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, lines).unwrap();
    let mut all = vec!["http://127.0.0.1:1", "--prompts", file.to_str().unwrap()];
    all.extend_from_slice(flags);
    let plan = Plan::try_from(&args(&all));
    std::fs::remove_file(&file).unwrap();
    plan
}

#[test]
fn stream_adds_the_stream_key_to_whole_bodies_that_lack_it() {
    let lines = concat!(
        "{\"model\":\"m\",\"messages\":[],\"n\":3}\n",
        "{ }\n",
        "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}\n",
        "\"a prompt\"\n",
    );
    let plan = plan_with_prompts("add.jsonl", lines, &["--stream"]).unwrap();
    let bodies: Vec<&[u8]> = plan.request.bodies.iter().map(|b| &b[..]).collect();
    assert_eq!(
        bodies[0],
        br#"{"model":"m","messages":[],"n":3,"stream":true}"#
    );
    assert_eq!(bodies[1], br#"{"stream":true}"#);
    assert_eq!(bodies[2], lines.lines().nth(2).unwrap().as_bytes());
    let generated: serde_json::Value = serde_json::from_slice(bodies[3]).unwrap();
    assert_eq!(generated["stream"], true);
    // Without --stream, bodies go as written.
    let plain = plan_with_prompts("plain.jsonl", "{\"model\":\"m\",\"stream\":false}\n", &[]);
    assert_eq!(
        &plain.unwrap().request.bodies[0][..],
        br#"{"model":"m","stream":false}"#
    );
}

#[test]
fn a_whole_body_whose_stream_disagrees_with_the_flag_is_refused_by_line() {
    let lines = "\"ok\"\n{\"model\":\"m\",\"stream\":false}\n{\"stream\":null}\n";
    let err = plan_with_prompts("off.jsonl", lines, &["--stream"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2: \"stream\": false in a --stream run"),
        "{err}"
    );
    assert!(err.contains("line 3: \"stream\": null"), "{err}");
    let lines = "{\"model\":\"m\"}\n{\"model\":\"m\",\"stream\":true}\n";
    let err = plan_with_prompts("on.jsonl", lines, &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2: the body asks for a stream") && err.contains("add --stream"),
        "{err}"
    );
    assert!(!err.contains("line 1"), "{err}");
}

/// The whole generator against the simulator (5 ms per token) with `n: 3` bodies: every choice's
/// gaps are the token pace, not the microseconds between the choices' chunks of one step. Then
/// a `--body` without `stream` under `--stream`: the simulator answers JSON, and the report
/// says `not_a_stream`, not `cut_after_200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_choice_stream_against_the_simulator_has_per_choice_gaps() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_args = crate::sim::SimArgs {
        listen: listener.local_addr().unwrap(),
        model: "m1".to_owned(),
        ttft: Duration::from_millis(2),
        tpot: Duration::from_millis(5),
        ..crate::sim::SimArgs::default()
    };
    let sim = crate::sim::start(sim_args, listener).await.unwrap();
    let url = sim.url();
    let dir = std::env::temp_dir().join(format!("rollgate-loadtest-n3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"n":3,"max_tokens":8}"#;
    let file = dir.join("n3.jsonl");
    std::fs::write(&file, format!("{body}\n")).unwrap();
    let run = |flags: Vec<String>| async move {
        let load = args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
        let plan = Plan::try_from(&load).unwrap();
        let outcome = tokio::task::spawn_blocking(move || execute(&plan, false))
            .await
            .unwrap()
            .unwrap();
        Report::new(&Plan::try_from(&load).unwrap(), &outcome)
    };
    let path = file.to_str().unwrap().to_owned();
    let flags = |f: &[&str]| -> Vec<String> {
        [&url, "-n", "4", "--timeout", "5s"]
            .iter()
            .copied()
            .chain(f.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    let report = run(flags(&["--stream", "--prompts", &path])).await;
    let t = &report.targets[0];
    assert_eq!((t.ok, t.errors_total), (4, 0), "{}", report.table());
    let itl = &t.latency_us.itl;
    assert_eq!(
        itl.count,
        4 * 3 * 7,
        "7 gaps per choice: {}",
        report.table()
    );
    // The simulator paces each token by its due time, so a late one shortens the next gap
    // but not the mean; before per-choice gaps two in three were about 0.
    assert!(itl.mean >= 4_000.0, "{}", report.table());
    assert!(itl.p50 >= 4_000, "{}", report.table());

    let json_body = dir.join("body.json");
    std::fs::write(&json_body, body).unwrap();
    let body_path = json_body.to_str().unwrap().to_owned();
    let report = run(flags(&["--stream", "--body", &body_path])).await;
    let t = &report.targets[0];
    assert_eq!(t.errors.not_a_stream, 4, "{}", report.table());
    assert_eq!(t.errors.cut_after_200, 0, "{}", report.table());
    std::fs::remove_dir_all(&dir).unwrap();
    drop(sim);
}
