//! What a job's limits write into its cgroup, worked out without touching it:
//! `memory.max` and `cpu.max` in the unified hierarchy; in v1 hierarchies,
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where swap is
//! accounted, so that swap does not stretch the limit) and
//! `cpu.cfs_period_us` / `cpu.cfs_quota_us`.

use super::hierarchy::Controller;
use crate::supervisor::wire::JobLimits;

/// Period of the CPU quota, µs (the kernel's default period).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Shortest quota the kernel takes, µs.
const MIN_QUOTA_US: u64 = 1_000;
/// Longest quota asked for, µs: more cores than any host has, and well within
/// the kernel's bound.
const MAX_QUOTA_US: u64 = 1 << 40;

/// The hierarchy a job's cgroup is in, as far as its files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// v1 hierarchies; `memsw`: the memory controller accounts swap.
    V1 {
        /// `memory.memsw.limit_in_bytes` is there.
        memsw: bool,
    },
    /// The unified hierarchy.
    V2,
}

/// One file to write in a job's cgroup (in its controller's hierarchy, on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Whose file it is.
    pub controller: Controller,
    /// The file's name.
    pub file: &'static str,
    /// What to write.
    pub value: String,
}

impl JobLimits {
    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<Controller> {
        let memory = self.memory_mb.map(|_| Controller::Memory);
        let cpu = self.cpus.map(|_| Controller::Cpu);
        memory.into_iter().chain(cpu).collect()
    }

    /// The files to write, in order, to set these limits.
    pub fn settings(&self, version: Version) -> Vec<Setting> {
        let setting = |controller, file, value: String| Setting {
            controller,
            file,
            value,
        };
        let mut settings = Vec::new();
        if let Some(mb) = self.memory_mb {
            let bytes = memory_bytes(mb).to_string();
            match version {
                Version::V2 => settings.push(setting(Controller::Memory, "memory.max", bytes)),
                Version::V1 { memsw } => {
                    // The memory limit first: memory and swap together may
                    // never be below it.
                    settings.push(setting(
                        Controller::Memory,
                        "memory.limit_in_bytes",
                        bytes.clone(),
                    ));
                    if memsw {
                        settings.push(setting(
                            Controller::Memory,
                            "memory.memsw.limit_in_bytes",
                            bytes,
                        ));
                    }
                }
            }
        }
        if let Some(cpus) = self.cpus {
            let quota = cpu_quota_us(cpus);
            match version {
                Version::V2 => settings.push(setting(
                    Controller::Cpu,
                    "cpu.max",
                    format!("{quota} {CPU_PERIOD_US}"),
                )),
                Version::V1 { .. } => {
                    settings.push(setting(
                        Controller::Cpu,
                        "cpu.cfs_period_us",
                        CPU_PERIOD_US.to_string(),
                    ));
                    settings.push(setting(
                        Controller::Cpu,
                        "cpu.cfs_quota_us",
                        quota.to_string(),
                    ));
                }
            }
        }
        settings
    }
}

/// The CPU time, µs per [`CPU_PERIOD_US`], that `cpus` cores give, rounded up
/// and kept within what the kernel takes.
pub fn cpu_quota_us(cpus: f64) -> u64 {
    // `as` saturates: a huge or infinite product is the longest quota.
    ((cpus * CPU_PERIOD_US as f64).ceil() as u64).clamp(MIN_QUOTA_US, MAX_QUOTA_US)
}

/// `mb` MiB in bytes.
pub fn memory_bytes(mb: u64) -> u64 {
    mb.saturating_mul(1024 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(limits: JobLimits, version: Version) -> Vec<(Controller, &'static str, String)> {
        limits
            .settings(version)
            .into_iter()
            .map(|s| (s.controller, s.file, s.value))
            .collect()
    }

    #[test]
    fn cpus_become_a_quota_per_period_rounded_up_within_the_kernels_bounds() {
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(1.5), 150_000);
        assert_eq!(cpu_quota_us(0.333_333), 33_334);
        assert_eq!(cpu_quota_us(0.001), MIN_QUOTA_US);
        assert_eq!(cpu_quota_us(1e300), MAX_QUOTA_US);
        assert_eq!(memory_bytes(64), 67_108_864);
        assert_eq!(memory_bytes(u64::MAX), u64::MAX);
    }

    #[test]
    fn v2_writes_memory_max_and_cpu_max() {
        let limits = JobLimits {
            cpus: Some(0.5),
            memory_mb: Some(64),
        };
        assert_eq!(
            written(limits, Version::V2),
            [
                (Controller::Memory, "memory.max", "67108864".into()),
                (Controller::Cpu, "cpu.max", "50000 100000".into()),
            ]
        );
        assert_eq!(limits.controllers(), [Controller::Memory, Controller::Cpu]);
    }

    #[test]
    fn v1_writes_the_memory_limit_before_memsw_and_the_period_before_the_quota() {
        let limits = JobLimits {
            cpus: Some(2.0),
            memory_mb: Some(1),
        };
        assert_eq!(
            written(limits, Version::V1 { memsw: true }),
            [
                (
                    Controller::Memory,
                    "memory.limit_in_bytes",
                    "1048576".into()
                ),
                (
                    Controller::Memory,
                    "memory.memsw.limit_in_bytes",
                    "1048576".into()
                ),
                (Controller::Cpu, "cpu.cfs_period_us", "100000".into()),
                (Controller::Cpu, "cpu.cfs_quota_us", "200000".into()),
            ]
        );
        let memory_only = JobLimits {
            cpus: None,
            memory_mb: Some(1),
        };
        assert_eq!(
            written(memory_only, Version::V1 { memsw: false }),
            [(
                Controller::Memory,
                "memory.limit_in_bytes",
                "1048576".into()
            )]
        );
        assert_eq!(memory_only.controllers(), [Controller::Memory]);
        assert!(JobLimits::default().settings(Version::V2).is_empty());
    }
}
