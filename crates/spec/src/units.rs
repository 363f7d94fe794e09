//! Quantity units of the spec language: durations (`500ms`, `1m30s`, bare
//! integer = seconds), memory (`256Mi`, `1G`, plain bytes) and CPU (`0.5`,
//! `500m`), with exact decimal parsing (no float rounding) and the inverse
//! human-readable formatting used by displays such as `diff`.

use thiserror::Error;

/// A quantity that could not be parsed; the message says what is valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct UnitError(pub String);

const MS_PER_SECOND: u128 = 1_000;
const MS_PER_MINUTE: u128 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u128 = 60 * MS_PER_MINUTE;

/// An unsigned decimal `int.frac`, kept exact.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    int: u128,
    frac: u128,
    frac_digits: u32,
}

impl Decimal {
    /// Parses `123`, `1.5`, `.5`, `2.`; no sign, no exponent.
    fn parse(s: &str) -> Option<Decimal> {
        let (int_s, frac_s) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if int_s.is_empty() && frac_s.is_empty() {
            return None;
        }
        if !int_s.bytes().all(|b| b.is_ascii_digit()) || !frac_s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Trailing zeros of the fraction carry no value; dropping them keeps
        // the arithmetic small.
        let frac_s = frac_s.trim_end_matches('0');
        let int_s = int_s.trim_start_matches('0');
        if int_s.len() > 30 || frac_s.len() > 18 {
            return None;
        }
        let int = if int_s.is_empty() { 0 } else { int_s.parse().ok()? };
        let frac = if frac_s.is_empty() { 0 } else { frac_s.parse().ok()? };
        Some(Decimal { int, frac, frac_digits: u32::try_from(frac_s.len()).ok()? })
    }

    /// `self * mult` if it is a whole number (`Err(true)`: not whole,
    /// `Err(false)`: overflow).
    fn times(self, mult: u128) -> Result<u128, bool> {
        let whole = self.int.checked_mul(mult).ok_or(false)?;
        let scale = 10u128.checked_pow(self.frac_digits).ok_or(false)?;
        let frac = self.frac.checked_mul(mult).ok_or(false)?;
        if frac % scale != 0 {
            return Err(true);
        }
        whole.checked_add(frac / scale).ok_or(false)
    }
}

fn duration_help(text: &str) -> UnitError {
    UnitError(format!(
        "invalid duration `{text}`: use a number with a unit ms, s, m or h, e.g. `500ms`, `2s`, `1m30s` (a bare number means seconds)"
    ))
}

/// Parses a duration into milliseconds: `500ms`, `2s`, `1.5s`, `1m`, `1h`,
/// `1m30s`, or a bare number of seconds (`5`, `0.5`).
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(duration_help(text));
    }
    if let Some(d) = Decimal::parse(s) {
        return finish_duration(text, d.times(MS_PER_SECOND));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let d = Decimal::parse(num).ok_or_else(|| duration_help(text))?;
        let mult = match unit {
            "ms" => 1,
            "s" => MS_PER_SECOND,
            "m" => MS_PER_MINUTE,
            "h" => MS_PER_HOUR,
            _ => return Err(duration_help(text)),
        };
        let part = match d.times(mult) {
            Ok(v) => v,
            Err(e) => return finish_duration(text, Err(e)),
        };
        total = match total.checked_add(part) {
            Some(t) => t,
            None => return finish_duration(text, Err(false)),
        };
        rest = next;
    }
    finish_duration(text, Ok(total))
}

fn finish_duration(text: &str, r: Result<u128, bool>) -> Result<u64, UnitError> {
    match r {
        Ok(v) => u64::try_from(v).map_err(|_| UnitError(format!("invalid duration `{text}`: too large"))),
        Err(true) => Err(UnitError(format!("invalid duration `{text}`: the smallest unit is 1ms"))),
        Err(false) => Err(UnitError(format!("invalid duration `{text}`: too large"))),
    }
}

