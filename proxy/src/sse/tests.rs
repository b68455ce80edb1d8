use super::*;

/// Everything observable after feeding a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    events: u64,
    done: bool,
    error: bool,
}

fn run(chunks: &[&[u8]]) -> Outcome {
    let mut sse = SseObserver::new();
    let mut fed_events = 0u64;
    let mut first_data = 0;
    for chunk in chunks {
        let fed = sse.feed(chunk);
        fed_events += u64::from(fed.events);
        first_data += u32::from(fed.first_data);
    }
    assert_eq!(fed_events, sse.events(), "Fed.events add up to events()");
    assert_eq!(first_data, u32::from(sse.events() > 0), "first_data once");
    Outcome {
        events: sse.events(),
        done: sse.done(),
        error: sse.error(),
    }
}

/// Feeds `stream` whole, byte by byte and in every two-way split, and checks that every way
/// gives the same outcome.
fn run_every_split(stream: &[u8]) -> Outcome {
    let whole = run(&[stream]);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(run(&[a, b]), whole, "split at {at}");
        assert_eq!(run(&[a, b"", b]), whole, "empty chunk, split at {at}");
    }
    whole
}

const fn out(events: u64, done: bool, error: bool) -> Outcome {
    Outcome {
        events,
        done,
        error,
    }
}

#[test]
fn table() {
    let cases: &[(&str, &[u8], Outcome)] = &[
        ("empty", b"", out(0, false, false)),
        (
            "openai stream",
            b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
              data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n\
              data: [DONE]\n\n",
            out(3, true, false),
        ),
        ("lf", b"data: a\n\ndata: b\n\n", out(2, false, false)),
        ("crlf", b"data: a\r\n\r\ndata: b\r\n\r\n", out(2, false, false)),
        ("cr", b"data: a\r\rdata: b\r\r", out(2, false, false)),
        ("mixed line ends", b"data: a\r\n\ndata: b\r\r\n", out(2, false, false)),
        // One event "a\nb": a CRLF counted as two line ends would make two.
        ("crlf inside an event", b"data: a\r\ndata: b\r\n\r\n", out(1, false, false)),
        ("multi-line data", b"data: a\ndata: b\ndata: c\n\n", out(1, false, false)),
        ("no space after colon", b"data:[DONE]\n\n", out(1, true, false)),
        ("done with crlf", b"data: [DONE]\r\n\r\n", out(1, true, false)),
        ("done without blank line", b"data: [DONE]\n", out(0, false, false)),
        ("done after two spaces", b"data:  [DONE]\n\n", out(1, false, false)),
        ("unterminated last event", b"data: a\n\ndata: b\n", out(1, false, false)),
        ("comments", b": keep-alive\n\n:\n\n: x\ndata: a\n\n", out(1, false, false)),
        ("id and retry", b"id: 1\nretry: 1000\n\nid\n\n", out(0, false, false)),
        ("event without data", b"event: ping\n\n", out(0, false, false)),
        ("named event with data", b"event: message\ndata: x\n\n", out(1, false, false)),
        ("data without colon", b"data\n\n", out(1, false, false)),
        ("empty data", b"data:\n\n", out(1, false, false)),
        ("unknown fields", b"dat: x\ndatadata: x\nDATA: x\n\n", out(0, false, false)),
        ("blank lines alone", b"\n\n\r\n\r\r", out(0, false, false)),
        ("bom", b"\xEF\xBB\xBFdata: a\n\n", out(1, false, false)),
        ("partial bom is part of the name", b"\xEF\xBBdata: a\n\n", out(0, false, false)),
        ("bom on the second event only", b"data: a\n\n\xEF\xBB\xBFdata: b\n\n", out(1, false, false)),
        ("error event", b"event: error\ndata: {\"message\":\"x\"}\n\n", out(1, false, true)),
        ("error event without space", b"event:error\ndata: x\n\n", out(1, false, true)),
        ("error event without data", b"event: error\n\n", out(0, false, true)),
        ("error event type replaced", b"event: error\nevent: message\ndata: x\n\n", out(1, false, false)),
        ("error event type is per event", b"event: error\ndata: x\n\ndata: y\n\n", out(2, false, true)),
        ("event type longer than error", b"event: errors\ndata: x\n\n", out(1, false, false)),
        ("event type shorter than error", b"event: err\ndata: x\n\n", out(1, false, false)),
        ("openai error payload", b"data: {\"error\": {\"message\": \"boom\", \"type\": \"server_error\"}}\n\n", out(1, false, true)),
        ("tgi error payload", b"data:{\"error\":\"Input validation error\",\"error_type\":\"validation\"}\n\n", out(1, false, true)),
        ("spaced error payload", b"data:  \t{ \"error\" : 1 }\n\n", out(1, false, true)),
        ("error payload over lines", b"data: {\ndata:   \"error\": {}}\n\n", out(1, false, true)),
        ("null error is no error", b"data: {\"error\": null, \"id\": 1}\n\n", out(1, false, false)),
        ("error not first", b"data: {\"id\":\"c1\",\"error\":{\"message\":\"x\"}}\n\n", out(1, false, false)),
        ("vllm error payload", b"data: {\"object\":\"error\",\"message\":\"x\",\"code\":400}\n\n", out(1, false, true)),
        ("object error later", b"data: {\"id\":\"e1\",\"n\":[1,{\"a\":\"]\"}],\"object\" : \"error\"}\n\n", out(1, false, true)),
        ("object error nested", b"data: {\"id\":\"x\",\"choices\":[{\"object\":\"error\"}]}\n\n", out(1, false, false)),
        ("error in content", b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"c\":\"{\\\"error\\\":1}\"}\n\n", out(1, false, false)),
        ("error in a string key value", b"data: {\"id\":\"{\\\"object\\\":\\\"error\\\"}\"}\n\n", out(1, false, false)),
        ("not json", b"data: error\n\ndata: {error}\n\n", out(2, false, false)),
    ];
    for (name, stream, want) in cases {
        assert_eq!(&run_every_split(stream), want, "{name}");
    }
}

