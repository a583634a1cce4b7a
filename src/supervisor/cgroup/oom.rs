//! How many of a job's processes the out-of-memory killer killed, as its
//! cgroup counts them: the `oom_kill` field of `memory.events` (v2) or of
//! `memory.oom_control` (v1), which both hold one `NAME VALUE` pair a line.

/// The `oom_kill` count in the text of `memory.events` or `memory.oom_control`;
/// 0 when the field is not there (a kernel before 4.13 does not count).
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_kill_field_is_read_from_either_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kills(v1), 2);
        assert_eq!(oom_kills(v2), 1);
        assert_eq!(oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
        assert_eq!(oom_kills(""), 0);
    }
}
