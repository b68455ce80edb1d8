//! Fuzzes the fast path's HTTP/1.1 parsers: request heads, response heads and the chunked
//! decoder. Besides "never panics", it checks the decoder's invariants: the same input split
//! anywhere decodes to the same data and the same end, and data ranges stay inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser module itself, compiled alone (it needs only httparse and thiserror), so
// the fuzz build does not instrument all of the proxy's dependencies.
#[path = "../../proxy/src/h1/parse.rs"]
#[allow(dead_code)]
mod parse;

use parse::{ChunkedDecoder, Framing};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut h = parse::headers();
    if let Ok(Some(head)) = parse::parse_request(input, &mut h) {
        assert!(head.len <= input.len());
        assert!(!input[..head.len].windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
        if head.expect_continue {
            // Only one `Expect: 100-continue` stays on the fast path.
            assert!(!head.unusual);
            assert!(input[..head.len].windows(6).any(|w| w.eq_ignore_ascii_case(b"expect")));
        }
        if head.framing == Framing::Chunked {
            assert!(input[..head.len].windows(17).any(|w| w.eq_ignore_ascii_case(b"transfer-encoding")));
        }
    }
    let mut h = parse::headers();
    let _ = parse::parse_response(input, &mut h, split & 1 == 1);
    let whole = decode(input, input.len().max(1));
    let pieces = decode(input, usize::from(split).max(1));
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        // An error found in the whole input is found at any split, and vice versa, unless the
        // pieces ran out first (then neither saw the end).
        (Err(_), Ok((_, None))) | (Ok((_, None)), Err(_)) => {}
        (Err(_), Err(_)) => {}
        _ => panic!("split {split} changed the outcome: {whole:?} vs {pieces:?}"),
    }
});

/// Decoded data and where the body ended (None: not yet).
fn decode(input: &[u8], size: usize) -> Result<(Vec<u8>, Option<usize>), parse::ChunkError> {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut used = 0;
    for piece in input.chunks(size) {
        let mut at = 0;
        while at < piece.len() {
            let step = dec.step(&piece[at..])?;
            assert!(step.data.end <= piece.len() - at && step.consumed <= piece.len() - at);
            assert!(step.consumed > 0 || step.done);
            out.extend_from_slice(&piece[at..][step.data]);
            at += step.consumed;
            if step.done {
                return Ok((out, Some(used + at)));
            }
        }
        used += at;
    }
    Ok((out, None))
}
