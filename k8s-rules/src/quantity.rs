//! Kubernetes resource quantities (`500m`, `128Mi`, `1.5`, `2e3`), parsed exactly.
//!
//! Grammar (from `k8s.io/apimachinery/pkg/api/resource`):
//! `<signedNumber><suffix>` where the number is `digits`, `digits.digits`, `digits.` or
//! `.digits`, and the suffix is a binary SI suffix (`Ki` … `Ei`), a decimal SI suffix
//! (`n`, `u`, `m`, none, `k`, `M` … `E`) or a decimal exponent (`e3`, `E-2`).

use std::cmp::Ordering;
use std::fmt;

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, kept exact for comparisons.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError;

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    }
}

impl Quantity {
    /// Parses a quantity string.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_len);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(ParseError);
        }
        let digits = format!("{whole}{frac}");
        let digits = digits.trim_start_matches('0');
        // More significant digits than any real quantity carries: refuse rather than round.
        if digits.len() > 30 {
            return Err(ParseError);
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| ParseError)?
        };
        let mut exp10 = -(frac.len() as i32);
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            other => {
                let exp = other
                    .strip_prefix(['e', 'E'])
                    .filter(|e| {
                        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
                        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) && e.len() <= 4
                    })
                    .ok_or(ParseError)?;
                exp10 += exp.parse::<i32>().map_err(|_| ParseError)?;
            }
        }
        Ok(Self {
            negative: negative && mantissa != 0,
            mantissa,
            exp10,
            exp2,
        })
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value as a float (for messages and rough use only).
    pub fn as_f64(&self) -> f64 {
        let v = self.mantissa as f64 * 10f64.powi(self.exp10) * 2f64.powi(self.exp2 as i32);
        if self.negative { -v } else { v }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => return Ordering::Greater,
            (true, false) => return Ordering::Less,
            _ => {}
        }
        let magnitude = compare_magnitude(self, other);
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

/// Compares `m1·10^a·2^b` with `m2·10^c·2^d` exactly, using arbitrary-size decimal digit
/// vectors (values are small enough that this stays cheap).
fn compare_magnitude(x: &Quantity, y: &Quantity) -> Ordering {
    let low = x.exp10.min(y.exp10);
    let scaled = |q: &Quantity| {
        let mut n = Big::from(q.mantissa);
        n.mul_pow(10, (q.exp10 - low) as u32);
        n.mul_pow(2, q.exp2);
        n
    };
    scaled(x).cmp(&scaled(y))
}

/// Little-endian base-10^9 unsigned integer: just enough for exact comparisons.
#[derive(PartialEq, Eq)]
struct Big(Vec<u64>);

const LIMB: u64 = 1_000_000_000;

impl From<u128> for Big {
    fn from(mut n: u128) -> Self {
        let mut limbs = Vec::new();
        while n > 0 {
            limbs.push((n % LIMB as u128) as u64);
            n /= LIMB as u128;
        }
        Big(limbs)
    }
}

impl Big {
    fn mul_pow(&mut self, base: u64, times: u32) {
        for _ in 0..times {
            let mut carry = 0;
            for limb in &mut self.0 {
                let v = *limb * base + carry;
                *limb = v % LIMB;
                carry = v / LIMB;
            }
            if carry > 0 {
                self.0.push(carry);
            }
        }
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Big {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap_or_else(|_| panic!("{s} should parse"))
    }

    #[test]
    fn parses_the_grammar() {
        for ok in [
            "1", "0", "500m", "0.5", ".5", "5.", "128Mi", "1Gi", "2e3", "1E-2", "+1", "-1", "100n",
            "1u", "3k", "1.5G", "1Ei",
        ] {
            q(ok);
        }
        for bad in [
            "", "m", "1.2.3", "1KB", "1mi", "abc", "1 Gi", "--1", "1e", "1ee3", "Mi", ".",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn compares_exactly() {
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1e3"));
        assert!(q("128Mi") > q("128M"));
        assert!(q("50m") < q("1"));
        assert!(q("1Ei") > q("1E"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert_eq!(q("0"), q("-0"));
        assert!(q("999999999999n") < q("1000"));
        assert!(q("1000000000001n") > q("1000"));
        assert!(q("32Mi") < q("128Mi"));
    }
}
