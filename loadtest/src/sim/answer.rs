//! Deterministic answers: the same (model, prompt) gives the same text and the same embedding in
//! every run and process, because both come from SHA-256 of the pair and a fixed mixer.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Words answers are made of; one word is one token.
const VOCAB: [&str; 64] = [
    "the",
    "model",
    "answer",
    "is",
    "a",
    "simulated",
    "token",
    "stream",
    "of",
    "words",
    "that",
    "stays",
    "stable",
    "for",
    "each",
    "prompt",
    "and",
    "changes",
    "when",
    "input",
    "does",
    "gate",
    "rollout",
    "canary",
    "shadow",
    "latency",
    "queue",
    "cache",
    "memory",
    "signal",
    "weight",
    "cohort",
    "variant",
    "backend",
    "endpoint",
    "revision",
    "promote",
    "rollback",
    "health",
    "window",
    "sample",
    "verdict",
    "pass",
    "fail",
    "steady",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "river",
    "mountain",
    "cloud",
    "light",
    "north",
    "south",
    "east",
    "west",
    "green",
    "blue",
    "red",
    "gold",
];

/// Mixed into the keys of choices after the first, and of shape and value draws, so that none
/// of them repeats a token draw.
const CHOICE_SALT: u64 = 0xc401_ce00_0000_0000;
const DRAW_SALT: u64 = 0x5a9e_d2a3_0000_0000;
const PICK_SALT: u64 = 0x91c4_0000_7a1e_0000;

/// The seed of one answer: which words, in which order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AnswerKey {
    key: u64,
    wrong: bool,
}

// === impl AnswerKey ===

impl AnswerKey {
    /// `prompt` is the request's `messages`, `prompt` or `input` value; serde_json sorts object
    /// keys, so the same JSON in another key order gives the same answer.
    pub fn new(model: &str, prompt: &Value) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(model.as_bytes());
        hasher.update([0]);
        // Serialising a `Value` into a Vec cannot fail.
        hasher.update(serde_json::to_vec(prompt).unwrap_or_default());
        Self {
            key: first_u64(&hasher.finalize()),
            wrong: false,
        }
    }

    /// The same length of answer with every word replaced by another one.
    pub fn wrong(self) -> Self {
        Self {
            wrong: true,
            ..self
        }
    }

    /// The answer of choice `index` of the same request (`n` > 1): choice 0 is this answer,
    /// the others differ, and a wrong answer's choices are wrong too.
    pub fn choice(self, index: u32) -> Self {
        if index == 0 {
            return self;
        }
        Self {
            key: mix(self.key ^ mix(u64::from(index) ^ CHOICE_SALT)),
            ..self
        }
    }

    pub fn is_wrong(self) -> bool {
        self.wrong
    }

    /// The text of token `i`: a word, with a leading space after the first.
    pub fn token(self, i: u64) -> String {
        let word = self.word(i);
        if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        }
    }

    /// Word `i` of the answer; a wrong answer's word `i` is never the right one's.
    pub fn word(self, i: u64) -> &'static str {
        let len = VOCAB.len() as u64;
        let mut index = mix(self.key ^ mix(i)) % len;
        if self.wrong {
            // Shift by 1..len, so the wrong word is never the right one.
            index = (index + 1 + mix(self.key.rotate_left(17) ^ i) % (len - 1)) % len;
        }
        // `index < len` by the modulo.
        VOCAB[index as usize]
    }

    /// Draw `i` of the answer's shape (which tool, which keys, how many items): the same for
    /// the right and the wrong answer, so that a wrong answer differs in values, not in shape.
    pub fn draw(self, i: u64) -> u64 {
        mix(self.key ^ mix(i ^ DRAW_SALT))
    }

    /// Value `i` of the answer, in `0..n`; a wrong answer's is another one whenever `n > 1`.
    pub fn pick(self, i: u64, n: u64) -> u64 {
        let n = n.max(1);
        let right = mix(self.key ^ mix(i ^ PICK_SALT)) % n;
        if self.wrong && n > 1 {
            (right + 1 + mix(self.key.rotate_left(29) ^ i) % (n - 1)) % n
        } else {
            right
        }
    }

    pub fn text(self, tokens: u64) -> String {
        (0..tokens).map(|i| self.token(i)).collect()
    }

    /// A unit vector of `dim` components.
    pub fn embedding(self, dim: usize) -> Vec<f32> {
        let key = if self.wrong { mix(!self.key) } else { self.key };
        let raw: Vec<f64> = (0..dim as u64)
            .map(|i| {
                let bits = mix(key ^ mix(i.wrapping_add(0x5eed)));
                // 53 random bits to a value in [-1, 1).
                (bits >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect();
        let norm = raw
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::MIN_POSITIVE);
        raw.iter().map(|x| (x / norm) as f32).collect()
    }
}

/// splitmix64's finaliser: a fixed, well-spread mix that never changes between builds.
pub(super) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (dst, src) in bytes.iter_mut().zip(digest) {
        *dst = *src;
    }
    u64::from_le_bytes(bytes)
}

/// A rough token count: about four characters a token, as OpenAI's rule of thumb says.
pub(super) fn count_tokens(value: &Value) -> u64 {
    match value {
        Value::String(s) => (s.chars().count() as u64).div_ceil(4).max(1),
        // A token id in a pre-tokenised prompt.
        Value::Number(_) => 1,
        Value::Array(items) => items.iter().map(count_tokens).sum(),
        // Chat messages and content parts: count the text they carry, plus a little framing.
        Value::Object(fields) => {
            let text: u64 = ["content", "text"]
                .iter()
                .filter_map(|k| fields.get(*k))
                .map(count_tokens)
                .sum();
            let framing = if fields.contains_key("role") { 3 } else { 0 };
            text + framing
        }
        Value::Null | Value::Bool(_) => 0,
    }
}

/// Standard base64 with padding, for `encoding_format: "base64"` embeddings.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_deterministic_and_prompt_sensitive() {
        let a = AnswerKey::new("m", &json!([{"role": "user", "content": "hi"}]));
        let same = AnswerKey::new("m", &json!([{"content": "hi", "role": "user"}]));
        let other = AnswerKey::new("m", &json!([{"role": "user", "content": "bye"}]));
        let other_model = AnswerKey::new("n", &json!([{"role": "user", "content": "hi"}]));
        assert_eq!(a.text(16), same.text(16));
        assert_ne!(a.text(16), other.text(16));
        assert_ne!(a.text(16), other_model.text(16));
        assert_eq!(a.text(16).split(' ').count(), 16);
        for i in 0..64 {
            assert_ne!(a.token(i).trim(), a.wrong().token(i).trim());
        }
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let v = AnswerKey::new("m", &json!("hello")).embedding(384);
        let norm: f64 = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn token_counts() {
        assert_eq!(count_tokens(&json!("abcdefgh")), 2);
        assert_eq!(count_tokens(&json!("")), 1);
        assert_eq!(count_tokens(&json!([1, 2, 3])), 3);
        let messages = json!([{"role": "user", "content": [{"type": "text", "text": "abcd"}]}]);
        assert_eq!(count_tokens(&messages), 4);
    }

    #[test]
    fn base64_matches_rfc4648() {
        let table = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ];
        for (input, want) in table {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }
}
