//! `POST /hooks/git` authentication: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the raw
//! body with the shared secret), GitLab's `X-Gitlab-Token`, or `Authorization: Bearer`.
//! Every comparison is constant-time.

use http::HeaderMap;
use sha2::{Digest, Sha256};

/// SHA-256's block size, the HMAC key block.
const BLOCK: usize = 64;

/// Why a webhook call was refused (never echoes what was sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookRefused {
    #[error("missing X-Hub-Signature-256, X-Gitlab-Token or Authorization: Bearer")]
    Missing,
    #[error("X-Hub-Signature-256 does not match the body")]
    BadSignature,
    /// Not `sha256=` and 64 hex digits (e.g. the bare hex, or a `sha1=` signature): nothing to
    /// compare, so not "does not match".
    #[error("X-Hub-Signature-256 is not in the expected format `sha256=<64 hex digits>`")]
    BadSignatureFormat,
    #[error("token does not match")]
    BadToken,
}

/// Checks a webhook call against `secret`.
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), HookRefused> {
    if let Some(sig) = headers.get("x-hub-signature-256") {
        let given = sig
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("sha256="))
            .and_then(hex_decode)
            .filter(|h| h.len() == 32)
            .ok_or(HookRefused::BadSignatureFormat)?;
        return if ct_eq(&hmac_sha256(secret, body), &given) {
            Ok(())
        } else {
            Err(HookRefused::BadSignature)
        };
    }
    let token = headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .or_else(|| {
            headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        })
        .ok_or(HookRefused::Missing)?;
    if ct_eq(token, secret) {
        Ok(())
    } else {
        Err(HookRefused::BadToken)
    }
}

/// HMAC-SHA256 (RFC 2104) over `sha2`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Equal contents, in time that depends on the lengths only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex (for signing test requests and docs examples).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn hmac_matches_rfc4231_vectors() {
        // Test case 2 (short key) and 6 (key longer than a block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn github_signature_is_checked_against_the_body() {
        // The example from GitHub's "Validating webhook deliveries" page.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[("x-hub-signature-256", sig)]);
        assert_eq!(
            verify(b"It's a Secret to Everybody", &h, b"Hello, World!"),
            Ok(())
        );
        assert_eq!(
            verify(b"It's a Secret to Everybody", &h, b"Hello, World?"),
            Err(HookRefused::BadSignature)
        );
        assert_eq!(
            verify(b"another secret", &h, b"Hello, World!"),
            Err(HookRefused::BadSignature)
        );
        // A value not in the `sha256=<hex>` format is named as such, not as a mismatch: the
        // bare hex of the right signature included.
        let bare = sig.trim_start_matches("sha256=");
        for bad in [
            bare,
            "sha1=abcd",
            "sha256=zz",
            "sha256=abc",
            "sha256=abcd",
            "",
        ] {
            let h = headers(&[("x-hub-signature-256", bad)]);
            assert_eq!(
                verify(b"It's a Secret to Everybody", &h, b"Hello, World!"),
                Err(HookRefused::BadSignatureFormat),
                "{bad:?}"
            );
        }
        assert!(HookRefused::BadSignatureFormat
            .to_string()
            .contains("`sha256=<64 hex digits>`"));
    }

    #[test]
    fn tokens_bearer_or_gitlab_and_nothing_else() {
        assert_eq!(
            verify(b"tok", &headers(&[("authorization", "Bearer tok")]), b""),
            Ok(())
        );
        assert_eq!(
            verify(b"tok", &headers(&[("x-gitlab-token", "tok")]), b""),
            Ok(())
        );
        assert_eq!(
            verify(b"tok", &headers(&[("authorization", "Bearer tok2")]), b""),
            Err(HookRefused::BadToken)
        );
        assert_eq!(
            verify(b"tok", &headers(&[("authorization", "Basic tok")]), b""),
            Err(HookRefused::Missing)
        );
        assert_eq!(
            verify(b"tok", &HeaderMap::new(), b""),
            Err(HookRefused::Missing)
        );
    }

    #[test]
    fn constant_time_compare_is_still_a_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
