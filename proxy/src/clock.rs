//! Wall-clock timestamps as RFC 3339 UTC text (Kubernetes conditions, Flux events, the audit
//! log, GPU snapshots, the access log), without a date crate: days to a civil date after Howard Hinnant's
//! `civil_from_days` (proleptic Gregorian). Times before 1970 print as the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-26T14:09:34Z` (seconds precision, as Kubernetes writes it).
pub fn rfc3339(t: SystemTime) -> String {
    let (date, _) = split(t);
    format!("{date}Z")
}

/// `2026-11-26T14:09:34.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let (date, millis) = split(t);
    format!("{date}.{millis:03}Z")
}

/// `2026-11-26T14:30:00Z` from Unix seconds.
pub fn rfc3339_unix(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// [`rfc3339_millis`] appended to `out`, without an allocation (the access log's lines).
pub fn write_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let mut put = |n: u64, width: usize, after: u8| {
        let at = out.len();
        out.resize(at + width, b'0');
        let mut n = n;
        for slot in out[at..].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.push(after);
    };
    put(y, 4, b'-');
    put(m, 2, b'-');
    put(d, 2, b'T');
    put(rem / 3600, 2, b':');
    put(rem % 3600 / 60, 2, b':');
    put(rem % 60, 2, b'.');
    put(u64::from(since.subsec_millis()), 3, b'Z');
}

/// `2026-11-26T14:09:34` and the milliseconds.
fn split(t: SystemTime) -> (String, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let date = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, since.subsec_millis())
}

/// Days since 1970-01-01 to a proleptic Gregorian date.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms);
        let cases = [
            (0, 0, "1970-01-01T00:00:00"),
            (951_782_400 + 3_723, 5, "2000-02-29T01:02:03"),
            (1_709_999_999, 999, "2024-03-09T15:59:59"),
            (1_795_704_659, 0, "2026-11-26T14:50:59"),
            (4_107_542_400, 0, "2100-03-01T00:00:00"),
        ];
        for (secs, ms, want) in cases {
            assert_eq!(rfc3339(at(secs, ms)), format!("{want}Z"), "{secs}s");
            assert_eq!(rfc3339_unix(secs), format!("{want}Z"), "{secs}s");
            assert_eq!(rfc3339_millis(at(secs, ms)), format!("{want}.{ms:03}Z"));
            let mut out = b"x".to_vec();
            write_rfc3339_millis(&mut out, at(secs, ms));
            assert_eq!(out, format!("x{want}.{ms:03}Z").into_bytes());
        }
        let before_1970 = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339(before_1970), "1970-01-01T00:00:00Z");
    }
}
