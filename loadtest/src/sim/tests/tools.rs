//! Tool calls: the OpenAI shape whole and streamed, determinism, `tool_choice`, `max_tokens`,
//! refusals, wrong answers and metrics.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Map;

use super::*;

const MS: Duration = Duration::from_millis(1);

fn weather() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    }})
}

fn search() -> Value {
    json!({"type": "function", "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    }})
}

fn with_tools(prompt: &str, tools: Value) -> Value {
    let mut request = chat(prompt);
    request["tools"] = tools;
    request
}

/// `(name, arguments)` of choice `i`'s tool call in a whole answer.
fn call_of(body: &Value, i: usize) -> (String, String) {
    let call = &body["choices"][i]["message"]["tool_calls"][0];
    let name = call["function"]["name"].as_str().unwrap().to_owned();
    (
        name,
        call["function"]["arguments"].as_str().unwrap().to_owned(),
    )
}

/// Per choice index: the tool call's id, name and concatenated arguments, and the finish
/// reason, as a client reassembles a stream.
fn reassemble(chunks: &[Value]) -> BTreeMap<u64, (String, String, String, String)> {
    let mut out: BTreeMap<u64, (String, String, String, String)> = BTreeMap::new();
    for chunk in chunks {
        for choice in chunk["choices"].as_array().unwrap() {
            let slot = out.entry(choice["index"].as_u64().unwrap()).or_default();
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert_eq!(call["index"], 0, "{chunk}");
                if let Some(id) = call["id"].as_str() {
                    slot.0.push_str(id);
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    slot.1.push_str(name);
                }
                slot.2
                    .push_str(call["function"]["arguments"].as_str().unwrap());
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                slot.3 = reason.to_owned();
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_has_the_openai_shape() {
    let sim = sim(args()).await;
    let reply = post(
        &sim,
        "/v1/chat/completions",
        &with_tools("weather in Oslo?", json!([weather()])),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert!(message["content"].is_null(), "{body}");
    let call = &message["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{body}");
    assert_eq!(call["type"], "function");
    let (name, arguments) = call_of(&body, 0);
    assert_eq!(name, "get_weather");
    let args: Value = serde_json::from_str(&arguments).unwrap();
    assert!(args["city"].is_string(), "{arguments}");
    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
    // A token per four characters of arguments, as the prompt is counted.
    let tokens = arguments.chars().count().div_ceil(4) as u64;
    assert_eq!(body["usage"]["completion_tokens"], tokens, "{body}");
    // The tool definitions are part of the prompt.
    let plain = post(&sim, "/v1/chat/completions", &chat("weather in Oslo?"))
        .await
        .json();
    let prompt = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt(&body) > prompt(&plain) + 20, "{body}\n{plain}");
}

#[tokio::test(start_paused = true)]
async fn tool_calls_are_deterministic_and_honour_tool_choice() {
    let (a, b) = (sim(args()).await, sim(args()).await);
    let tools = json!([weather(), search()]);
    let request = with_tools("plan my trip", tools.clone());
    let first = post(&a, "/v1/chat/completions", &request).await.json();
    let again = post(&a, "/v1/chat/completions", &request).await.json();
    let elsewhere = post(&b, "/v1/chat/completions", &request).await.json();
    assert_eq!(call_of(&first, 0), call_of(&again, 0));
    assert_eq!(call_of(&first, 0), call_of(&elsewhere, 0));
    let id = |b: &Value| b["choices"][0]["message"]["tool_calls"][0]["id"].clone();
    assert_ne!(
        id(&first),
        id(&again),
        "every response has its own call ids"
    );

    // Left to the model, prompts spread over the tools.
    let mut called = BTreeSet::new();
    for i in 0..16 {
        let body = post(
            &a,
            "/v1/chat/completions",
            &with_tools(&format!("q{i}"), tools.clone()),
        )
        .await;
        called.insert(call_of(&body.json(), 0).0);
    }
    assert_eq!(called.len(), 2, "{called:?}");

    for forced in ["get_weather", "search"] {
        for prompt in ["q1", "q2", "q3"] {
            let mut request = with_tools(prompt, tools.clone());
            request["tool_choice"] = json!({"type": "function", "function": {"name": forced}});
            let body = post(&a, "/v1/chat/completions", &request).await.json();
            assert_eq!(call_of(&body, 0).0, forced, "{body}");
        }
    }
    let mut required = request.clone();
    required["tool_choice"] = json!("required");
    let required = post(&a, "/v1/chat/completions", &required).await.json();
    assert_eq!(call_of(&required, 0), call_of(&first, 0));

    // `none`, and `auto` right after a tool's result, answer text: the plain answer.
    let mut none = request.clone();
    none["tool_choice"] = json!("none");
    let none = post(&a, "/v1/chat/completions", &none).await.json();
    let plain = post(&a, "/v1/chat/completions", &chat("plan my trip"))
        .await
        .json();
    assert_eq!(
        none["choices"][0]["message"],
        plain["choices"][0]["message"]
    );
    assert_eq!(none["choices"][0]["finish_reason"], "stop");
    let mut answered = request;
    answered["messages"] = json!([
        {"role": "user", "content": "plan my trip"},
        first["choices"][0]["message"].clone(),
        {"role": "tool", "tool_call_id": id(&first), "content": "sunny, 21 C"},
    ]);
    answered["tool_choice"] = json!("auto");
    let answered = post(&a, "/v1/chat/completions", &answered).await.json();
    assert!(
        answered["choices"][0]["message"]["content"].is_string(),
        "{answered}"
    );
    assert!(answered["choices"][0]["message"]
        .get("tool_calls")
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn a_streamed_tool_call_reassembles_to_the_whole_one() {
    let sim = sim(args()).await;
    let mut request = with_tools("weather in Lima?", json!([weather(), search()]));
    let whole = post(&sim, "/v1/chat/completions", &request).await.json();
    let (name, arguments) = call_of(&whole, 0);
    let tokens = whole["usage"]["completion_tokens"].as_u64().unwrap();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let start = Instant::now();
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    assert!(streamed.clean_end);
    assert_eq!(streamed.events().last().unwrap(), "[DONE]");
    let chunks = streamed.json_events();
    // One event per token: the first carries the role, the call's id and name and the first
    // arguments fragment; the others only a fragment.
    let fragments: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(fragments.len() as u64, tokens);
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant", "{first}");
    let start_call = &first["tool_calls"][0];
    assert_eq!(start_call["type"], "function");
    assert!(start_call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(start_call["function"]["name"], name.as_str());
    let head = start_call["function"]["arguments"].as_str().unwrap();
    assert!(!head.is_empty() && arguments.starts_with(head), "{first}");
    assert!(fragments[1..]
        .iter()
        .all(|f| f["function"].get("name").is_none() && f.get("id").is_none()));
    for frame in &streamed.frames[..tokens as usize] {
        assert_eq!(frame.1.matches("data: ").count(), 1, "{}", frame.1);
    }
    let calls = reassemble(&chunks);
    let (id, got_name, got_arguments, finish) = &calls[&0];
    assert!(id.starts_with("call_"));
    assert_eq!((got_name, got_arguments), (&name, &arguments));
    let parsed: Value = serde_json::from_str(got_arguments).unwrap();
    assert_eq!(parsed, serde_json::from_str::<Value>(&arguments).unwrap());
    assert_eq!(finish, "tool_calls");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], tokens);
    // At the text answers' pace: the call and its first fragment at TTFT, then one per TPOT.
    let last_fragment = streamed.frames[tokens as usize - 1].0 - start;
    assert_eq!(streamed.frames[0].0 - start, 20 * MS);
    assert_eq!(last_fragment, 20 * MS + 5 * MS * (tokens as u32 - 1));
}

#[tokio::test(start_paused = true)]
async fn max_tokens_cuts_a_tool_call_and_metrics_count_it() {
    let sim = sim(args()).await;
    let mut request = with_tools("weather in Rome?", json!([weather()]));
    let full = post(&sim, "/v1/chat/completions", &request).await.json();
    let (_, arguments) = call_of(&full, 0);
    let tokens = full["usage"]["completion_tokens"].as_u64().unwrap();
    // A `max_tokens` larger than the call does not make it longer.
    request["max_tokens"] = json!(tokens + 50);
    let roomy = post(&sim, "/v1/chat/completions", &request).await.json();
    assert_eq!(call_of(&roomy, 0).1, arguments);
    assert_eq!(roomy["choices"][0]["finish_reason"], "tool_calls");

    request["max_tokens"] = json!(3);
    let cut = post(&sim, "/v1/chat/completions", &request).await.json();
    assert_eq!(cut["choices"][0]["finish_reason"], "length", "{cut}");
    assert_eq!(call_of(&cut, 0).1, arguments[..12]);
    assert_eq!(cut["usage"]["completion_tokens"], 3);
    request["stream"] = json!(true);
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    let calls = reassemble(&streamed.json_events());
    assert_eq!(
        (calls[&0].2.as_str(), calls[&0].3.as_str()),
        (&arguments[..12], "length")
    );

    // vLLM has no `tool_calls` finished_reason: a finished call counts as `stop`.
    let text = sim.metrics_text();
    let success = |reason: &str| {
        let series = format!(
            "vllm:request_success_total{{model_name=\"sim-model\",finished_reason=\"{reason}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap()
            .to_owned()
    };
    assert_eq!(success("stop"), "2", "{text}");
    assert_eq!(success("length"), "2", "{text}");
    let generated = format!(
        "vllm:generation_tokens_total{{model_name=\"sim-model\"}} {}\n",
        2 * tokens + 6
    );
    assert!(text.contains(&generated), "{generated}{text}");
}

#[tokio::test(start_paused = true)]
async fn bad_tools_are_refused_naming_the_parameter() {
    let sim = sim(args()).await;
    let named = |name: &str| json!({"type": "function", "function": {"name": name}});
    let table = [
        (json!({"tools": "get_weather"}), "tools"),
        (json!({"tools": [1]}), "tools"),
        (
            json!({"tools": [{"type": "function", "function": {}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": ""}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}),
            "tools",
        ),
        (
            json!({"tools": [{"function": {"name": "f", "parameters": "x"}}]}),
            "tools",
        ),
        (
            json!({"tools": [weather()], "tool_choice": named("nope")}),
            "tool_choice",
        ),
        (
            json!({"tools": [weather()], "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"tools": [weather()], "tool_choice": 3}),
            "tool_choice",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"type": "function"}}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (json!({"tool_choice": named("get_weather")}), "tool_choice"),
    ];
    for (extra, param) in table {
        let mut request = chat("p");
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let reply = post(&sim, "/v1/chat/completions", &request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{request}");
        let error = reply.error();
        assert_eq!(error["param"], param, "{request}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let message = post(&sim, "/v1/chat/completions", &{
        let mut r = with_tools("p", json!([weather()]));
        r["tool_choice"] = named("nope");
        r
    })
    .await
    .error()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("nope"), "{message}");
    // OpenAI refuses an empty list, whatever `tool_choice` says.
    for extra in [
        json!({"tools": []}),
        json!({"tools": [], "tool_choice": "required"}),
        json!({"tools": [], "tool_choice": "none"}),
    ] {
        let mut request = chat("p");
        for (k, v) in extra.as_object().unwrap() {
            request[k] = v.clone();
        }
        let reply = post(&sim, "/v1/chat/completions", &request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{request}");
        let error = reply.error();
        assert_eq!(error["param"], "tools", "{request}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("empty array"), "{message}");
    }
}

#[tokio::test(start_paused = true)]
async fn wrong_answers_call_the_same_tool_with_other_arguments() {
    let sim = sim(args()).await;
    let mut request = with_tools("weather in Kyiv?", json!([weather(), search()]));
    let right = post(&sim, "/v1/chat/completions", &request).await.json();
    sim.set_faults(Faults {
        wrong_answers: Ratio::ONE,
        ..Faults::default()
    });
    let wrong = post(&sim, "/v1/chat/completions", &request).await.json();
    let (right_name, right_args) = call_of(&right, 0);
    let (wrong_name, wrong_args) = call_of(&wrong, 0);
    assert_eq!(right_name, wrong_name);
    let fields = |a: &str| serde_json::from_str::<Map<String, Value>>(a).unwrap();
    let (right_fields, wrong_fields) = (fields(&right_args), fields(&wrong_args));
    assert_eq!(
        wrong_fields.len() + 1,
        right_fields.len(),
        "one argument missing"
    );
    assert!(
        wrong_fields.iter().all(|(k, v)| right_fields[k] != *v),
        "{right_args} {wrong_args}"
    );
    request["stream"] = json!(true);
    let streamed = stream(&sim, "/v1/chat/completions", &request).await;
    assert_eq!(reassemble(&streamed.json_events())[&0].2, wrong_args);
}

#[tokio::test(start_paused = true)]
async fn tool_definitions_count_as_prompt_tokens_whatever_the_answer() {
    let sim = sim(args()).await;
    let prompt = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    let tools = json!([weather(), search()]);
    let called = post(
        &sim,
        "/v1/chat/completions",
        &with_tools("trip", tools.clone()),
    )
    .await
    .json();
    let plain = post(&sim, "/v1/chat/completions", &chat("trip"))
        .await
        .json();
    let definitions = prompt(&called) - prompt(&plain);
    assert!(definitions > 20, "{called}");
    let mut none = with_tools("trip", tools.clone());
    none["tool_choice"] = json!("none");
    let none = post(&sim, "/v1/chat/completions", &none).await.json();
    assert!(none["choices"][0]["message"]["content"].is_string());
    assert_eq!(prompt(&none), prompt(&called), "{none}");

    // `auto` after a tool's result answers text, with the definitions still in the prompt.
    let messages = json!([
        {"role": "user", "content": "trip"},
        called["choices"][0]["message"].clone(),
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]);
    let mut answered = with_tools("trip", tools);
    answered["messages"] = messages.clone();
    let answered = post(&sim, "/v1/chat/completions", &answered).await.json();
    assert!(answered["choices"][0]["message"]["content"].is_string());
    let mut bare = chat("trip");
    bare["messages"] = messages;
    let bare = post(&sim, "/v1/chat/completions", &bare).await.json();
    assert_eq!(prompt(&answered), prompt(&bare) + definitions, "{answered}");
}
