use super::*;

/// Everything observable after feeding a body and finishing it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    result: Result<(), ScanError>,
    model: Option<String>,
    field: Option<String>,
    kind: Option<ValueKind>,
    consumed: usize,
}

struct Case {
    name: &'static str,
    body: &'static [u8],
    field: Option<&'static str>,
    limit: usize,
    result: Result<(), ScanError>,
    model: Option<&'static str>,
    value: Option<&'static str>,
}

const NO_LIMIT: usize = usize::MAX;

fn ok(name: &'static str, body: &'static [u8], model: Option<&'static str>) -> Case {
    Case {
        name,
        body,
        field: None,
        limit: NO_LIMIT,
        result: Ok(()),
        model,
        value: None,
    }
}

fn with_field(
    name: &'static str,
    body: &'static [u8],
    field: &'static str,
    model: Option<&'static str>,
    value: Option<&'static str>,
) -> Case {
    Case {
        field: Some(field),
        value,
        ..ok(name, body, model)
    }
}

fn bad(name: &'static str, body: &'static [u8], offset: usize, reason: &'static str) -> Case {
    Case {
        result: Err(ScanError::Malformed { offset, reason }),
        ..ok(name, body, None)
    }
}

fn not_object(name: &'static str, body: &'static [u8]) -> Case {
    Case {
        result: Err(ScanError::NotAnObject),
        ..ok(name, body, None)
    }
}

fn not_a_name(name: &'static str, body: &'static [u8], kind: ValueKind) -> Case {
    Case {
        result: Err(ScanError::ModelNotString(kind)),
        ..ok(name, body, None)
    }
}

fn run(chunks: &[&[u8]], field: Option<&str>, limit: usize) -> Outcome {
    let mut scanner = JsonPrefixScanner::new(field, limit);
    let mut result = None;
    for chunk in chunks {
        match scanner.feed(chunk) {
            Ok(Progress::NeedMore) => {}
            Ok(Progress::Done) => {
                result = Some(Ok(()));
                break;
            }
            Err(e) => {
                result = Some(Err(e));
                break;
            }
        }
    }
    let result = result.unwrap_or_else(|| scanner.finish());
    Outcome {
        result,
        model: scanner.model().map(str::to_owned),
        field: scanner.field().map(str::to_owned),
        kind: scanner.field_kind(),
        consumed: scanner.consumed(),
    }
}

/// Feeds `body` whole, byte by byte, in every two-way split and with empty chunks around, and
/// checks that every way gives the same outcome.
fn run_every_split(body: &[u8], field: Option<&str>, limit: usize) -> Outcome {
    let whole = run(&[body], field, limit);
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(&bytes, field, limit), whole, "byte by byte");
    for at in 0..=body.len() {
        let (a, b) = body.split_at(at);
        assert_eq!(run(&[a, b], field, limit), whole, "split at {at}");
        assert_eq!(
            run(&[b"", a, b"", b], field, limit),
            whole,
            "empty chunks, split at {at}"
        );
    }
    whole
}

