//! Unit values in the config: ratios (kept in parts per million), byte sizes and durations.
//!
//! Every form is read as an exact decimal, never through `f64`, so `0.1` is exactly 100000 ppm
//! and `1.5KiB` is exactly 1536 bytes. A value that is not a whole number of the base unit
//! (1 ppm, 1 byte, 1 ns) is rejected rather than rounded: a weight that silently rounds is a
//! weight nobody wrote.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ParseError;

/// Parts per million in a whole: 100%.
pub const PPM_MAX: u32 = 1_000_000;

/// A ratio from 0 to 100% in parts per million (1 ppm = 0.0001%).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppm(u32);

/// A non-negative decimal read exactly: `digits / 10^scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Decimal {
    digits: u128,
    scale: u32,
}

/// Why a decimal times a unit is not a whole number of the base unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inexact {
    TooLarge,
    Fraction,
}

/// Longest run of digits read; more would overflow `u128` once multiplied by a unit.
const MAX_DIGITS: usize = 24;

/// Size units, matched case-insensitively. Binary (1024) and SI (1000) forms are both spelled
/// out; a bare `k`/`m`/`g`/`t` is rejected because tools disagree on what it means.
const SIZE_UNITS: &[(&str, u128)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Duration units in nanoseconds (Go's `time.ParseDuration` set).
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a ratio: `10%`, `0.5%`, `100000ppm`, or a fraction of 1 (`0.1`, `0`, `1`).
pub fn parse_ppm(text: &str) -> Result<Ppm, ParseError> {
    let t = text.trim();
    let (number, per_unit) = if let Some(n) = t.strip_suffix('%') {
        (n, 10_000)
    } else if let Some(n) = t.strip_suffix("ppm") {
        (n, 1)
    } else {
        (t, u128::from(PPM_MAX))
    };
    let hint = "write a percentage (10%), a fraction of 1 (0.1) or ppm (100000ppm)";
    let decimal = Decimal::parse(number.trim(), text, hint)?;
    let ppm = match decimal.times(per_unit) {
        Ok(ppm) => ppm,
        Err(Inexact::Fraction) => {
            return Err(ParseError::new(format!(
                "{t} is finer than 1 ppm (0.0001%)"
            )));
        }
        Err(Inexact::TooLarge) => return Err(ParseError::new(format!("{t} is above 100%"))),
    };
    match u32::try_from(ppm).ok().and_then(Ppm::new) {
        Some(ppm) => Ok(ppm),
        // Suggest the percentage only where it is one a share can be.
        None if per_unit == u128::from(PPM_MAX)
            && decimal
                .times(10_000)
                .is_ok_and(|p| p <= u128::from(PPM_MAX)) =>
        {
            Err(ParseError::new(format!(
                "{t} is above 1; a bare number is a fraction of 1 (write {t}% for a percentage)"
            )))
        }
        None if per_unit == u128::from(PPM_MAX) => Err(ParseError::new(format!(
            "{t} is above 1 (a bare number is a fraction of 1) and a share is at most 100%"
        ))),
        None => Err(ParseError::new(format!("{t} is above 100%"))),
    }
}

/// Parses a byte size: `1024`, `64KiB`, `64MiB`, `1GiB`, `64Mi`, `64KB`, `64MB` (SI, 1000).
pub fn parse_size(text: &str) -> Result<u64, ParseError> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let hint = "write a byte count such as 65536, 64KiB or 64MB";
    let decimal = Decimal::parse(number.trim_end(), text, hint)?;
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "k" | "m" | "g" | "t") {
        let n = number.trim_end();
        return Err(ParseError::new(format!(
            "`{t}` is ambiguous: write {n}{u}iB (binary, 1024) or {n}{u}B (SI, 1000)",
            u = unit.to_ascii_uppercase()
        )));
    }
    let Some(&(_, per_unit)) = SIZE_UNITS.iter().find(|(name, _)| *name == lower) else {
        return Err(ParseError::new(format!(
            "`{t}` has an unknown unit `{unit}`; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
        )));
    };
    match decimal.times(per_unit) {
        Ok(bytes) => {
            u64::try_from(bytes).map_err(|_| ParseError::new(format!("`{t}` is too large")))
        }
        Err(Inexact::TooLarge) => Err(ParseError::new(format!("`{t}` is too large"))),
        Err(Inexact::Fraction) => Err(ParseError::new(format!(
            "`{t}` is not a whole number of bytes"
        ))),
    }
}

