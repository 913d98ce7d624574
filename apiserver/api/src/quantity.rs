//! Resource quantities (`100m`, `2`, `128Mi`, `1G`, `1e3`) as Kubernetes writes them:
//! parsing into an exact fixed-point value, so the apiserver validates them, the
//! scheduler adds up requests against allocatable, and the agent sets container limits,
//! all with the same arithmetic and no floating point.

use std::fmt;

/// One nano-unit per unit: the finest precision kept (kube keeps milli in canonical
/// form; finer digits are rounded up, as kube rounds `0.1m` up to `1m`).
const NANOS_PER_UNIT: i128 = 1_000_000_000;
/// Longest quantity string accepted: a bound on parsing work and on the digits kept.
pub const QUANTITY_MAX_LEN: usize = 64;
/// Kube caps quantities at 2^63-1 units; we refuse larger ones instead of capping.
const MAX_UNITS: i128 = i64::MAX as i128;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity is too large (more than 2^63-1 units)")]
    TooLarge,
}

/// How the quantity was written; kept so it can be written back in the same style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Ki, Mi, Gi, Ti, Pi, Ei.
    BinarySI,
    /// m, "", k, M, G, T, P, E.
    DecimalSI,
    /// e3, E-2.
    DecimalExponent,
}

/// An exact quantity, in nano-units.
/// Compare values with `millis()`/`value()`; `==` also compares how it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Parses a quantity string.
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() || s.len() > QUANTITY_MAX_LEN {
        return Err(QuantityError::Syntax);
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(QuantityError::Syntax);
    }
    // (power of ten, power of two) the suffix multiplies by.
    let (exp10, exp2, format): (i32, u32, Format) = match suffix {
        "" => (0, 0, Format::DecimalSI),
        "n" => (-9, 0, Format::DecimalSI),
        "u" => (-6, 0, Format::DecimalSI),
        "m" => (-3, 0, Format::DecimalSI),
        "k" => (3, 0, Format::DecimalSI),
        "M" => (6, 0, Format::DecimalSI),
        "G" => (9, 0, Format::DecimalSI),
        "T" => (12, 0, Format::DecimalSI),
        "P" => (15, 0, Format::DecimalSI),
        "E" => (18, 0, Format::DecimalSI),
        "Ki" => (0, 10, Format::BinarySI),
        "Mi" => (0, 20, Format::BinarySI),
        "Gi" => (0, 30, Format::BinarySI),
        "Ti" => (0, 40, Format::BinarySI),
        "Pi" => (0, 50, Format::BinarySI),
        "Ei" => (0, 60, Format::BinarySI),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or(QuantityError::Suffix)?;
            let digits = exp.trim_start_matches(['+', '-']);
            if digits.is_empty()
                || exp.len() - digits.len() > 1
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(QuantityError::Suffix);
            }
            let e: i32 = exp.parse().map_err(|_| QuantityError::TooLarge)?;
            if e.abs() > 40 {
                return Err(QuantityError::TooLarge);
            }
            (e, 0, Format::DecimalExponent)
        }
    };
    // digits = int_part frac_part as one integer; value = digits * 10^(exp10 - frac_len) * 2^exp2.
    let digits_str = format!("{int_part}{frac_part}");
    let digits_str = digits_str.trim_start_matches('0');
    if digits_str.len() > 38 {
        return Err(QuantityError::TooLarge);
    }
    let digits: i128 = if digits_str.is_empty() {
        0
    } else {
        digits_str.parse().map_err(|_| QuantityError::TooLarge)?
    };
    // Scale to nano-units: multiply by 10^(exp10 - frac_len + 9).
    let shift = exp10 - frac_part.len() as i32 + 9;
    let mut nanos = digits;
    if shift >= 0 {
        for _ in 0..shift {
            nanos = nanos.checked_mul(10).ok_or(QuantityError::TooLarge)?;
        }
    } else {
        let mut divisor: i128 = 1;
        for _ in 0..(-shift) {
            divisor = divisor.saturating_mul(10);
        }
        // Round up: precision finer than a nano-unit is never lost downwards.
        nanos = (nanos + divisor - 1) / divisor;
    }
    nanos = nanos
        .checked_mul(1i128 << exp2)
        .ok_or(QuantityError::TooLarge)?;
    if nanos / NANOS_PER_UNIT > MAX_UNITS {
        return Err(QuantityError::TooLarge);
    }
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
        format,
    })
}

/// Integer division rounding toward positive infinity.
fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

