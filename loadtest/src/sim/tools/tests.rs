//! Arguments from schemas, and their cutting into token fragments.

use serde_json::{json, Map};

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

/// Whether `value` satisfies `schema` (refs resolved against `root`), for the keywords the
/// generator supports: a small stand-in for the validators clients run (Pydantic's included).
fn valid(root: &Value, schema: &Value, value: &Value) -> bool {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|p| root.pointer(p))
            .filter(|t| t.get("$ref") != schema.get("$ref"))
            .unwrap_or(&Value::Bool(true));
        return valid(root, target, value);
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return options.contains(value);
    }
    for (k, any) in [("anyOf", true), ("oneOf", true), ("allOf", false)] {
        if let Some(branches) = schema.get(k).and_then(Value::as_array) {
            let mut each = branches.iter().map(|b| valid(root, b, value));
            let ok = if any {
                each.any(|x| x)
            } else {
                each.all(|x| x)
            };
            if !ok {
                return false;
            }
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(t)) => t.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => true,
        });
    if !type_ok {
        return false;
    }
    let bound = |k: &str| schema.get(k).and_then(Value::as_u64).map(|b| b as usize);
    match value {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let required = schema.get("required").and_then(Value::as_array);
            let missing = required
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|r| !fields.contains_key(r));
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            !missing
                && fields
                    .iter()
                    .all(|(k, v)| match props.and_then(|p| p.get(k)) {
                        Some(s) => valid(root, s, v),
                        None => !closed,
                    })
        }
        Value::Array(items) => {
            bound("minItems").is_none_or(|m| items.len() >= m)
                && bound("maxItems").is_none_or(|m| items.len() <= m)
                && schema
                    .get("items")
                    .is_none_or(|s| items.iter().all(|v| valid(root, s, v)))
        }
        Value::String(s) => {
            let n = s.chars().count();
            bound("minLength").is_none_or(|m| n >= m) && bound("maxLength").is_none_or(|m| n <= m)
        }
        _ => true,
    }
}

/// Generates arguments for `schema` with many keys and checks each against it.
fn assert_valid_for_many(schema: &Value) -> Vec<Value> {
    (0..24)
        .map(|i| {
            let text = arguments(Some(schema), key(&format!("p{i}")));
            let args: Value = serde_json::from_str(&text).unwrap();
            assert!(valid(schema, schema, &args), "{text}\nfor {schema}");
            args
        })
        .collect()
}

/// `openai.pydantic_function_tool(Order)`'s parameters, as openai 1.x and Pydantic 2 emit them.
fn pydantic_order() -> Value {
    json!({
        "$defs": {"Item": {
            "properties": {"sku": {"title": "Sku", "type": "string"},
                           "qty": {"title": "Qty", "type": "integer"}},
            "required": ["sku", "qty"], "title": "Item", "type": "object",
            "additionalProperties": false,
        }},
        "properties": {
            "customer": {"title": "Customer", "type": "string"},
            "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
            "priority": {"enum": ["low", "high"], "title": "Priority", "type": "string"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Note"},
        },
        "required": ["customer", "items", "priority", "note"],
        "title": "Order", "type": "object", "additionalProperties": false,
    })
}

#[test]
fn local_refs_are_followed() {
    for args in assert_valid_for_many(&pydantic_order()) {
        let items = args["items"].as_array().unwrap();
        assert!(
            items
                .iter()
                .all(|i| i["sku"].is_string() && i["qty"].is_i64()),
            "{args}"
        );
    }
    // Draft-7 `definitions`, a pointer into `properties`, and an escaped pointer.
    let schema = json!({
        "type": "object",
        "definitions": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}},
                                  "required": ["x"]}, "a/b": {"type": "boolean"}},
        "properties": {
            "from": {"$ref": "#/definitions/Point"},
            "to": {"$ref": "#/properties/from"},
            "flag": {"$ref": "#/definitions/a~1b"},
            "via": {"allOf": [{"$ref": "#/definitions/Point"},
                              {"properties": {"y": {"type": "integer"}}, "required": ["y"]}]},
        },
        "required": ["from", "to", "flag", "via"],
    });
    for args in assert_valid_for_many(&schema) {
        assert!(
            args["to"]["x"].is_i64() && args["flag"].is_boolean(),
            "{args}"
        );
        assert!(
            args["via"]["x"].is_i64() && args["via"]["y"].is_i64(),
            "{args}"
        );
    }
}

