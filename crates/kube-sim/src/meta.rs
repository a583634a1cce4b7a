//! Object metadata the server assigns: uids, timestamps, `generateName` suffixes.

use rand::Rng;

/// A random version-4 UUID, as the server gives every object in `metadata.uid`.
pub fn new_uid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let hex: String = b
        .iter()
        .enumerate()
        .map(|(i, byte)| match i {
            6 => format!("{:02x}", (byte & 0x0f) | 0x40),
            8 => format!("{:02x}", (byte & 0x3f) | 0x80),
            _ => format!("{byte:02x}"),
        })
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The five random characters the server appends to `metadata.generateName`
/// (from the same alphabet: no vowels, no look-alike digits).
pub fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The longest prefix kept from `generateName`: the server truncates it so that
/// prefix and suffix fit in 63 characters.
const MAX_GENERATED_PREFIX: usize = 58;

/// A name from `generateName`: the prefix (truncated as the server does) and a suffix.
pub fn generate_name(prefix: &str) -> String {
    let cut = prefix
        .char_indices()
        .nth(MAX_GENERATED_PREFIX)
        .map_or(prefix.len(), |(i, _)| i);
    format!("{}{}", &prefix[..cut], generated_suffix())
}

/// Now, as the RFC 3339 second-precision UTC text of `metav1.Time`.
pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// `t` as `metav1.Time` text.
pub fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses `metav1.Time` text.
pub fn parse_timestamp(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_has_the_uuid_v4_shape() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(new_uid(), uid);
    }

    #[test]
    fn generated_names_keep_the_prefix_and_fit() {
        let name = generate_name("job-");
        assert!(name.starts_with("job-"));
        assert_eq!(name.len(), 9);
        assert_eq!(generate_name(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn timestamps_round_trip_at_second_precision() {
        let text = now();
        assert!(text.ends_with('Z'));
        assert_eq!(timestamp(parse_timestamp(&text).expect("parses")), text);
    }
}
