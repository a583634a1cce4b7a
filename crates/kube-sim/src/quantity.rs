//! Resource quantities (`500m`, `2`, `0.5`, `1Gi`, `512M`) as integers: CPU in
//! millicores, everything else in whole units.

/// `text` as a number of units, if it parses.
fn parse(text: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let text = text.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(s, f)| text.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

/// `text` in thousandths of a unit (CPU millicores), rounded up.
pub fn parse_millis(text: &str) -> Option<u64> {
    parse(text).map(|v| (v * 1000.0).round() as u64)
}

/// `text` in whole units (bytes, GPUs), rounded up.
pub fn parse_units(text: &str) -> Option<u64> {
    parse(text).map(|v| v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_forms() {
        assert_eq!(parse_millis("500m"), Some(500));
        assert_eq!(parse_millis("2"), Some(2000));
        assert_eq!(parse_millis("0.5"), Some(500));
        assert_eq!(parse_units("1Gi"), Some(1 << 30));
        assert_eq!(parse_units("512M"), Some(512_000_000));
        assert_eq!(parse_units("3"), Some(3));
        assert_eq!(parse_units("x"), None);
    }
}
