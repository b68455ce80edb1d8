use super::*;

fn req(s: &str) -> Result<Option<(Framing, bool, bool)>, HeadError> {
    let mut h = headers();
    parse_request(s.as_bytes(), &mut h).map(|o| o.map(|r| (r.framing, r.close, r.unusual)))
}

#[test]
fn request_framing_is_unambiguous_or_refused() {
    let ok = |s| req(s).expect("valid").expect("complete");
    assert_eq!(
        ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        (Framing::Empty, false, false)
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").0,
        Framing::Length(12)
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n").0,
        Framing::Chunked
    );
    assert!(ok("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").1);
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n"), (Framing::Empty, true, true));
    assert!(ok("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").2);
    assert!(ok("GET http://a/ HTTP/1.1\r\n\r\n").2);
    // One `Expect: 100-continue` is the fast path's; any other expectation is hyper's.
    let expect = |s: &str| {
        let mut h = headers();
        let r = parse_request(s.as_bytes(), &mut h).expect(s).expect(s);
        (r.expect_continue, r.unusual)
    };
    let post = "POST / HTTP/1.1\r\nContent-Length: 5\r\n";
    assert_eq!(
        expect(&format!("{post}Expect: 100-Continue \r\n\r\n")),
        (true, false)
    );
    assert_eq!(expect(&format!("{post}\r\n")), (false, false));
    assert_eq!(
        expect(&format!("{post}Expect: 200-ok\r\n\r\n")),
        (false, true)
    );
    assert_eq!(
        expect(&format!(
            "{post}Expect: 100-continue\r\nExpect: 100-continue\r\n\r\n"
        )),
        (false, true)
    );
    assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    let bad = |s: &str| req(s).expect_err(s);
    assert_eq!(bad("GET / HTTP/1.1\r\nHost: a\n\r\n"), HeadError::BareLf);
    assert_eq!(bad("GET / HTTP/1.1\nHost"), HeadError::BareLf);
    assert_eq!(
        bad("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
        HeadError::DuplicateLength
    );
    assert_eq!(
        bad("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HeadError::LengthAndChunked
    );
    assert_eq!(
        bad("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        HeadError::BadTransferEncoding
    );
    assert_eq!(
        bad("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
        HeadError::BadLength
    );
    assert_eq!(
        bad("POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n"),
        HeadError::BadLength
    );
    assert!(matches!(
        bad("POST / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
        HeadError::Syntax(_)
    ));
    assert!(matches!(
        bad("POST / HTTP/1.1\r\nA : b\r\n\r\n"),
        HeadError::Syntax(_)
    ));
}

#[test]
fn response_framing_follows_status_method_and_headers() {
    let parse = |s: &str, head: bool| {
        let mut h = headers();
        parse_response(s.as_bytes(), &mut h, head).map(|o| o.map(|r| (r.framing, r.close)))
    };
    let f = |s, head| parse(s, head).expect("valid").expect("complete");
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
        (Framing::Length(3), false)
    );
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
        (Framing::Empty, false)
    );
    assert_eq!(
        f("HTTP/1.1 204 No Content\r\n\r\n", false),
        (Framing::Empty, false)
    );
    assert_eq!(
        f(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        ),
        (Framing::Chunked, false)
    );
    assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), (Framing::Close, true));
    assert_eq!(
        f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        (Framing::Close, true)
    );
    assert_eq!(
        f("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
        (Framing::Length(1), true)
    );
    assert!(parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        false
    )
    .is_err());
    assert!(parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        false
    )
    .is_err());
}

/// Decodes `input` fed in pieces of `size` bytes.
fn decode(input: &[u8], size: usize) -> Result<(Vec<u8>, usize), ChunkError> {
    let mut dec = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut used = 0;
    for piece in input.chunks(size) {
        let mut at = 0;
        while at < piece.len() && !dec.is_done() {
            let step = dec.step(&piece[at..])?;
            data.extend_from_slice(&piece[at..][step.data]);
            at += step.consumed;
        }
        used += at;
        if dec.is_done() {
            return Ok((data, used));
        }
    }
    Ok((data, usize::MAX))
}

#[test]
fn chunked_decoding_is_the_same_at_every_split() {
    let body =
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for size in 1..body.len() {
        let (data, used) = decode(body, size).expect("valid");
        assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split {size}");
        assert_eq!(&body[used..], b"NEXT", "split {size}");
    }
    for bad in [
        &b"x\r\n"[..],
        b"\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloX\r\n",
        b"1234567890123456\r\n",
        b"0\r\nA: b\n\r\n",
        b"1;\x01\r\n",
    ] {
        for size in 1..=bad.len() {
            assert!(
                decode(bad, size).is_err(),
                "{:?} split {size}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

#[test]
fn a_line_feed_without_a_carriage_return_before_it_is_found_anywhere() {
    // Every string of up to 8 bytes over {a, CR, LF}: refused exactly when some LF is first or
    // follows anything but CR.
    let alphabet = [b'a', b'\r', b'\n'];
    for len in 0..=8u32 {
        for code in 0..3usize.pow(len) {
            let s: Vec<u8> = (0..len)
                .map(|i| alphabet[code / 3usize.pow(i) % 3])
                .collect();
            let bare = s
                .iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || s[i - 1] != b'\r'));
            assert_eq!(check_crlf(&s).is_err(), bare, "{s:?}");
        }
    }
}