#[test]
fn recursive_and_dangling_refs_end() {
    // A tree: children nest a few levels, then stop with an empty list.
    let tree = json!({
        "$defs": {"Node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
        }, "required": ["name", "children", "parent"]}},
        "$ref": "#/$defs/Node",
    });
    for args in assert_valid_for_many(&tree) {
        let text = args.to_string();
        assert!(text.len() < 16 * 1024, "{} bytes", text.len());
    }
    // Refs that point nowhere, or only at themselves, are any value; none crashes.
    let odd = json!({
        "type": "object",
        "$defs": {"Loop": {"$ref": "#/$defs/Loop"}},
        "properties": {"gone": {"$ref": "#/$defs/Gone"}, "remote": {"$ref": "https://x/y.json"},
                       "loop": {"$ref": "#/$defs/Loop"}, "bad": {"$ref": "#/properties/gone/0"}},
        "required": ["gone", "remote", "loop", "bad"],
    });
    for args in assert_valid_for_many(&odd) {
        for k in ["gone", "remote", "loop", "bad"] {
            assert!(!args[k].is_null(), "{args}");
        }
    }
    // A required self-reference has no finite value: the walk still ends, bounded.
    let endless = json!({"type": "object", "properties": {"next": {"$ref": "#"}},
                         "required": ["next"]});
    let text = arguments(Some(&endless), key("x"));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    serde_json::from_str::<Value>(&text).unwrap();
}

#[test]
fn optional_values_formats_and_lengths() {
    let schema = json!({
        "type": "object",
        "properties": {
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
            "either": {"oneOf": [{"type": "null"}, {"type": "string"}]},
            "long": {"type": "string", "minLength": 40},
            "framed": {"type": "string", "minLength": 12, "maxLength": 14},
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "site": {"type": "string", "format": "uri"},
            "mail": {"type": "string", "format": "email"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["maybe", "either", "long", "framed", "when", "day", "site", "mail", "id"],
    });
    let date = |s: &str| {
        let b = s.as_bytes();
        b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && (1..=12).contains(&s[5..7].parse::<u32>().unwrap())
            && (1..=28).contains(&s[8..10].parse::<u32>().unwrap())
    };
    for args in assert_valid_for_many(&schema) {
        let s = |k: &str| args[k].as_str().unwrap().to_owned();
        assert!(args["maybe"].as_i64().is_some_and(|m| m >= 5), "{args}");
        assert!(args["either"].is_string(), "{args}");
        let when = s("when");
        assert!(date(&when[..10]) && when.len() == 20, "{when}");
        assert_eq!((&when[10..11], &when[13..14], &when[19..]), ("T", ":", "Z"));
        assert!(date(&s("day")), "{args}");
        assert!(s("site").starts_with("https://"), "{args}");
        let mail = s("mail");
        assert!(mail.contains('@') && !mail.contains(' '), "{args}");
        let id = s("id");
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    let wrong = arguments(Some(&schema), key("p1").wrong());
    let right = arguments(Some(&schema), key("p1"));
    let (wrong, right): (Value, Value) = (
        serde_json::from_str(&wrong).unwrap(),
        serde_json::from_str(&right).unwrap(),
    );
    for (k, v) in wrong.as_object().unwrap() {
        assert_ne!(right[k], *v, "{k}: a wrong call has other values");
    }
}

#[test]
fn huge_schemas_give_bounded_valid_calls() {
    let properties = |n: usize| -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("field_{i}"), json!({"type": "string"})))
            .collect()
    };
    let optional = json!({"type": "object", "properties": properties(3000)});
    let text = arguments(Some(&optional), key("big"));
    let args: Value = serde_json::from_str(&text).unwrap();
    assert!(valid(&optional, &optional, &args), "no nulls for strings");
    // Counted by estimate as it is generated: about the bound.
    let tokens = text.len().div_ceil(4) as u64;
    let bound = schema::ARGUMENT_TOKENS;
    assert!(
        (bound * 7 / 8..bound * 9 / 8).contains(&tokens),
        "{tokens} tokens"
    );
    // Required keys are always there, however many: each at its smallest past the bound.
    let names: Vec<String> = (0..3000).map(|i| format!("field_{i}")).collect();
    let required = json!({"type": "object", "properties": properties(3000), "required": names});
    let text = arguments(Some(&required), key("big"));
    let args: Value = serde_json::from_str(&text).unwrap();
    assert!(valid(&required, &required, &args));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
}