#[test]
fn table() {
    let cases = [
        ok("model only", br#"{"model":"llama-3"}"#, Some("llama-3")),
        ok("empty object", b"{}", None),
        ok("empty object with spaces", b" \t\r\n{ \n}", None),
        ok("bom", b"\xEF\xBB\xBF {\"model\":\"m\"}", Some("m")),
        ok("no model", br#"{"a":1,"b":[true,false,null]}"#, None),
        ok(
            "nested model keys do not match",
            br#"{"messages":[{"model":"n1","content":"x"}],"meta":{"model":"n2","a":{"model":"n3"}},"model":"top"}"#,
            Some("top"),
        ),
        ok("nested model only", br#"{"a":{"model":"x"},"b":[{"model":"y"}]}"#, None),
        ok(
            "escapes",
            br#"{"model":"a\"b\\c\/d\be\ff\ng\rh\ti"}"#,
            Some("a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti"),
        ),
        ok("unicode escape", br#"{"model":"caf\u00e9 \u20AC"}"#, Some("café €")),
        ok("surrogate pair", br#"{"model":"x\uD83D\uDE00y"}"#, Some("x😀y")),
        ok("nul escape", br#"{"model":"a\u0000b"}"#, Some("a\0b")),
        ok("escaped key", br#"{"mod\u0065l":"m","model":"second"}"#, Some("m")),
        ok("raw utf-8", "{\"model\":\"Ünïcødé 😀 中文\"}".as_bytes(), Some("Ünïcødé 😀 中文")),
        ok(
            "long value with specials at every alignment",
            "{\"model\":\"abcdefghij\\\"klmnopq\\\\rstuvwxyzé12345678😀abcdefg\\nh\\u00e9ijklmnopqrst\"}".as_bytes(),
            Some("abcdefghij\"klmnopq\\rstuvwxyzé12345678😀abcdefg\nhéijklmnopqrst"),
        ),
        ok(
            "a value past the inline capacity moves to the heap intact",
            br#"{"model":"org/a-model-name-that-is-much-longer-than-sixty-four-bytes-to-spill-over-v1.2-instruct"}"#,
            Some("org/a-model-name-that-is-much-longer-than-sixty-four-bytes-to-spill-over-v1.2-instruct"),
        ),
        ok("key prefix is not model", br#"{"mode":"a","models":"b","model":"c"}"#, Some("c")),
        ok(
            "skipped values of every kind",
            br#"{"a":0,"b":-1,"c":1.5,"d":1e5,"e":-0.0E-7,"f":true,"g":false,"h":null,"i":"s\"}","j":[[],{}],"model":"m"}"#,
            Some("m"),
        ),
        ok(
            "whitespace everywhere",
            b"{ \"a\" : [ 1 , { \"b\" : null } ] ,\r\n\t\"model\" : \"m\" }",
            Some("m"),
        ),
        ok("duplicate model: first wins", br#"{"model":"first","model":"second"}"#, Some("first")),
        not_a_name("model not a string", br#"{"model":42,"model":"x"}"#, ValueKind::Number),
        not_a_name("model object", br#"{"model":{"name":"x"},"model":"y"}"#, ValueKind::Object),
        ok("stops at done", br#"{"model":"m", this is not json"#, Some("m")),
        ok("trailing bytes after the object", br#"{"a":1} trailing"#, None),
        with_field("field string", br#"{"model":"m","user":"u\n1"}"#, "user", Some("m"), Some("u\n1")),
        with_field("field before model", br#"{"user":"u","model":"m"}"#, "user", Some("m"), Some("u")),
        with_field("field number", br#"{"n":-12.5e+3,"model":"m"}"#, "n", Some("m"), Some("-12.5e+3")),
        with_field("field zero", br#"{"model":"m","n":0}"#, "n", Some("m"), Some("0")),
        with_field("field bool", br#"{"model":"m","stream":true}"#, "stream", Some("m"), Some("true")),
        with_field("field false", br#"{"stream":false,"model":"m"}"#, "stream", Some("m"), Some("false")),
        with_field("field null", br#"{"stream":null,"model":"m"}"#, "stream", Some("m"), None),
        with_field("field object", br#"{"o":{"a":[1,"x"]},"model":"m"}"#, "o", Some("m"), None),
        with_field("field missing", br#"{"model":"m","x":1}"#, "y", Some("m"), None),
        with_field("field nested only", br#"{"a":{"f":"x"},"model":"m"}"#, "f", Some("m"), None),
        with_field("field is model", br#"{"model":"m"}"#, "model", Some("m"), Some("m")),
        with_field("empty field name", br#"{"":"e","model":"m"}"#, "", Some("m"), Some("e")),
        not_object("empty", b""),
        not_object("whitespace only", b" \n "),
        not_object("array", b"[1]"),
        not_object("string", br#""model""#),
        not_object("number", b"1"),
        not_object("partial bom", b"\xEF\xBB{}"),
        not_object("bom after whitespace", b" \xEF\xBB\xBF{}"),
        not_object("two boms", b"\xEF\xBB\xBF\xEF\xBB\xBF{}"),
        bad("missing value", br#"{"a":}"#, 5, "expected a value"),
        bad("missing colon", br#"{"a" 1}"#, 5, "expected ':'"),
        bad("trailing comma", br#"{"a":1,}"#, 7, "expected a key"),
        bad("comma first", b"{,}", 1, "expected a key"),
        bad("unquoted key", b"{model:1}", 1, "expected a key"),
        bad("missing comma", br#"{"a":1 2}"#, 7, "expected ',' or a closing bracket"),
        bad("leading zero", br#"{"a":01}"#, 6, "leading zero in number"),
        bad("bare minus", br#"{"a":-}"#, 6, "invalid number"),
        bad("dot without digits", br#"{"a":1.}"#, 7, "invalid number"),
        bad("exponent without digits", br#"{"a":1e+}"#, 8, "invalid number"),
        bad("plus sign", br#"{"a":+1}"#, 5, "expected a value"),
        bad("bad literal", br#"{"a":tru}"#, 8, "invalid literal"),
        bad("literal with suffix", br#"{"a":nullx}"#, 9, "expected ',' or a closing bracket"),
        bad("mismatched bracket", br#"{"a":[1}"#, 7, "mismatched closing bracket"),
        bad("mismatched in array", br#"{"a":[}"#, 6, "expected a value"),
        bad("top closed by bracket", br#"{"a":1]"#, 6, "mismatched closing bracket"),
        bad("invalid escape", br#"{"model":"\x"}"#, 11, "invalid escape in string"),
        bad("invalid hex", br#"{"model":"\u12G4"}"#, 14, "invalid \\u escape"),
        bad("lone low surrogate", br#"{"model":"\uDC00"}"#, 15, "unpaired surrogate in \\u escape"),
        bad("high then quote", br#"{"model":"\uD800"}"#, 16, "unpaired surrogate in \\u escape"),
        bad("high then other escape", br#"{"model":"\uD800\n"}"#, 17, "unpaired surrogate in \\u escape"),
        bad("high then bmp", br#"{"model":"\uD800\u0041"}"#, 21, "unpaired surrogate in \\u escape"),
        bad("raw newline in string", b"{\"model\":\"a\nb\"}", 11, "control character in string"),
        bad("overlong utf-8", b"{\"model\":\"\xC0\x80\"}", 10, "invalid UTF-8 in string"),
        bad("surrogate in utf-8", b"{\"model\":\"\xED\xA0\x80\"}", 11, "invalid UTF-8 in string"),
        bad("utf-8 above max", b"{\"model\":\"\xF4\x90\x80\x80\"}", 11, "invalid UTF-8 in string"),
        bad("truncated utf-8", b"{\"model\":\"\xE2\x82\"}", 12, "invalid UTF-8 in string"),
        bad("stray continuation", b"{\"x\":\"\x80\"}", 6, "invalid UTF-8 in string"),
        bad("invalid utf-8 in skipped key", b"{\"\xFF\":1}", 2, "invalid UTF-8 in string"),
        bad("non-ascii outside strings", b"{\xC3\xA9}", 1, "expected a key"),
        bad("truncated after key", br#"{"model""#, 8, "body ended inside the top-level object"),
        bad("truncated in value", br#"{"model":"ab"#, 12, "body ended inside the top-level object"),
        bad("truncated in number", br#"{"a":12"#, 7, "body ended inside the top-level object"),
        bad("truncated in escape", br#"{"model":"\u00"#, 14, "body ended inside the top-level object"),
        bad("truncated nested", br#"{"a":[{"b":1}]"#, 14, "body ended inside the top-level object"),
        bad("only brace", b"{", 1, "body ended inside the top-level object"),
    ];
    for case in cases {
        let got = run_every_split(case.body, case.field, case.limit);
        let want = (
            case.result,
            case.model.map(str::to_owned),
            case.value.map(str::to_owned),
        );
        assert_eq!((got.result, got.model, got.field), want, "{}", case.name);
    }
}

/// A `model` that is not a string is refused where it ends, not taken as no model (which
/// would route it to the default model); `null` is no model and `""` a name.
#[test]
fn a_model_that_is_not_a_string_is_refused() {
    let cases = [
        (
            &br#"{"model":5}"#[..],
            Err(ScanError::ModelNotString(ValueKind::Number)),
            11,
        ),
        (
            br#"{"model": -1.5e3 ,"a":1}"#,
            Err(ScanError::ModelNotString(ValueKind::Number)),
            17,
        ),
        (
            br#"{"model":true,"a":1}"#,
            Err(ScanError::ModelNotString(ValueKind::Bool)),
            13,
        ),
        (
            br#"{"model":false}"#,
            Err(ScanError::ModelNotString(ValueKind::Bool)),
            14,
        ),
        (
            br#"{"model":["m"],"a":1}"#,
            Err(ScanError::ModelNotString(ValueKind::Array)),
            14,
        ),
        (
            br#"{"model":{"m":[{}]}}"#,
            Err(ScanError::ModelNotString(ValueKind::Object)),
            19,
        ),
        (br#"{"model":null,"model":"x"}"#, Ok(()), 13),
        (br#"{"a":[1],"model":""}"#, Ok(()), 19),
    ];
    for (body, result, consumed) in cases {
        let text = String::from_utf8_lossy(body);
        let got = run_every_split(body, None, NO_LIMIT);
        assert_eq!((got.result, got.consumed), (result, consumed), "{text}");
        assert_eq!(
            got.model.as_deref(),
            body.ends_with(br#""model":""}"#).then_some(""),
            "{text}"
        );
        // With a wanted field still to come, the scan stops at the model all the same.
        let got = run_every_split(body, Some("user"), NO_LIMIT);
        assert_eq!(got.result.is_err(), result.is_err(), "{text}");
    }
    assert_eq!(
        ScanError::ModelNotString(ValueKind::Number).to_string(),
        "Invalid type for `model`: expected a string (the model's name), but got a number instead"
    );
}

#[test]
fn field_kinds() {
    let cases = [
        (&br#"{"f":"s","model":"m"}"#[..], Some(ValueKind::String)),
        (br#"{"f":1,"model":"m"}"#, Some(ValueKind::Number)),
        (br#"{"f":true,"model":"m"}"#, Some(ValueKind::Bool)),
        (br#"{"f":null,"model":"m"}"#, Some(ValueKind::Null)),
        (br#"{"f":{},"model":"m"}"#, Some(ValueKind::Object)),
        (br#"{"f":[],"model":"m"}"#, Some(ValueKind::Array)),
        (br#"{"model":"m"}"#, None),
    ];
    for (body, kind) in cases {
        assert_eq!(run_every_split(body, Some("f"), NO_LIMIT).kind, kind);
    }
}

#[test]
fn consumed_stops_where_the_scan_completed() {
    // The closing quote of the model value.
    let got = run_every_split(br#"{"model":"m","rest":"never read"}"#, None, NO_LIMIT);
    assert_eq!(got.consumed, 12);
    // A number ends at the byte after it.
    let got = run_every_split(br#"{"model":"m","n":5,"x":1}"#, Some("n"), NO_LIMIT);
    assert_eq!(got.consumed, 19);
    // Without the wanted field, at the closing brace.
    let got = run_every_split(br#"{"model":"m"} "#, Some("n"), NO_LIMIT);
    assert_eq!(got.consumed, 13);
}

#[test]
fn limit() {
    let body = br#"{"model":"m"}"#;
    // "model" completes at byte 12 and the object at byte 13.
    let cases = [
        (None, 12, Ok(())),
        (None, 11, Err(ScanError::LimitReached { limit: 11 })),
        (None, 0, Err(ScanError::LimitReached { limit: 0 })),
        (Some("f"), 13, Ok(())),
        (Some("f"), 12, Err(ScanError::LimitReached { limit: 12 })),
    ];
    for (field, limit, want) in cases {
        let got = run_every_split(body, field, limit);
        assert_eq!(got.result, want, "field {field:?}, limit {limit}");
        assert!(got.consumed <= limit);
    }
}

#[test]
fn limit_keeps_what_was_found() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"long prompt"}],"user":"u"}"#;
    let got = run_every_split(body, Some("user"), 40);
    assert_eq!(got.result, Err(ScanError::LimitReached { limit: 40 }));
    assert_eq!(got.model.as_deref(), Some("m"));
    assert_eq!(got.consumed, 40);
}

#[test]
fn limit_bounds_captured_values() {
    let body = br#"{"model":"a very long model name that goes on"}"#;
    let got = run_every_split(body, None, 20);
    assert_eq!(got.result, Err(ScanError::LimitReached { limit: 20 }));
    assert_eq!(got.model, None);
}

#[test]
fn limit_error_beats_later_malformed_bytes() {
    let got = run(&[br#"{"a":"xxxxxxxx" oops"#], None, 10);
    assert_eq!(got.result, Err(ScanError::LimitReached { limit: 10 }));
}

#[test]
fn depth() {
    let nested = |levels: usize| {
        let mut body = String::from(r#"{"a":"#);
        body.push_str(&"[".repeat(levels));
        body.push_str(&"]".repeat(levels));
        body.push_str(r#","model":"m"}"#);
        body
    };
    let depth = MAX_DEPTH as usize;
    let got = run(&[nested(depth - 1).as_bytes()], None, NO_LIMIT);
    assert_eq!((got.result, got.model.as_deref()), (Ok(()), Some("m")));
    let got = run(&[nested(depth).as_bytes()], None, NO_LIMIT);
    let reason = "nested deeper than 128 levels";
    let offset = 5 + depth - 1;
    assert_eq!(got.result, Err(ScanError::Malformed { offset, reason }));
}

#[test]
fn answers_repeat_after_the_end() {
    let mut scanner = JsonPrefixScanner::new(None, NO_LIMIT);
    assert_eq!(scanner.feed(br#"{"model":"m"}"#), Ok(Progress::Done));
    assert_eq!(scanner.feed(b"garbage"), Ok(Progress::Done));
    assert_eq!(scanner.finish(), Ok(()));
    assert_eq!(scanner.consumed(), 12);

    let mut scanner = JsonPrefixScanner::new(None, NO_LIMIT);
    let e = ScanError::Malformed {
        offset: 1,
        reason: "expected a key",
    };
    assert_eq!(scanner.feed(b"{]"), Err(e));
    assert_eq!(scanner.feed(br#""model":"m"}"#), Err(e));
    assert_eq!(scanner.finish(), Err(e));
    assert_eq!(scanner.model(), None);
}

#[test]
fn display() {
    let e = ScanError::Malformed {
        offset: 7,
        reason: "expected ':'",
    };
    assert_eq!(e.to_string(), "malformed JSON body at byte 7: expected ':'");
    assert_eq!(
        ScanError::NotAnObject.to_string(),
        "request body is not a JSON object"
    );
    let limit = ScanError::LimitReached { limit: 65536 }.to_string();
    assert!(limit.contains("first 65536 bytes"), "{limit}");
}

/// xorshift64*: enough to shuffle bytes around reproducibly without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bodies from JSON-ish pieces and random chunkings of them never panic and give the same
/// outcome as feeding them whole.
#[test]
fn random_bodies_and_chunkings_agree() {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"model\"",
        "\"m\"",
        "\"f\"",
        "\"x\\\"y\"",
        "\\u00e9",
        "\\uD83D",
        "\\uDE00",
        "\\",
        "\"",
        "0",
        "-1.5e3",
        "true",
        "null",
        "é",
        "\u{1F600}",
        "\n",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let mut body = Vec::new();
        if rng.below(2) == 0 {
            body.extend_from_slice(b"{\"a\":");
        }
        for _ in 0..rng.below(24) {
            body.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes());
        }
        if !body.is_empty() && rng.below(4) == 0 {
            let at = rng.below(body.len());
            body[at] = rng.next() as u8;
        }
        let limit = if rng.below(3) == 0 {
            rng.below(64)
        } else {
            NO_LIMIT
        };
        let field = Some("f").filter(|_| rng.below(2) == 0);
        let whole = run(&[&body], field, limit);
        let mut chunks = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let (a, b) = rest.split_at(rng.below(rest.len() + 1));
            chunks.push(a);
            rest = b;
        }
        assert_eq!(
            run(&chunks, field, limit),
            whole,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn string_run_matches_bytewise() {
    const ALPHABET: &[u8] = b"aaaaaaaaaaaaaaaaaaaa \"\\\x00\x1f\x20\x7f\x80\xc3\xa9\xff";
    let mut rng = Rng(7);
    for i in 0..20_000 {
        // Short strings with many special bytes, and long ones (past the vector widths) with
        // one in a few hundred.
        let (len, rare) = if i % 2 == 0 {
            (rng.below(40), 1)
        } else {
            (rng.below(700), 300)
        };
        let s: Vec<u8> = (0..len)
            .map(|_| match rng.below(rare) {
                0 => ALPHABET[rng.below(ALPHABET.len())],
                _ => b'a',
            })
            .collect();
        let end = s
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(len);
        let ascii = s[..end].is_ascii();
        assert_eq!(string_run(&s), (end, ascii), "{s:?}");
    }
}

/// Raw JSON text and what it decodes to.
type Piece = (&'static str, &'static str);

const KEYS: &[Piece] = &[
    ("model", "model"),
    ("mod\\u0065l", "model"),
    ("f", "f"),
    ("x", "x"),
    ("models", "models"),
    ("", ""),
];
const STRING_PIECES: &[Piece] = &[
    ("a", "a"),
    ("model", "model"),
    ("lorem ipsum dolor ", "lorem ipsum dolor "),
    ("\\\"", "\""),
    ("\\\\", "\\"),
    ("\\/", "/"),
    ("\\n\\t", "\n\t"),
    ("\\u00e9", "é"),
    ("\\uD83D\\uDE00", "😀"),
    ("é", "é"),
    ("😀", "😀"),
    ("{[,:]}", "{[,:]}"),
];
const SCALARS: &[&str] = &[
    "0", "-1", "1.5e3", "-0.25E-2", "12", "true", "false", "null",
];
const SPACES: &[&str] = &["", "", "", " ", "\n", "\t", "\r\n  "];

/// Generates random valid JSON and remembers what a correct scan finds in it.
struct Gen {
    rng: Rng,
    out: String,
}

impl Gen {
    fn space(&mut self) {
        let s = SPACES[self.rng.below(SPACES.len())];
        self.out.push_str(s);
    }

    fn string(&mut self) -> String {
        let mut decoded = String::new();
        self.out.push('"');
        for _ in 0..self.rng.below(5) {
            let (raw, text) = STRING_PIECES[self.rng.below(STRING_PIECES.len())];
            self.out.push_str(raw);
            decoded.push_str(text);
        }
        self.out.push('"');
        decoded
    }

    /// Writes a value; returns what `field()` shows for it.
    fn value(&mut self, depth: usize) -> Option<String> {
        match self.rng.below(if depth > 4 { 3 } else { 5 }) {
            0 => Some(self.string()),
            1 => {
                let s = SCALARS[self.rng.below(SCALARS.len())];
                self.out.push_str(s);
                Some(s.to_owned()).filter(|s| s != "null")
            }
            2 => {
                self.out.push_str("\"s\"");
                Some("s".to_owned())
            }
            3 => {
                // Only the top level's outcome counts.
                let _ = self.object(depth + 1);
                None
            }
            _ => {
                self.out.push('[');
                for i in 0..self.rng.below(4) {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.value(depth + 1);
                    self.space();
                }
                self.out.push(']');
                None
            }
        }
    }

    /// Writes an object; returns what a scan should report for it at the top level: the
    /// result, and the first `model` and `f` (an `f` only up to a `model` that is refused).
    fn object(&mut self, depth: usize) -> (Result<(), ScanError>, Option<String>, Option<String>) {
        let (mut model, mut field) = (None, None);
        let mut refused = None;
        self.out.push('{');
        for i in 0..self.rng.below(5) {
            if i > 0 {
                self.out.push(',');
            }
            self.space();
            let (raw, key) = KEYS[self.rng.below(KEYS.len())];
            self.out.push('"');
            self.out.push_str(raw);
            self.out.push('"');
            self.space();
            self.out.push(':');
            self.space();
            let start = self.out.len();
            let value = self.value(depth);
            let kind = match self.out.as_bytes().get(start) {
                Some(b'"') => ValueKind::String,
                Some(b'n') => ValueKind::Null,
                Some(b't' | b'f') => ValueKind::Bool,
                Some(b'{') => ValueKind::Object,
                Some(b'[') => ValueKind::Array,
                _ => ValueKind::Number,
            };
            let first = |seen: &mut Option<Option<String>>, v: Option<String>| {
                seen.get_or_insert(v);
            };
            match key {
                "model"
                    if model.is_none() && !matches!(kind, ValueKind::String | ValueKind::Null) =>
                {
                    refused = refused.or(Some((kind, field.clone().flatten())));
                    model = Some(None);
                }
                "model" => first(&mut model, value.filter(|_| kind == ValueKind::String)),
                "f" => first(&mut field, value),
                _ => {}
            }
            self.space();
        }
        self.out.push('}');
        match refused {
            Some((kind, field)) => (Err(ScanError::ModelNotString(kind)), None, field),
            None => (Ok(()), model.flatten(), field.flatten()),
        }
    }
}

/// Random valid bodies: the scan finds what the generator put first, whole and in random chunks.
#[test]
fn random_valid_bodies() {
    let mut g = Gen {
        rng: Rng(0x5EED),
        out: String::new(),
    };
    for _ in 0..5000 {
        g.out.clear();
        g.space();
        let (result, model, field) = g.object(1);
        let body = g.out.clone();
        let whole = run(&[body.as_bytes()], Some("f"), NO_LIMIT);
        assert_eq!(
            (&whole.result, &whole.model, &whole.field),
            (&result, &model, &field),
            "{body}"
        );
        let bytes: Vec<&[u8]> = body.as_bytes().chunks(1).collect();
        assert_eq!(run(&bytes, Some("f"), NO_LIMIT), whole, "{body}");
        let at = g.rng.below(body.len() + 1);
        let (a, b) = body.as_bytes().split_at(at);
        assert_eq!(run(&[a, b], Some("f"), NO_LIMIT), whole, "{body}");
    }
}

/// Objects and arrays inside the top-level object are passed over in one go when they are whole
/// in a chunk (`skip_nested`), else read step by step: both must accept, refuse (at the same
/// offset) and end at the same byte. Fed whole, each body below takes the quick pass; byte by
/// byte it never does.
#[test]
fn nested_values_read_whole_or_step_by_step_agree() {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b" ",
        b"\t",
        b"\"k\"",
        b"\"v\"",
        b"\"\"",
        br#""a\"b""#,
        br#""\n\t\/\b\f\r\\""#,
        br#""\u00e9""#,
        br#""\u00E9""#,
        br#""\uD83D\uDE00""#,
        br#""\uDE00""#,
        br#""\u+123""#,
        br#""\u12G4""#,
        br#""\x""#,
        "\"é\"".as_bytes(),
        "\"\u{1F600}\"".as_bytes(),
        b"\"\x01\"",
        b"\"\x7f\"",
        b"\"\xC3\"",
        b"\"\xED\xA0\x80\"",
        b"\"\xF4\x90\x80\x80\"",
        b"0",
        b"-0",
        b"01",
        b"-",
        b"1.",
        b"1.5",
        b"1e",
        b"1e+",
        b"2E-3",
        b"-12.5e10",
        b"1.e3",
        b"truex",
        b"true",
        b"tru",
        b"false",
        b"null",
        b"nul",
        b"\"",
    ];
    let mut rng = Rng(0x5EED_0F5C_4A11);
    let mut skipped = 0;
    for _ in 0..20_000 {
        let mut inner = Vec::new();
        for _ in 0..rng.below(12) {
            inner.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
        let open = if rng.below(2) == 0 { "[" } else { "{\"k\":" };
        let close = if open == "[" { "]" } else { "}" };
        let mut body = format!("{{\"a\":{open}").into_bytes();
        body.extend_from_slice(&inner);
        body.extend_from_slice(close.as_bytes());
        body.extend_from_slice(b",\"model\":\"m\"}");
        let whole = run(&[&body], None, NO_LIMIT);
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            run(&bytes, None, NO_LIMIT),
            whole,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        skipped += usize::from(whole.model.is_some());
    }
    // Enough of the bodies were valid for the quick pass to have carried them.
    assert!(skipped > 1_000, "{skipped} valid bodies");
}

#[test]
fn a_valid_nested_value_is_passed_over_in_one_go() {
    let value =
        br#"[{"role":"user","content":"h\u00e9\n\"i\"","n":[-1.5e3,0,true,false,null,{}],"x":[]}]"#;
    assert_eq!(super::skip_nested(value, 127), Some(value.len()));
    assert_eq!(
        super::skip_nested(&value[..value.len() - 1], 127),
        None,
        "cut off"
    );
    assert_eq!(
        super::skip_nested(b"[[[]]]", 2),
        None,
        "deeper than allowed"
    );
    assert_eq!(super::skip_nested(b"[[[]]]", 3), Some(6));
    assert_eq!(super::skip_nested(b"[1]", 127), Some(3));
    assert_eq!(super::skip_nested(b"[1", 127), None, "a number may go on");
}