impl Quantity {
    /// The quantity in milli-units, rounded up (CPU: `100m` → 100, `1` → 1000).
    pub fn millis(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT / 1000)
    }

    /// The quantity in whole units, rounded up (memory: `128Mi` → 134217728).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANOS_PER_UNIT)
    }

    /// The quantity in nano-units (exact up to nano precision).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// How it was written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Builds a quantity from milli-units (e.g. a sum of CPU requests).
    pub fn from_millis(millis: i128) -> Quantity {
        Quantity {
            nanos: millis.saturating_mul(NANOS_PER_UNIT / 1000),
            format: Format::DecimalSI,
        }
    }

    /// Builds a quantity from whole units in the given format (e.g. bytes as BinarySI).
    pub fn from_value(value: i128, format: Format) -> Quantity {
        Quantity {
            nanos: value.saturating_mul(NANOS_PER_UNIT),
            format,
        }
    }

    /// Whether this quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }
}

/// Writes the canonical form kube would: the largest suffix of the quantity's format that
/// keeps it exact (`1500m`, `128Mi`, `2`), or milli-units when it has a fraction.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micro_rest = self.nanos % (NANOS_PER_UNIT / 1000);
        let millis = self.millis();
        if micro_rest != 0 || millis % 1000 != 0 {
            return write!(f, "{millis}m");
        }
        let units = self.nanos / NANOS_PER_UNIT;
        if units == 0 {
            return write!(f, "0");
        }
        match self.format {
            Format::BinarySI => {
                let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut v = units;
                let mut i = 0;
                while i + 1 < suffixes.len() && v % 1024 == 0 {
                    v /= 1024;
                    i += 1;
                }
                write!(f, "{v}{}", suffixes[i])
            }
            Format::DecimalSI | Format::DecimalExponent => {
                let suffixes = ["", "k", "M", "G", "T", "P", "E"];
                let mut v = units;
                let mut i = 0;
                while i + 1 < suffixes.len() && v % 1000 == 0 {
                    v /= 1000;
                    i += 1;
                }
                write!(f, "{v}{}", suffixes[i])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_forms() {
        assert_eq!(parse_quantity("100m").unwrap().millis(), 100);
        assert_eq!(parse_quantity("2").unwrap().millis(), 2000);
        assert_eq!(parse_quantity("0.5").unwrap().millis(), 500);
        assert_eq!(parse_quantity(".5").unwrap().millis(), 500);
        assert_eq!(parse_quantity("128Mi").unwrap().value(), 128 << 20);
        assert_eq!(parse_quantity("1G").unwrap().value(), 1_000_000_000);
        assert_eq!(parse_quantity("1e3").unwrap().value(), 1000);
        assert_eq!(parse_quantity("1E3").unwrap().value(), 1000);
        assert_eq!(
            parse_quantity("1E").unwrap().value(),
            1_000_000_000_000_000_000
        );
        assert_eq!(parse_quantity("1.5Gi").unwrap().value(), 1536 << 20);
        assert_eq!(parse_quantity("+4k").unwrap().value(), 4000);
        assert_eq!(parse_quantity("-1").unwrap().millis(), -1000);
        assert!(parse_quantity("-1").unwrap().is_negative());
        assert_eq!(parse_quantity("0").unwrap().value(), 0);
        assert_eq!(parse_quantity("5e-3").unwrap().millis(), 5);
    }

    #[test]
    fn rounding_is_upwards() {
        assert_eq!(parse_quantity("0.1m").unwrap().millis(), 1);
        assert_eq!(parse_quantity("1500m").unwrap().value(), 2);
        assert_eq!(parse_quantity("1n").unwrap().nanos(), 1);
        assert_eq!(parse_quantity("0.1n").unwrap().nanos(), 1);
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "", "abc", "1.2.3", "1Xi", "1 Gi", "Gi", "1mm", "1e", "1e+-3", "--1", ".", "1ki",
            "1e3.5",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_quantity("1e300"), Err(QuantityError::TooLarge));
        assert_eq!(parse_quantity("9999999999Ei"), Err(QuantityError::TooLarge));
        assert!(parse_quantity(&"1".repeat(QUANTITY_MAX_LEN + 1)).is_err());
    }

    #[test]
    fn canonical_display() {
        for (input, canonical) in [
            ("1.5", "1500m"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("2048Ki", "2Mi"),
            ("1000", "1k"),
            ("100m", "100m"),
            ("0", "0"),
        ] {
            assert_eq!(
                parse_quantity(input).unwrap().to_string(),
                canonical,
                "{input}"
            );
        }
        assert_eq!(Quantity::from_millis(250).to_string(), "250m");
        assert_eq!(
            Quantity::from_value(1 << 30, Format::BinarySI).to_string(),
            "1Gi"
        );
    }

    #[test]
    fn ordering_compares_values() {
        assert!(parse_quantity("100m").unwrap().millis() < parse_quantity("1").unwrap().millis());
        assert!(parse_quantity("1Gi").unwrap().value() > parse_quantity("1G").unwrap().value());
    }
}
