//! Kubernetes names for what a job is made of: the pod's name, an RFC 1123
//! label derived from the job's site and id (the shared workload name, lower
//! case, with a hash of the exact site and id whenever that name had to be
//! changed or cut, so two jobs never share a pod), and label values made valid
//! the same way.

use crate::backend::container::workload::workload_name;

/// Longest RFC 1123 label (a pod name that is also a valid host name).
const MAX_LABEL: usize = 63;
/// Length of the hash suffix, in hex digits.
const HASH_DIGITS: usize = 10;

/// The pod name of a job: the same on every launch of the job, and different
/// for every other (site, job id).
pub fn pod_name(site: Option<&str>, job_id: &str) -> String {
    let readable = workload_name(site, job_id);
    let exact = [site.unwrap_or_default(), job_id].join("\0");
    valid_or_hashed(&readable, &exact, is_rfc1123_label)
}

/// `text` as a label value: itself when valid, else a valid form with a hash
/// of `text`, the same for the same text.
pub fn label_value(text: &str) -> String {
    valid_or_hashed(text, text, is_label_value)
}

/// `readable` when `valid` accepts it; else `readable` lower-cased, with every
/// other character a `-`, cut so that a hash of `exact` fits after it.
fn valid_or_hashed(readable: &str, exact: &str, valid: fn(&str) -> bool) -> String {
    if valid(readable) {
        return readable.to_owned();
    }
    let cleaned: String = readable
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LABEL - HASH_DIGITS - 1)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    let hash = format!("{:016x}", fnv1a(exact.as_bytes()));
    let hash = &hash[..HASH_DIGITS];
    if cleaned.is_empty() {
        format!("h{hash}")
    } else {
        format!("{cleaned}-{hash}")
    }
}

/// Whether `text` is an RFC 1123 label: 1 to 63 lower-case letters, digits and
/// `-`, starting and ending with a letter or digit.
pub fn is_rfc1123_label(text: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !text.is_empty()
        && text.len() <= MAX_LABEL
        && text.chars().all(|c| alnum(c) || c == '-')
        && text.starts_with(alnum)
        && text.ends_with(alnum)
}

/// Whether `text` is a DNS subdomain (the names of claims, secrets, service
/// accounts): RFC 1123 labels joined by `.`, at most 253 characters.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_rfc1123_label)
}

/// Whether `text` is a valid label value: empty, or up to 63 letters, digits,
/// `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn is_label_value(text: &str) -> bool {
    text.is_empty() || is_label_name(text)
}

/// Whether `text` is the name part of a label key (as a value, but not empty).
pub fn is_label_name(text: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !text.is_empty()
        && text.len() <= MAX_LABEL
        && text
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && text.starts_with(alnum)
        && text.ends_with(alnum)
}

/// Whether `text` is a label key: `NAME` or `PREFIX/NAME`, the prefix a DNS
/// subdomain.
pub fn is_label_key(text: &str) -> bool {
    match text.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty() && is_dns_subdomain(prefix) && is_label_name(name)
        }
        None => is_label_name(text),
    }
}

/// 64-bit FNV-1a: a hash that never changes between builds or platforms, so
/// names derived from it stay the same across restarts and upgrades.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_rfc1123_labels_unique_per_site_and_job() {
        assert_eq!(pod_name(Some("site-1"), "job-1"), "flare-site-1-job-1");
        let upper = pod_name(Some("Site"), "Job_1");
        assert!(is_rfc1123_label(&upper), "{upper}");
        assert!(upper.starts_with("flare-site-job-1-"), "{upper}");
        assert_ne!(
            upper,
            pod_name(Some("site"), "job_1"),
            "case tells jobs apart"
        );
        let long = pod_name(Some(&"s".repeat(300)), &"j".repeat(128));
        assert!(is_rfc1123_label(&long) && long.len() <= 63, "{long}");
        assert_ne!(long, pod_name(Some(&"s".repeat(300)), &"j".repeat(127)));
        assert_eq!(long, pod_name(Some(&"s".repeat(300)), &"j".repeat(128)));
        // Two sites whose readable parts are cut alike still differ.
        assert_ne!(
            pod_name(Some(&format!("{}a", "s".repeat(70))), "j"),
            pod_name(Some(&format!("{}b", "s".repeat(70))), "j")
        );
        let odd = pod_name(None, "-.-");
        assert!(is_rfc1123_label(&odd), "{odd}");
    }

    #[test]
    fn label_values_are_kept_when_valid_and_hashed_otherwise() {
        assert_eq!(label_value("job-1.a_b"), "job-1.a_b");
        assert_eq!(label_value(""), "");
        for text in ["-x", "a b", &"x".repeat(64), "ü"] {
            let value = label_value(text);
            assert!(
                is_label_value(&value) && !value.is_empty(),
                "{text:?} -> {value}"
            );
            assert_eq!(value, label_value(text));
        }
        assert!(is_label_key("nvflare-site"));
        assert!(is_label_key("example.com/team"));
        assert!(!is_label_key("Example.com/team"));
        assert!(!is_label_key("/team"));
        assert!(!is_label_key("a/b/c"));
        assert!(!is_label_value("x y"));
        assert!(is_dns_subdomain("data.claim-1"));
        assert!(!is_dns_subdomain("Data"));
    }
}
