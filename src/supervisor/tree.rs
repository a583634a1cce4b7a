//! Finding and killing the processes of a job's tree: its process group, and the
//! children of a subreaper (found in `/proc`, since the kernel here may not offer
//! `/proc/PID/task/TID/children`).

use crate::report::error_chain;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Sends `signal` to a process group; a group that is gone already is fine.
pub fn signal_group(group: Pid, signal: Signal) {
    if let Err(e) = killpg(group, signal)
        && e != Errno::ESRCH
    {
        tracing::warn!(pgid = group.as_raw(), ?signal, error = %error_chain(&e), "could not signal process group");
    }
}

/// The processes whose parent is `parent`, read from `/proc/PID/stat`.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(Pid::from_raw(*pid)) == Some(parent))
        .map(Pid::from_raw)
        .collect()
}

/// The parent of `pid`, or `None` when it is gone.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_parent(&stat)
}

/// The parent pid from the text of `/proc/PID/stat`: `PID (COMM) STATE PPID ...`,
/// where COMM may itself hold spaces and parentheses.
fn parse_parent(stat: &str) -> Option<Pid> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
}

/// Kills a job's group and every child of `reaper` (the job's subreaper, whose
/// children are the job's first process and whatever its tree left orphaned).
pub fn kill_tree(group: Pid, reaper: Pid) {
    signal_group(group, Signal::SIGKILL);
    kill_children(reaper);
}

/// Kills every child of `reaper`.
pub fn kill_children(reaper: Pid) {
    for child in children_of(reaper) {
        // ESRCH: it ended meanwhile.
        let _ = kill(child, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(
            parse_parent("42 (a) b) (c) S 7 42 42 0 -1"),
            Some(Pid::from_raw(7))
        );
        assert_eq!(parse_parent("garbage"), None);
    }

    #[test]
    fn children_of_this_process_include_a_child_it_spawned() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(children_of(Pid::this()).contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children_of(Pid::this()).contains(&pid));
    }
}
