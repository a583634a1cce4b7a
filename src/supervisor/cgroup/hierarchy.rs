//! Where the supervisor's own cgroups are, read from `/proc/self/mountinfo` and
//! `/proc/self/cgroup`: its folder in the unified (v2) hierarchy, or, on a host
//! with v1 hierarchies, its folder in each of those of the controllers jobs use
//! (`pids`, `memory`, `cpu`).

use std::path::{Path, PathBuf};

/// A v1 controller a job's cgroup may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// `pids`: the job's processes, found to be killed.
    Pids,
    /// `memory`: its memory limit.
    Memory,
    /// `cpu`: its CPU quota.
    Cpu,
}

impl Controller {
    /// Its name, as mount options and `/proc/self/cgroup` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
        }
    }

    const ALL: [Controller; 3] = [Controller::Pids, Controller::Memory, Controller::Cpu];
}

/// The supervisor's own cgroup folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchies {
    /// Its folder in the unified hierarchy, where every controller lives.
    V2(PathBuf),
    /// Its folder in the v1 hierarchy of each controller the host mounts.
    V1(Vec<(Controller, PathBuf)>),
}

impl Hierarchies {
    /// Its folder in the hierarchy of `controller`.
    pub fn folder_of(&self, controller: Controller) -> Option<&Path> {
        match self {
            Hierarchies::V2(dir) => Some(dir),
            Hierarchies::V1(folders) => folders
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, dir)| dir.as_path()),
        }
    }

    /// Every folder.
    pub fn folders(&self) -> Vec<&Path> {
        match self {
            Hierarchies::V2(dir) => vec![dir],
            Hierarchies::V1(folders) => folders.iter().map(|(_, dir)| dir.as_path()).collect(),
        }
    }

    /// The folders `path` below these.
    pub fn join(&self, path: &str) -> Hierarchies {
        match self {
            Hierarchies::V2(dir) => Hierarchies::V2(dir.join(path)),
            Hierarchies::V1(folders) => Hierarchies::V1(
                folders
                    .iter()
                    .map(|(c, dir)| (*c, dir.join(path)))
                    .collect(),
            ),
        }
    }

    /// This process's cgroup folders; `None` where the host mounts no cgroup
    /// hierarchy this process can find itself in.
    pub fn own() -> Option<Hierarchies> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        Self::parse(&mounts, &own)
    }

    /// The folders `mounts` (a `mountinfo`) and `own` (a `/proc/PID/cgroup`)
    /// give: the v1 hierarchies of the controllers jobs use when the host has
    /// any, else the unified hierarchy.
    pub fn parse(mounts: &str, own: &str) -> Option<Hierarchies> {
        let mounts: Vec<Mount<'_>> = mounts.lines().filter_map(Mount::parse).collect();
        let v1: Vec<(Controller, PathBuf)> = Controller::ALL
            .into_iter()
            .filter_map(|controller| {
                let mount = mounts.iter().find(|m| {
                    m.kind == "cgroup" && m.options.split(',').any(|o| o == controller.name())
                })?;
                Some((controller, mount.folder(own_path(own, controller.name())?)?))
            })
            .collect();
        if !v1.is_empty() {
            return Some(Hierarchies::V1(v1));
        }
        let unified = mounts.iter().find(|m| m.kind == "cgroup2")?;
        Some(Hierarchies::V2(unified.folder(own_path(own, "")?)?))
    }
}

/// One line of a `mountinfo`, as far as it matters here.
struct Mount<'a> {
    /// The folder of the hierarchy mounted (its root, for a namespaced view).
    root: &'a str,
    /// Where it is mounted.
    point: &'a str,
    /// The file system type.
    kind: &'a str,
    /// Its super options (a v1 hierarchy's controllers among them).
    options: &'a str,
}

impl<'a> Mount<'a> {
    /// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`.
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let point = fields.next()?;
        let mut fields = after.split(' ');
        let kind = fields.next()?;
        let options = fields.nth(1)?;
        Some(Mount {
            root,
            point,
            kind,
            options,
        })
    }

    /// Where the cgroup at `path` (as `/proc/self/cgroup` names it) is under
    /// this mount; `None` when the mount does not reach it.
    fn folder(&self, path: &str) -> Option<PathBuf> {
        let below = path.strip_prefix(self.root.trim_end_matches('/'))?;
        if !(below.is_empty() || below.starts_with('/')) {
            return None;
        }
        let below = below.trim_start_matches('/');
        Some(Path::new(self.point).join(below))
    }
}

/// This process's cgroup in the hierarchy of `controller` (`""`: the unified one).
fn own_path<'a>(own: &'a str, controller: &str) -> Option<&'a str> {
    own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    const V1_OWN: &str = "\
9:pids:/docker/abc
4:memory:/docker/abc/inner
2:cpu,cpuacct:/
3:cpuset:/
0::/";

    #[test]
    fn v1_hierarchies_are_found_per_controller_below_their_mounts_roots() {
        assert_eq!(
            Hierarchies::parse(V1_MOUNTS, V1_OWN),
            Some(Hierarchies::V1(vec![
                (Controller::Pids, "/sys/fs/cgroup/pids/docker/abc".into()),
                (Controller::Memory, "/sys/fs/cgroup/memory/inner".into()),
                (Controller::Cpu, "/sys/fs/cgroup/cpu,cpuacct".into()),
            ]))
        );
    }

    #[test]
    fn a_controller_without_a_hierarchy_or_outside_its_mount_is_left_out() {
        let own = "9:pids:/minefield\n4:memory:/docker/abc\n0::/";
        let mounts: String = V1_MOUNTS
            .lines()
            .filter(|line| !line.contains("cpuacct"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(" / /sys/fs/cgroup/pids", " /mine /sys/fs/cgroup/pids");
        assert_eq!(
            Hierarchies::parse(&mounts, own),
            Some(Hierarchies::V1(vec![(
                Controller::Memory,
                "/sys/fs/cgroup/memory".into()
            )]))
        );
    }

    #[test]
    fn the_unified_hierarchy_serves_where_no_v1_controller_is_mounted() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            Hierarchies::parse(mounts, "0::/system.slice/worker.service\n"),
            Some(Hierarchies::V2(
                "/sys/fs/cgroup/system.slice/worker.service".into()
            ))
        );
        assert_eq!(Hierarchies::parse("", "0::/\n"), None);
    }
}
