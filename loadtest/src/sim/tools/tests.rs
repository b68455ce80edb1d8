//! Arguments from schemas, and their cutting into token fragments.

use serde_json::json;

use super::*;

fn key(prompt: &str) -> AnswerKey {
    AnswerKey::new("m", &json!([{"role": "user", "content": prompt}]))
}

#[test]
fn arguments_follow_the_schema() {
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "alerts": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "where": {"type": "object", "properties": {"zip": {"type": ["string", "null"]}}, "required": ["zip"]},
            "note": {"type": "string"},
        },
        "required": ["city", "unit", "days", "lat", "alerts", "tags", "where", "extra"],
    });
    for prompt in ["a", "b", "c", "d"] {
        let text = arguments(Some(&schema), key(prompt));
        let args: Value = serde_json::from_str(&text).unwrap();
        assert!(
            args["city"]
                .as_str()
                .is_some_and(|c| !c.is_empty() && c.len() <= 40),
            "{text}"
        );
        assert!(
            ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
            "{text}"
        );
        assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{text}");
        assert!(
            (-90.0..=90.0).contains(&args["lat"].as_f64().unwrap()),
            "{text}"
        );
        assert!(args["alerts"].is_boolean(), "{text}");
        let tags = args["tags"].as_array().unwrap();
        assert!(
            (1..=2).contains(&tags.len()) && tags.iter().all(Value::is_string),
            "{text}"
        );
        assert!(args["where"]["zip"].is_string(), "{text}");
        assert!(
            args["extra"].is_string(),
            "required without a schema: {text}"
        );
        assert_eq!(text, arguments(Some(&schema), key(prompt)), "deterministic");
        let wrong = arguments(Some(&schema), key(prompt).wrong());
        let wrong: Value = serde_json::from_str(&wrong).unwrap();
        let (args, wrong) = (args.as_object().unwrap(), wrong.as_object().unwrap());
        assert_eq!(
            wrong.len() + 1,
            args.len(),
            "a wrong call misses one argument"
        );
        for (k, v) in wrong {
            assert_ne!(args[k], *v, "{k}: a wrong call has other values");
        }
    }
    for missing in [None, Some(json!({})), Some(json!({"type": "string"}))] {
        assert_eq!(arguments(missing.as_ref(), key("a")), "{}");
    }
}

#[test]
fn nested_arrays_stay_bounded() {
    let mut schema = json!({"type": "string"});
    for _ in 0..40 {
        schema = json!({"type": "array", "items": schema, "minItems": 16});
    }
    let schema = json!({"type": "object", "properties": {"deep": schema}, "required": ["deep"]});
    let text = arguments(Some(&schema), key("deep"));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    serde_json::from_str::<Value>(&text).unwrap();
}

#[test]
fn calls_are_cut_into_token_fragments() {
    let call = Call::new("f".into(), "{\"city\":\"zürich\"}".into(), None);
    let joined: String = (0..call.tokens()).map(|i| call.fragment(i)).collect();
    assert_eq!(joined, call.arguments);
    let count = super::super::answer::count_tokens(&Value::String(call.arguments.clone()));
    assert_eq!(call.tokens(), count);
    assert!(!call.truncated);
    let cut = Call::new("f".into(), "{\"city\":\"zürich\"}".into(), Some(2));
    assert_eq!((cut.tokens(), cut.arguments.as_str()), (2, "{\"city\":"));
    assert!(cut.truncated);
    assert_eq!(cut.fragment(2), "");
}
