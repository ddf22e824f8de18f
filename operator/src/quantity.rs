//! Kubernetes resource quantities (`50m`, `128Mi`, `0.5`, `1e3`), read well enough to refuse
//! sidecar resources the API server would refuse: a malformed quantity, or a request above its
//! limit (every injected pod would be rejected).

/// The value of a quantity, or `None` when the API server would not parse it.
pub fn parse(s: &str) -> Option<f64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'-' => (-1.0, &s[1..]),
        b'+' => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(sign * value * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_the_quantity_grammar() {
        assert_eq!(parse("50m"), Some(0.05));
        assert_eq!(parse("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse(".5"), Some(0.5));
        assert_eq!(parse("-1"), Some(-1.0));
        for bad in ["", "128MB", "1.2.3", "Mi", "1e", "1 Gi", "abc", "."] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
