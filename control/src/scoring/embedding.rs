//! Embedding answers: vectors read from `data[i].embedding` (float arrays, or base64 of
//! little-endian f32 as `encoding_format: "base64"` returns them) and compared by cosine.

use serde_json::Value;

use super::{Answer, PairScore};

/// Cosine at or above this counts as the same vector: f32 rounding on another GPU or batch size
/// moves the sixth decimal, never the fifth.
const SAME_VECTOR_COSINE: f64 = 0.999_999;

/// Fills the content fields of an embeddings pair (both sides 2xx).
pub(super) fn compare(out: &mut PairScore, primary: &Answer, shadow: &Answer) {
    let mut read = |side: &str, a: &Answer| match vectors(&a.body) {
        Ok(v) => v,
        Err(e) => {
            out.note(format!("{side} embeddings unreadable: {e}"));
            Vec::new()
        }
    };
    let p = read("stable", primary);
    let s = read("candidate", shadow);
    let n = p.len().max(s.len());
    let mut sum = 0.0;
    for i in 0..n {
        sum += match (p.get(i), s.get(i)) {
            (Some(a), Some(b)) if a.len() == b.len() => cosine(a, b),
            (Some(a), Some(b)) => {
                out.note(format!("vector {i}: {} vs {} dimensions", a.len(), b.len()));
                0.0
            }
            _ => 0.0,
        };
    }
    let cos = if n == 0 { 0.0 } else { sum / n as f64 };
    out.cosine = Some(cos);
    out.exact = n > 0 && p == s;
    out.normalized = n > 0 && cos >= SAME_VECTOR_COSINE;
    let dims = |v: &[Vec<f32>]| v.iter().map(Vec::len).sum::<usize>();
    out.length_ratio = super::ratio(dims(&p), dims(&s));
    out.score = cos.clamp(0.0, 1.0);
}

/// The vectors of an embeddings body in `index` order.
pub(crate) fn vectors(body: &[u8]) -> Result<Vec<Vec<f32>>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let index = item
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let vector = match item.get("embedding") {
            Some(Value::Array(xs)) => xs
                .iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| format!("data[{i}].embedding has a non-number"))?,
            Some(Value::String(b64)) => {
                decode_f32s(b64).ok_or_else(|| format!("data[{i}].embedding is not base64 f32"))?
            }
            _ => return Err(format!("data[{i}] has no embedding")),
        };
        out.push((index, vector));
    }
    out.sort_by_key(|(index, _)| *index);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Cosine similarity in f64; 0 when either vector is all zeros (or not finite), so a degenerate
/// answer scores as unlike anything.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let c = dot / (na.sqrt() * nb.sqrt());
    if c.is_finite() {
        c.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Standard base64 (padding optional) of little-endian f32s.
fn decode_f32s(text: &str) -> Option<Vec<f32>> {
    let bytes = decode_base64(text.trim_end_matches('='))?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    let floats = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(floats)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