/// Formats milliseconds as the shortest exact duration: `0s`, `500ms`,
/// `2s`, `1m30s`, `1h`, `1h1m1s1ms`. [`parse_duration_ms`] reads it back.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let ms128 = u128::from(ms);
    let parts = [
        (ms128 / MS_PER_HOUR, "h"),
        ((ms128 % MS_PER_HOUR) / MS_PER_MINUTE, "m"),
        ((ms128 % MS_PER_MINUTE) / MS_PER_SECOND, "s"),
        (ms128 % MS_PER_SECOND, "ms"),
    ];
    let mut out = String::new();
    for (value, unit) in parts {
        if value != 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

const MEMORY_UNITS: [(&str, u128); 9] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("K", 1_000),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

fn memory_help(text: &str, number: &str) -> UnitError {
    let example = match Decimal::parse(number) {
        Some(_) if !number.is_empty() => number,
        _ => "256",
    };
    UnitError(format!(
        "invalid memory quantity `{text}`: use a number with Ki, Mi, Gi, Ti (binary) or K, M, G, T (decimal), e.g. `{example}Mi`"
    ))
}

/// Parses a memory quantity into bytes: `256Mi`, `1.5Gi`, `1G`, `512K`,
/// or a plain number of bytes.
pub fn parse_memory_bytes(text: &str) -> Result<u64, UnitError> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let d = Decimal::parse(number).ok_or_else(|| memory_help(text, number))?;
    let mult = if suffix.is_empty() {
        1
    } else {
        MEMORY_UNITS.iter().find(|(u, _)| *u == suffix).map(|(_, m)| *m).ok_or_else(|| memory_help(text, number))?
    };
    match d.times(mult) {
        Ok(v) => u64::try_from(v).map_err(|_| UnitError(format!("invalid memory quantity `{text}`: too large"))),
        Err(true) => Err(UnitError(format!("invalid memory quantity `{text}`: not a whole number of bytes"))),
        Err(false) => Err(UnitError(format!("invalid memory quantity `{text}`: too large"))),
    }
}

/// Formats bytes with the largest exact unit, binary first: `256Mi`,
/// `1G`, `1500`, `0`. [`parse_memory_bytes`] reads it back.
pub fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    let b = u128::from(bytes);
    let binary = [("Ti", 1u128 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    let decimal = [("T", 1_000_000_000_000u128), ("G", 1_000_000_000), ("M", 1_000_000), ("K", 1_000)];
    for (unit, mult) in binary.into_iter().chain(decimal) {
        if b % mult == 0 {
            return format!("{}{unit}", b / mult);
        }
    }
    bytes.to_string()
}

fn cpu_help(text: &str) -> UnitError {
    UnitError(format!("invalid cpu quantity `{text}`: use cores (e.g. `0.5`, `2`) or millicores (e.g. `500m`)"))
}

/// Parses a CPU quantity into millicores: `0.5` → 500, `2` → 2000,
/// `500m` → 500.
pub fn parse_cpu_millis(text: &str) -> Result<u32, UnitError> {
    let s = text.trim();
    let (number, mult) = match s.strip_suffix('m') {
        Some(n) => (n, 1),
        None => (s, 1_000),
    };
    let d = Decimal::parse(number).ok_or_else(|| cpu_help(text))?;
    match d.times(mult) {
        Ok(v) => u32::try_from(v).map_err(|_| UnitError(format!("invalid cpu quantity `{text}`: too large"))),
        Err(true) => Err(UnitError(format!("invalid cpu quantity `{text}`: the smallest unit is 1m (0.001 cores)"))),
        Err(false) => Err(UnitError(format!("invalid cpu quantity `{text}`: too large"))),
    }
}

/// Formats millicores: whole cores as `2`, otherwise `500m`.
/// [`parse_cpu_millis`] reads it back.
pub fn format_cpu_millis(millis: u32) -> String {
    if millis % 1_000 == 0 {
        (millis / 1_000).to_string()
    } else {
        format!("{millis}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rejects_junk() {
        for bad in ["", ".", "-1", "1e3", "1.2.3", "a", " 1"] {
            assert!(Decimal::parse(bad).is_none(), "{bad:?}");
        }
    }
}