#[test]
fn fed_reports_per_chunk() {
    let mut sse = SseObserver::new();
    assert_eq!(sse.feed(b": hello\n\ndata: a\n"), Fed::default());
    let first = Fed {
        events: 1,
        first_data: true,
    };
    assert_eq!(sse.feed(b"\n"), first);
    let three = Fed {
        events: 3,
        first_data: false,
    };
    assert_eq!(sse.feed(b"data: b\n\ndata: c\n\ndata: [DONE]\n\n"), three);
    assert!(sse.done());
    assert_eq!(sse.events(), 4);
}

#[test]
fn first_data_skips_events_without_data() {
    let mut sse = SseObserver::new();
    assert_eq!(sse.feed(b"event: ping\n\nid: 1\n\n").events, 0);
    assert!(sse.feed(b"data: a\n\n").first_data);
}

#[test]
fn split_crlf_is_one_line_end() {
    let mut sse = SseObserver::new();
    sse.feed(b"data: a\r");
    sse.feed(b"\n");
    // The LF above belonged to the CR: this CRLF is the blank line.
    assert_eq!(sse.feed(b"data: b\r\n\r\n").events, 1);
    assert_eq!(sse.events(), 1);
}

#[test]
fn long_lines_keep_memory_bounded() {
    let mut stream = b"data: {\"id\":\"".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 10_000));
    stream.extend_from_slice(b"\",\"object\":\"error\"}\n\n");
    stream.extend_from_slice(b"event: ");
    stream.extend(std::iter::repeat_n(b'e', 1_000));
    stream.extend_from_slice(b"\ndata: [DONE]\n\n");
    // The error object sits beyond the kept prefix, so it is not seen.
    assert_eq!(run_every_split(&stream), out(2, true, false));
}

#[test]
fn error_within_prefix() {
    let mut stream = b"data: {\"id\":\"".to_vec();
    stream.extend(std::iter::repeat_n(b'x', 200));
    stream.extend_from_slice(b"\",\"object\":\"error\",\"message\":\"");
    stream.extend(std::iter::repeat_n(b'y', 1000));
    stream.extend_from_slice(b"\"}\n\n");
    assert_eq!(run(&[&stream]), out(1, false, true));
}

#[test]
fn error_payload_prefixes() {
    let cases: &[(&[u8], bool)] = &[
        (b"{\"error\":{}}", true),
        (b"{\"error\":", false),
        (b"{\"error\":\"x", true),
        (b"{\"object\":\"err", false),
        (b"{\"id\":\"x\"", false),
        (b"{\"id\":1", false),
        (b"{\"a\":[{\"b\":\"}\"}", false),
        (b"[{\"error\":1}]", false),
        (b"\"error\"", false),
        (b"", false),
    ];
    for (data, want) in cases {
        assert_eq!(
            is_error_payload(data),
            *want,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

#[test]
fn line_end_matches_bytewise() {
    const ALPHABET: &[u8] = b"aaaaaaaaaaaaaaaaaaaaaaaa\n\r\x0b\x0c\x8a\x8d\x00\xff";
    let mut rng = Rng(11);
    for _ in 0..20_000 {
        let len = rng.below(40);
        let s: Vec<u8> = (0..len)
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        let want = s.iter().position(|&b| b == b'\n' || b == b'\r');
        assert_eq!(line_end(&s), want, "{s:?}");
    }
}

/// Random streams from SSE-ish pieces, cut at random, give the same outcome as fed whole.
#[test]
fn random_streams_and_chunkings_agree() {
    const PIECES: &[&[u8]] = &[
        b"data: ",
        b"data: x\n\n",
        b"data:[DONE]\r\n\r\n",
        b"data: {\"error\":{}}\r\r",
        b"data:",
        b"data",
        b"event: error",
        b"event: x",
        b": c",
        b"id: 1",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"[DONE]",
        b"{\"error\":1}",
        b"{\"object\":\"error\"}",
        b"{\"id\":\"a\\\"b\",",
        b"x",
        b" ",
        b"\xEF\xBB\xBF",
    ];
    let mut rng = Rng(5);
    for _ in 0..5000 {
        let mut stream = Vec::new();
        for _ in 0..rng.below(30) {
            stream.extend_from_slice(PIECES[rng.below(PIECES.len())]);
        }
        let whole = run(&[&stream]);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (a, b) = rest.split_at(rng.below(rest.len() + 1));
            chunks.push(a);
            rest = b;
        }
        assert_eq!(
            run(&chunks),
            whole,
            "{:?}",
            String::from_utf8_lossy(&stream)
        );
    }
}