/// Parses a duration: `10s`, `500ms`, `2m`, `1h`, `1.5s`, `250us`, `1m30s`. A bare number other
/// than `0` is rejected: `10` could mean seconds or milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(ParseError::new(
            "empty duration; write e.g. 10s, 500ms, 2m or 1h",
        ));
    }
    if t.starts_with(|c: char| c.is_ascii_digit() || c == '.') && !t.contains(char::is_alphabetic) {
        return Err(ParseError::new(format!(
            "`{t}` has no unit; write {t}s or {t}ms"
        )));
    }
    let hint = "write a duration such as 10s, 500ms, 2m or 1h";
    let mut rest = t;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let unit_at = rest.find(|c: char| c.is_alphabetic()).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(unit_at);
        let unit_end = tail
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let decimal = Decimal::parse(number.trim(), text, hint)?;
        if unit.is_empty() {
            return Err(ParseError::new(format!(
                "`{t}` ends in a number without a unit; use ns, us, ms, s, m or h"
            )));
        }
        let Some(&(_, per_unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(ParseError::new(format!(
                "`{t}` has an unknown unit `{unit}`; use ns, us, ms, s, m or h"
            )));
        };
        let part = match decimal.times(per_unit) {
            Ok(part) => part,
            Err(Inexact::Fraction) => {
                return Err(ParseError::new(format!("`{t}` is finer than 1ns")));
            }
            Err(Inexact::TooLarge) => return Err(ParseError::new(format!("`{t}` is too long"))),
        };
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| ParseError::new(format!("`{t}` is too long")))?;
        rest = tail.trim_start();
    }
    nanos_to_duration(nanos).ok_or_else(|| ParseError::new(format!("`{t}` is too long")))
}

/// Formats a byte count in the largest binary unit that divides it: 65536 → `64KiB`.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, size)| bytes >= *size && bytes % size == 0)
        .map_or_else(
            || format!("{bytes}B"),
            |(name, size)| format!("{}{name}", bytes / size),
        )
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

// === impl Ppm ===

impl Ppm {
    pub const ZERO: Ppm = Ppm(0);
    pub const FULL: Ppm = Ppm(PPM_MAX);

    /// `None` above [`PPM_MAX`].
    pub const fn new(ppm: u32) -> Option<Ppm> {
        if ppm <= PPM_MAX {
            Some(Ppm(ppm))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The ratio as a fraction of 1, for display and metrics; routing uses [`Ppm::get`].
    pub fn as_fraction(self) -> f64 {
        f64::from(self.0) / f64::from(PPM_MAX)
    }
}

/// The shortest exact percentage: `10%`, `0.5%`, `12.3456%`.
impl fmt::Display for Ppm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 10_000;
        let frac = self.0 % 10_000;
        if frac == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{frac:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for Ppm {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        parse_ppm(text)
    }
}

// === impl Decimal ===

impl Decimal {
    /// Reads `12`, `12.5`, `.5` or `12.`; `text` and `hint` shape the error message.
    fn parse(number: &str, text: &str, hint: &str) -> Result<Decimal, ParseError> {
        let text = text.trim();
        if number.starts_with('-') {
            return Err(ParseError::new(format!("`{text}` is negative")));
        }
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return Err(ParseError::new(format!("`{text}` is not a number; {hint}")));
        }
        let significant = int.trim_start_matches('0').len() + frac.len();
        if significant > MAX_DIGITS {
            return Err(ParseError::new(format!("`{text}` has too many digits")));
        }
        let mut digits: u128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            digits = digits * 10 + u128::from(b - b'0');
        }
        let scale = u32::try_from(frac.len()).map_err(|_| ParseError::new("too many digits"))?;
        Ok(Decimal { digits, scale })
    }

    /// The value times `unit`, if that is a whole number.
    fn times(self, unit: u128) -> Result<u128, Inexact> {
        let scaled = self.digits.checked_mul(unit).ok_or(Inexact::TooLarge)?;
        let divisor = 10u128.checked_pow(self.scale).ok_or(Inexact::TooLarge)?;
        if scaled % divisor == 0 {
            Ok(scaled / divisor)
        } else {
            Err(Inexact::Fraction)
        }
    }
}

#[cfg(test)]
mod tests;
