//! `n` > 1: distinct deterministic choices, whole and streamed, at the pace of one.

use std::{collections::BTreeMap, time::Duration};

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Per choice index: the concatenated text and the finish reason of a stream.
fn by_choice(chunks: &[Value]) -> BTreeMap<u64, (String, String)> {
    let mut out: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for chunk in chunks {
        let choices = chunk["choices"].as_array().unwrap();
        assert!(choices.len() <= 1, "one choice per chunk: {chunk}");
        for choice in choices {
            let slot = out.entry(choice["index"].as_u64().unwrap()).or_default();
            let text = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str());
            slot.0.push_str(text.unwrap_or_default());
            if let Some(reason) = choice["finish_reason"].as_str() {
                assert!(slot.1.is_empty(), "two finish reasons: {chunk}");
                slot.1 = reason.to_owned();
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn n_choices_differ_and_the_first_is_the_single_answer() {
    let sim = sim(args()).await;
    let single = post(&sim, "/v1/chat/completions", &chat("three ways"))
        .await
        .json();
    let mut request = chat("three ways");
    request["n"] = json!(3);
    let start = Instant::now();
    let body = post(&sim, "/v1/chat/completions", &request).await.json();
    // Generated together: as long as one choice (20 ms, then 15 tokens at 5 ms).
    assert_eq!(start.elapsed(), 95 * MS);
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let texts: Vec<&str> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            assert_eq!(c["finish_reason"], "stop");
            c["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(texts[0], single["choices"][0]["message"]["content"]);
    assert!(texts[0] != texts[1] && texts[1] != texts[2] && texts[0] != texts[2]);
    assert_eq!(body["usage"]["completion_tokens"], 48);
    let again = post(&sim, "/v1/chat/completions", &request).await.json();
    assert_eq!(again["choices"], body["choices"]);

    let completion = json!({"prompt": "once", "max_tokens": 3, "n": 2});
    let body = post(&sim, "/v1/completions", &completion).await.json();
    assert_eq!(body["choices"][1]["index"], 1);
    assert_ne!(body["choices"][0]["text"], body["choices"][1]["text"]);
    assert_eq!(body["choices"][1]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 6);
    let text = sim.metrics_text();
    let generated = "vllm:generation_tokens_total{model_name=\"sim-model\"} 118\n";
    assert!(text.contains(generated), "16 + 48 + 48 + 6: {text}");

    // Embeddings ignore `n`.
    let embed = json!({"input": "hi", "n": 4, "dimensions": 4});
    let embed = post(&sim, "/v1/embeddings", &embed).await;
    assert_eq!(embed.status, StatusCode::OK);
    assert_eq!(embed.json()["data"].as_array().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn streamed_choices_step_together_and_reassemble() {
    let sim = sim(args()).await;
    let mut request = chat("stream three");
    request["n"] = json!(3);
    request["max_tokens"] = json!(4);
    let whole = post(&sim, "/v1/chat/completions", &request).await.json();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let start = Instant::now();
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    assert!(streamed.clean_end);
    let at: Vec<Duration> = streamed.frames.iter().map(|(t, _)| *t - start).collect();
    // One frame per token step with a chunk per choice; then the finish chunks, usage, [DONE].
    assert_eq!(at[..4], [20 * MS, 25 * MS, 30 * MS, 35 * MS]);
    assert!(at[4..].iter().all(|t| *t == 35 * MS), "{at:?}");
    let chunks = streamed.json_events();
    // 4 steps × 3 choices, 3 finish chunks, the usage chunk.
    assert_eq!(chunks.len(), 16);
    for (j, chunk) in chunks[..3].iter().enumerate() {
        assert_eq!(chunk["choices"][0]["index"], j);
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
    }
    let got = by_choice(&chunks);
    assert_eq!(got.len(), 3);
    for (j, (text, finish)) in &got {
        let want = &whole["choices"][*j as usize];
        assert_eq!(text, want["message"]["content"].as_str().unwrap());
        assert_eq!(finish, "length");
    }
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 12);
}

#[tokio::test(start_paused = true)]
async fn each_choice_calls_a_tool_of_its_own() {
    let sim = sim(args()).await;
    let tool = json!({"type": "function", "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {
            "terms": {"type": "array", "items": {"type": "string"}},
            "exact": {"type": "boolean"},
        }, "required": ["terms"]},
    }});
    let mut request = chat("find it");
    request["tools"] = json!([tool]);
    request["n"] = json!(4);
    let whole = post(&sim, "/v1/chat/completions", &request).await.json();
    let calls: Vec<&Value> = (0..4)
        .map(|j| &whole["choices"][j]["message"]["tool_calls"][0])
        .collect();
    let ids: std::collections::BTreeSet<&str> =
        calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{whole}");
    let arguments: Vec<&str> = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    for a in &arguments {
        let parsed: Value = serde_json::from_str(a).unwrap();
        assert!(parsed["terms"].is_array(), "{a}");
    }
    assert!(arguments.windows(2).any(|w| w[0] != w[1]), "{arguments:?}");
    let tokens: u64 = arguments.iter().map(|a| a.len().div_ceil(4) as u64).sum();
    assert_eq!(whole["usage"]["completion_tokens"], tokens);

    request["stream"] = json!(true);
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    let mut fragments: BTreeMap<u64, String> = BTreeMap::new();
    let mut finished = 0;
    for chunk in streamed.json_events() {
        let choice = &chunk["choices"][0];
        let j = choice["index"].as_u64().unwrap();
        if let Some(a) = choice["delta"]["tool_calls"][0]["function"]["arguments"].as_str() {
            fragments.entry(j).or_default().push_str(a);
        }
        if choice["finish_reason"] == "tool_calls" {
            // A choice's finish comes after all of its fragments.
            assert_eq!(fragments[&j], arguments[j as usize]);
            finished += 1;
        }
    }
    assert_eq!(finished, 4);
}

#[tokio::test(start_paused = true)]
async fn a_list_of_prompts_gets_n_choices_for_each() {
    let sim = sim(args()).await;
    let text = |b: &Value, i: usize| b["choices"][i]["text"].as_str().unwrap().to_owned();
    let mut alone = Vec::new();
    for prompt in ["north", "south"] {
        let body = json!({"prompt": prompt, "max_tokens": 3, "n": 2});
        let body = post(&sim, "/v1/completions", &body).await.json();
        alone.push((text(&body, 0), text(&body, 1)));
    }
    let request = json!({"prompt": ["north", "south"], "max_tokens": 3, "n": 2});
    let body = post(&sim, "/v1/completions", &request).await.json();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4, "{body}");
    for (c, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], c);
        assert_eq!(choice["finish_reason"], "length");
    }
    // Choice `prompt_i * n + j` is choice `j` of prompt `i` asked alone.
    let got: Vec<String> = (0..4).map(|c| text(&body, c)).collect();
    let want = [&alone[0].0, &alone[0].1, &alone[1].0, &alone[1].1];
    assert_eq!(got.iter().collect::<Vec<_>>(), want, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 12);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let chunks = stream(&sim, "/v1/completions", &streamed)
        .await
        .json_events();
    let texts: Vec<String> = by_choice(&chunks).into_values().map(|(t, _)| t).collect();
    assert_eq!(texts, got);

    // Token ids are one prompt; a list of token-id lists is one prompt each.
    for (prompt, count) in [(json!([1, 2, 3]), 1), (json!([[1, 2], [3]]), 2)] {
        let body = json!({"prompt": prompt, "max_tokens": 2});
        let body = post(&sim, "/v1/completions", &body).await.json();
        assert_eq!(body["choices"].as_array().unwrap().len(), count, "{body}");
    }
    let too_many = json!({"prompt": vec!["p"; 17], "n": 128});
    let reply = post(&sim, "/v1/completions", &too_many).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error()["param"], "prompt");
}
