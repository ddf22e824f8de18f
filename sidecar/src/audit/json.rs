//! JSON text written by hand into an audit line: strings escaped as `serde_json` escapes them
//! (`"`, `\`, control characters; nothing else), numbers without a formatter. Cheaper than
//! serialising a struct, and the writer thread does it for every request.

use std::time::Duration;

/// Appends `text` as a JSON string.
pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    if plain(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `bytes` as a JSON string when they are printable ASCII without a quote or backslash
/// (nothing to escape; checked eight bytes at a time), and says whether it did.
pub fn printable(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if crate::rpc::printable_run(bytes) != bytes.len() {
        return false;
    }
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
    true
}

/// `text` as a JSON string.
pub fn quoted(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    string(&mut out, text);
    out
}

/// Whether `bytes` need no escapes (eight bytes at a time).
fn plain(bytes: &[u8]) -> bool {
    crate::rpc::unescaped_run(bytes) == bytes.len()
}

/// Appends `n` in decimal digits.
pub fn unsigned(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `time` in milliseconds, rounded to the microsecond (`12.345`, `3.5`, `0.0`).
pub fn millis(out: &mut Vec<u8>, time: Duration) {
    // Whole seconds are whole microseconds: no 128-bit division.
    let micros = time
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((time.subsec_nanos() + 500) / 1000));
    match micros / 1000 {
        // Under 10 ms, the usual: one digit.
        whole @ 0..=9 => out.push(b'0' + whole as u8),
        whole => unsigned(out, whole),
    }
    out.push(b'.');
    let fraction = micros % 1000;
    let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
    let kept = if digits[2] != 0 {
        3
    } else if digits[1] != 0 {
        2
    } else {
        1
    };
    out.extend(digits[..kept].iter().map(|&d| b'0' + d as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut hostile: Vec<String> = [
            "",
            "plain",
            "quote \" and backslash \\ and slash /",
            "\"},\"outcome\":\"allowed\",\"x\":{\"",
            "line\nbreak\r\ttab\u{8}\u{c}",
            "\u{0}\u{1f}\u{7f}\u{80}\u{2028}\u{2029}\u{feff}",
            "é ſ K 日本 😀",
            "\\u0022 not an escape",
        ]
        .map(String::from)
        .to_vec();
        hostile.push((0u8..0x80).map(char::from).collect());
        for s in &hostile {
            let written = text(|out| string(out, s));
            assert_eq!(written, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&written).unwrap(), *s);
        }
    }

    #[test]
    fn printable_ascii_is_written_as_serde_json_writes_it_and_the_rest_is_left() {
        let mut all: Vec<u8> = (0u8..=255).collect();
        all.extend_from_slice(b"abc");
        for start in 0..all.len() {
            for end in start..all.len().min(start + 40) {
                let bytes = &all[start..end];
                let mut out = Vec::new();
                let written = printable(&mut out, bytes);
                let plain = bytes
                    .iter()
                    .all(|&b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\');
                assert_eq!(written, plain, "{bytes:?}");
                if written {
                    let text = std::str::from_utf8(bytes).unwrap();
                    assert_eq!(out, serde_json::to_vec(text).unwrap());
                } else {
                    assert!(out.is_empty());
                }
            }
        }
    }

    #[test]
    fn numbers_are_json_numbers_of_the_same_value() {
        for n in [0, 7, 10, 200, 65_535, u64::MAX] {
            assert_eq!(text(|out| unsigned(out, n)), n.to_string());
        }
        for (nanos, written) in [
            (0, "0.0"),
            (499, "0.0"),
            (500, "0.001"),
            (1_000_000, "1.0"),
            (1_500_000, "1.5"),
            (12_345_678, "12.346"),
            (3_020_000, "3.02"),
            (86_400_000_000_000, "86400000.0"),
        ] {
            let time = Duration::from_nanos(nanos);
            let json = text(|out| millis(out, time));
            assert_eq!(json, written);
            let value: f64 = serde_json::from_str(&json).unwrap();
            assert_eq!(value, (time.as_secs_f64() * 1e6).round() / 1e3);
        }
    }
}
