//! Request-smuggling matrix against the real gateway: raw TCP clients send ambiguous or
//! malformed framing; a recording upstream shows what was forwarded. Every case must either be
//! answered 400 with the connection closed and nothing forwarded, or be forwarded as exactly one
//! request whose body is the one unambiguous reading.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{fast_config, Gateway};

/// One request as the upstream received it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP/1.1 upstream that parses what it gets (Content-Length or chunked, as the gateway
/// frames it), records each complete request and answers `200 ok`.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let log = log.clone();
            std::thread::spawn(move || serve_upstream(conn, &log));
        }
    });
    (addr, seen)
}

fn serve_upstream(conn: TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut out = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line");
            headers.push((k.to_ascii_lowercase(), v.trim().to_owned()));
        }
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(n) = get("content-length") {
            body.resize(n.parse().expect("content-length"), 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        } else if get("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim_end(), 16).expect("chunk size");
                let mut data = vec![0; n + 2];
                if r.read_exact(&mut data).is_err() {
                    return;
                }
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&data[..n]);
            }
        }
        log.lock().expect("log").push(Seen {
            line: line.trim_end().to_owned(),
            headers,
            body,
        });
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// Sends raw bytes on a fresh connection; returns everything read until the gateway closes
/// (or 1 s of silence) and whether it closed.
fn exchange(gw: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut c = TcpStream::connect(gw).expect("connect");
    c.write_all(bytes).expect("write");
    c.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

enum Want {
    /// 400, connection closed, nothing forwarded.
    Reject,
    /// Exactly one request forwarded with this body, answered 200.
    Forward(&'static [u8]),
}

const HEAD: &str = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nx-gateway-model-name: m\r\n";

fn cases() -> Vec<(&'static str, String, Want)> {
    use Want::{Forward, Reject};
    let h = HEAD;
    vec![
        ("CL and TE", format!("{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Reject),
        ("TE and CL", format!("{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), Reject),
        ("duplicate equal CL", format!("{h}Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi"), Reject),
        ("conflicting CL", format!("{h}Content-Length: 2\r\nContent-Length: 5\r\n\r\nhello"), Reject),
        ("CL list", format!("{h}Content-Length: 2, 2\r\n\r\nhi"), Reject),
        ("CL with sign", format!("{h}Content-Length: +2\r\n\r\nhi"), Reject),
        ("CL hex", format!("{h}Content-Length: 0x2\r\n\r\nhi"), Reject),
        ("CL empty", format!("{h}Content-Length: \r\n\r\nhi"), Reject),
        ("obs-fold", format!("{h}X-A: b\r\n c\r\nContent-Length: 2\r\n\r\nhi"), Reject),
        ("obs-fold on CL", format!("{h}Content-Length:\r\n 2\r\n\r\nhi"), Reject),
        ("space before colon", format!("{h}Content-Length : 2\r\n\r\nhi"), Reject),
        ("tab before colon", format!("{h}Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n"), Reject),
        ("bare LF in head", "POST /v1/chat/completions HTTP/1.1\nHost: gw\nx-gateway-model-name: m\nContent-Length: 2\n\nhi".to_owned(), Reject),
        ("bare LF on one line", format!("{h}Content-Length: 2\n\r\nhi"), Reject),
        ("bare CR", format!("{h}X-A: a\rb\r\nContent-Length: 2\r\n\r\nhi"), Reject),
        ("NUL in value", format!("{h}X-A: a\0b\r\nContent-Length: 2\r\n\r\nhi"), Reject),
        ("TE not chunked", format!("{h}Transfer-Encoding: gzip\r\n\r\nhi"), Reject),
        ("TE chunked not last", format!("{h}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), Reject),
        ("TE gzip then chunked", format!("{h}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), Reject),
        ("TE twice", format!("{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), Reject),
        ("TE xchunked", format!("{h}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"), Reject),
        ("TE vertical tab", format!("{h}Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"), Reject),
        ("chunk size not hex", format!("{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size 0x", format!("{h}Transfer-Encoding: chunked\r\n\r\n0x2\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size sign", format!("{h}Transfer-Encoding: chunked\r\n\r\n+2\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size space", format!("{h}Transfer-Encoding: chunked\r\n\r\n2 \r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size overflow", format!("{h}Transfer-Encoding: chunked\r\n\r\n10000000000000002\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size empty", format!("{h}Transfer-Encoding: chunked\r\n\r\n\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk size bare LF", format!("{h}Transfer-Encoding: chunked\r\n\r\n2\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk data too long", format!("{h}Transfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n0\r\n\r\n"), Reject),
        ("chunk data bare LF", format!("{h}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\n0\r\n\r\n"), Reject),
        ("chunk extension with LF", format!("{h}Transfer-Encoding: chunked\r\n\r\n2;a=\nb\r\nhi\r\n0\r\n\r\n"), Reject),
        ("chunk extension with NUL", format!("{h}Transfer-Encoding: chunked\r\n\r\n2;a\0\r\nhi\r\n0\r\n\r\n"), Reject),
        ("trailer bare LF", format!("{h}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: y\n\r\n"), Reject),
        ("chunk extension", format!("{h}Transfer-Encoding: chunked\r\n\r\n2;name=value\r\nhi\r\n0;last\r\n\r\n"), Forward(b"hi")),
        ("trailers dropped", format!("{h}Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: 1\r\n\r\n"), Forward(b"hi")),
        ("uppercase chunk size", format!("{h}Transfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"), Forward(b"0123456789")),
        ("plain CL", format!("{h}Content-Length: 2\r\n\r\nhi"), Forward(b"hi")),
        ("CL zero", format!("{h}Content-Length: 0\r\n\r\n"), Forward(b"")),
        // The body came with the head: no interim answer, and the expectation is not forwarded.
        ("Expect with the body at once", format!("{h}Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"), Forward(b"hi")),
    ]
}

#[tokio::test]
async fn fast_path_rejects_or_forwards_each_ambiguous_framing_exactly_once() {
    let _heavy = crate::support::heavy().await;
    let (up, seen) = recording_upstream();
    let gw = Gateway::start(&fast_config(&format!("http://{up}"), ""));
    let data = gw.data;
    let mut failures = Vec::new();
    for (name, bytes, want) in cases() {
        seen.lock().expect("log").clear();
        let (answer, closed) =
            tokio::task::spawn_blocking(move || exchange(data, bytes.as_bytes()))
                .await
                .expect("exchange");
        // Give the upstream thread a moment to record what it may have received.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = seen.lock().expect("log").clone();
        let ok = match want {
            Want::Reject => {
                answer.starts_with("HTTP/1.1 400 ")
                    && answer.contains("\r\ndate: ")
                    && answer.contains("\"invalid_request_error\"")
                    && closed
                    && got.is_empty()
            }
            Want::Forward(body) => {
                answer.starts_with("HTTP/1.1 200 ")
                    && answer.matches("HTTP/1.1").count() == 1
                    // The upstream sent no date: the gateway adds one (RFC 9110 6.6.1).
                    && answer.matches("\r\ndate: ").count() == 1
                    && got.len() == 1
                    && got[0].body == body
                    && got[0].line == "POST /v1/chat/completions HTTP/1.1"
                    && got[0]
                        .headers
                        .iter()
                        .filter(|(k, _)| k == "content-length" || k == "transfer-encoding")
                        .count()
                        == 1
                    && got[0].headers.iter().all(|(k, _)| k != "expect")
            }
        };
        if !ok {
            failures.push(format!(
                "{name}: answer {answer:?} closed={closed} upstream saw {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn fast_path_keeps_pipelined_requests_apart_and_hands_unusual_ones_to_hyper() {
    let _heavy = crate::support::heavy().await;
    let (up, seen) = recording_upstream();
    let gw = Gateway::start(&fast_config(&format!("http://{up}"), ""));
    let data = gw.data;
    // Two pipelined requests, the second's head right after the first's body: two requests,
    // two answers, in order.
    let two = format!(
        "{HEAD}Content-Length: 5\r\n\r\nfirst{HEAD}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\nsecond\r\n0\r\n\r\n"
    );
    let (answer, closed) = tokio::task::spawn_blocking(move || exchange(data, two.as_bytes()))
        .await
        .expect("exchange");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(closed);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let got = seen.lock().expect("log").clone();
    let bodies: Vec<&[u8]> = got.iter().map(|s| s.body.as_slice()).collect();
    assert_eq!(bodies, [&b"first"[..], &b"second"[..]]);
    // A head and its body in separate packets, the model named only in the body (so the body
    // is read before anything is forwarded), then the next request on the same connection.
    seen.lock().expect("log").clear();
    let split_answer = tokio::task::spawn_blocking(move || {
        let body = br#"{"model":"m","messages":[]}"#;
        let mut c = TcpStream::connect(data).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut answers = String::new();
        for _ in 0..2 {
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            c.write_all(head.as_bytes()).expect("head");
            std::thread::sleep(Duration::from_millis(100));
            c.write_all(body).expect("body");
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).expect("answer");
            answers.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        answers
    })
    .await
    .expect("split exchange");
    assert_eq!(
        split_answer.matches("HTTP/1.1 200 OK").count(),
        2,
        "{split_answer}"
    );
    let got = seen.lock().expect("log").clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].body, br#"{"model":"m","messages":[]}"#);

    // `Expect: 100-continue` with the body held back: the interim answer comes first, then the
    // final one once the body is sent; the upstream gets the body without the expectation.
    seen.lock().expect("log").clear();
    let (interim, fin) = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(data).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(format!("{HEAD}Expect: 100-continue\r\nContent-Length: 4\r\n\r\n").as_bytes())
            .expect("head");
        let mut buf = [0u8; 4096];
        let n = c.read(&mut buf).expect("interim");
        let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
        c.write_all(b"body").expect("body");
        let n = c.read(&mut buf).expect("final");
        (interim, String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .expect("expect exchange");
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(fin.starts_with("HTTP/1.1 200 OK"), "{fin}");
    let got = seen.lock().expect("log").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"body");
    assert!(got[0].headers.iter().all(|(k, _)| k != "expect"), "{got:?}");

    // HTTP/1.0 is served (by hyper, after the hand-over), with its bytes intact.
    seen.lock().expect("log").clear();
    let old = "POST /v1/chat/completions HTTP/1.0\r\nx-gateway-model-name: m\r\nContent-Length: 3\r\n\r\nold".to_owned();
    let (answer, _) = tokio::task::spawn_blocking(move || exchange(data, old.as_bytes()))
        .await
        .expect("exchange");
    assert!(
        answer.starts_with("HTTP/1.0 200 OK") || answer.starts_with("HTTP/1.1 200 OK"),
        "{answer}"
    );
    let got = seen.lock().expect("log").clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, b"old");
}
