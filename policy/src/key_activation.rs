//! Activation times in key files, so a rotated key never logs anyone out.
//!
//! Sidecar replicas see a Secret update up to a kubelet sync period apart. A key that signed or
//! sealed at once on the first updated pod would produce tokens and ciphertexts the other pods
//! cannot check yet. So the operator publishes a new key first for verification and decryption
//! only, and marks when it may start signing and sealing: the line before the key's entry (a PEM
//! block in `signing.pem`, a `<kid>:<base64>` line in `encryption.keys`) reads
//! `# active-at: <RFC 3339 time>`. Every sidecar accepts every key at once and signs/seals with
//! [`active_index`]'s pick, so all of them switch together once the time has passed.
//!
//! Files without markers (user-managed keys) keep the plain rule: the first key signs and seals.

/// Start of an activation marker line.
pub const MARKER: &str = "# active-at:";

/// The marker line saying that the next key becomes active at `unix` (seconds).
pub fn marker_line(unix: i64) -> String {
    let time = jiff::Timestamp::from_second(unix)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string();
    format!("{MARKER} {time}")
}

/// The activation time (Unix seconds) a marker line announces; `None` for any other line.
pub fn parse_marker_line(line: &str) -> Option<Result<i64, String>> {
    let rest = line.trim().strip_prefix(MARKER)?;
    Some(
        rest.trim()
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| format!("{MARKER} {:?} is not an RFC 3339 time: {e}", rest.trim())),
    )
}

/// Which key signs or seals at `now`: the key with the latest activation time that has passed
/// (a key without a time counts as active since ever; among equal times the earlier entry wins).
/// When none has passed yet (a clock behind the operator's), the one that activates first.
/// `None` only for an empty list.
pub fn active_index(active_at: &[Option<i64>], now: i64) -> Option<usize> {
    let time = |i: usize| active_at[i].unwrap_or(i64::MIN);
    let active =
        (0..active_at.len())
            .filter(|&i| time(i) <= now)
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if time(b) >= time(i) => Some(b),
                _ => Some(i),
            });
    active.or_else(|| (0..active_at.len()).min_by_key(|&i| time(i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_lines_round_trip() {
        let line = marker_line(1_764_590_520);
        assert_eq!(line, "# active-at: 2025-12-01T12:02:00Z");
        assert_eq!(parse_marker_line(&line), Some(Ok(1_764_590_520)));
        assert_eq!(parse_marker_line("# a comment"), None);
        assert!(matches!(
            parse_marker_line("# active-at: soon"),
            Some(Err(_))
        ));
    }

    #[test]
    fn newest_active_key_wins_and_pending_keys_wait() {
        // Newest first: a pending key, the current one, a retired one.
        let keys = [Some(200), Some(100), Some(0)];
        assert_eq!(active_index(&keys, 150), Some(1));
        assert_eq!(active_index(&keys, 200), Some(0));
        // Unmarked files: the first key.
        assert_eq!(active_index(&[None, None], 5), Some(0));
        // Nothing active yet: the earliest.
        assert_eq!(active_index(&[Some(300), Some(200)], 100), Some(1));
        assert_eq!(active_index(&[], 0), None);
    }
}
