//! The resource policy's options: `--resource-policy`, `--gpus`,
//! `--gpu-memory-gib`, `--ignore-host` and `--gpu-naming`, variables
//! `FLARE_RESOURCE_POLICY` and friends, and the `[resources]` table of the config
//! file, merged like every other option (flag > environment > file > default).

use super::options::{FileValueError, OptionValue, options, value_by_choice};
use super::values::BadValue;
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// Whether the worker accounts for GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ResourcePolicyKind {
    /// No accounting: every request the worker has a slot for is taken, and
    /// whatever runs the job (Docker, Kubernetes) decides on devices.
    #[default]
    BestEffort,
    /// The worker owns a set of GPUs and takes a request only when enough of them
    /// are free.
    Gpu,
}

/// Which GPUs the worker uses: `4` (the first four) or `0,1,3` (those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// So many, from index 0.
    Count(u32),
    /// These indices (a single one written with a trailing comma: `3,`).
    Indices(Vec<u32>),
}

impl FromStr for GpuSelection {
    type Err = BadValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || BadValue::new(text, "must be a count (4) or indices (0,1,3)");
        if !text.contains(',') {
            return text.parse().map(GpuSelection::Count).map_err(|_| bad());
        }
        let mut indices: Vec<u32> = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| part.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let given = indices.len();
        indices.sort_unstable();
        indices.dedup();
        if indices.len() != given {
            return Err(BadValue::new(text, "names an index twice"));
        }
        Ok(GpuSelection::Indices(indices))
    }
}

impl GpuSelection {
    /// The indices selected.
    pub fn indices(&self) -> Vec<u32> {
        match self {
            GpuSelection::Count(count) => (0..*count).collect(),
            GpuSelection::Indices(indices) => indices.clone(),
        }
    }
}

impl fmt::Display for GpuSelection {
    /// As a flag gives it: `4`, `0,1,3`, or `3,` for one index.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuSelection::Count(count) => write!(f, "{count}"),
            GpuSelection::Indices(indices) => {
                let shown: Vec<String> = indices.iter().map(u32::to_string).collect();
                match shown.as_slice() {
                    [one] => write!(f, "{one},"),
                    _ => f.write_str(&shown.join(",")),
                }
            }
        }
    }
}

impl OptionValue for GpuSelection {
    /// An integer (a count) or a string (a count or indices).
    fn from_toml(value: toml::Value) -> Result<Self, FileValueError> {
        match value {
            toml::Value::Integer(_) => Ok(GpuSelection::Count(value.try_into()?)),
            value => {
                let text: String = value.try_into()?;
                text.parse()
                    .map_err(|e: BadValue| FileValueError::Parse(e.into()))
            }
        }
    }
    fn flag_text(&self) -> String {
        self.to_string()
    }
}

/// How process jobs' `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES` name
/// their GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GpuNaming {
    /// By index (`0,2`).
    #[default]
    Index,
    /// By UUID (`GPU-...`), where the inventory knows it; by index otherwise.
    Uuid,
}

value_by_choice!(ResourcePolicyKind, GpuNaming);

options! {
    /// The resource options as each layer gives them (flags and environment, or
    /// the `[resources]` table).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct ResourceArgs in "resources" {
        /// Resource policy: best-effort (no accounting) or gpu (the worker hands out its GPUs)
        policy: ResourcePolicyKind {
            flag: "resource-policy",
            env: "FLARE_RESOURCE_POLICY",
            default: value(ResourcePolicyKind::BestEffort),
            clap: (value_enum),
        },
        /// GPUs the gpu policy hands out: a count (4: indices 0 to 3) or indices (0,1,3; one index alone as 3,)
        gpus: GpuSelection {
            flag: "gpus",
            env: "FLARE_GPUS",
            default: text("every GPU nvidia-smi lists"),
            example: "\"0,1\"",
        },
        /// Memory of each GPU, GiB, counted against a request's resources.gpu_memory_mb; no more than the host's GPUs have
        gpu_memory_gib: f64 {
            flag: "gpu-memory-gib",
            env: "FLARE_GPU_MEMORY_GIB",
            default: text("what nvidia-smi says; with --ignore-host, not checked"),
            example: "16",
        },
        /// Trust --gpus and --gpu-memory-gib without looking at the host's GPUs (the jobs run elsewhere, e.g. on a cluster); needs --gpus
        ignore_host: bool {
            flag: "ignore-host",
            env: "FLARE_IGNORE_HOST",
            default: value(false),
            kind: switch,
        },
        /// How process jobs' CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES name their GPUs: index or uuid (by index when the UUID is not known, as with --ignore-host)
        gpu_naming: GpuNaming {
            flag: "gpu-naming",
            env: "FLARE_GPU_NAMING",
            default: value(GpuNaming::Index),
            clap: (value_enum),
        },
    }
}

impl ResourceArgs {
    /// The resolved options, defaults applied.
    pub fn config(&self) -> ResourceConfig {
        ResourceConfig {
            policy: self.policy(),
            gpus: self.gpus.clone(),
            gpu_memory_mb: self
                .gpu_memory_gib
                .map(|gib| (gib * 1024.0).round().clamp(0.0, u64::MAX as f64) as u64),
            gpu_memory_gib: self.gpu_memory_gib,
            ignore_host: self.ignore_host(),
            gpu_naming: self.gpu_naming(),
        }
    }
}

/// The resource options, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceConfig {
    /// The policy.
    pub policy: ResourcePolicyKind,
    /// The GPUs handed out, if given.
    pub gpus: Option<GpuSelection>,
    /// Memory of each GPU in MiB, if given.
    pub gpu_memory_mb: Option<u64>,
    /// As given, for checking.
    gpu_memory_gib: Option<f64>,
    /// Trust the given inventory without looking at the host.
    pub ignore_host: bool,
    /// How process jobs' variables name their GPUs.
    pub gpu_naming: GpuNaming,
}

/// A resource setting the types allow but the worker cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidResourceConfig {
    /// The GPU memory is not a positive number.
    #[error("--gpu-memory-gib must be a positive number, got {0}")]
    GpuMemory(f64),
    /// GPU settings given to the best-effort policy.
    #[error(
        "--gpus, --gpu-memory-gib and --ignore-host belong to --resource-policy gpu; the best-effort policy counts nothing"
    )]
    GpuSettingsWithoutGpuPolicy,
    /// The host is ignored but no GPUs are named.
    #[error(
        "--ignore-host needs --gpus: the worker does not look at the host, so it must be told which GPUs it hands out"
    )]
    IgnoreHostWithoutGpus,
}

impl ResourceConfig {
    /// Checks values the types allow but the worker cannot use.
    ///
    /// # Errors
    /// An [`InvalidResourceConfig`] naming the bad value.
    pub fn validate(&self) -> Result<(), InvalidResourceConfig> {
        if let Some(gib) = self.gpu_memory_gib
            && !(gib.is_finite() && gib > 0.0)
        {
            return Err(InvalidResourceConfig::GpuMemory(gib));
        }
        if self.policy == ResourcePolicyKind::BestEffort
            && (self.gpus.is_some() || self.gpu_memory_gib.is_some() || self.ignore_host)
        {
            return Err(InvalidResourceConfig::GpuSettingsWithoutGpuPolicy);
        }
        if self.policy == ResourcePolicyKind::Gpu && self.ignore_host && self.gpus.is_none() {
            return Err(InvalidResourceConfig::IgnoreHostWithoutGpus);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_a_count_or_indices() {
        assert_eq!("4".parse(), Ok(GpuSelection::Count(4)));
        assert_eq!("0,1,3".parse(), Ok(GpuSelection::Indices(vec![0, 1, 3])));
        assert_eq!("3,".parse(), Ok(GpuSelection::Indices(vec![3])));
        assert_eq!(" 2 , 0 ".parse(), Ok(GpuSelection::Indices(vec![0, 2])));
        assert!(
            "0,0"
                .parse::<GpuSelection>()
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!("a".parse::<GpuSelection>().is_err());
        assert!("-1".parse::<GpuSelection>().is_err());
        assert_eq!(GpuSelection::Count(2).indices(), vec![0, 1]);
        for shown in ["4", "0,1,3", "3,"] {
            assert_eq!(shown.parse::<GpuSelection>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn the_table_takes_a_count_or_a_string() {
        let table = |text: &str| {
            let mut table: toml::Table = toml::from_str(text).unwrap();
            ResourceArgs::take_from(&mut table)
        };
        let count = table("policy = \"gpu\"\ngpus = 2").unwrap();
        assert_eq!(count.gpus, Some(GpuSelection::Count(2)));
        assert_eq!(count.policy, Some(ResourcePolicyKind::Gpu));
        let list = table("gpus = \"1,2\"\nignore_host = true").unwrap();
        assert_eq!(list.gpus, Some(GpuSelection::Indices(vec![1, 2])));
        assert!(table("gpus = \"x\"").is_err());
    }

    #[test]
    fn gpu_options_need_the_gpu_policy_and_ignore_host_needs_gpus() {
        let config = |args: ResourceArgs| args.config().validate().map_err(|e| e.to_string());
        assert!(config(ResourceArgs::default()).is_ok());
        let gpus_alone = ResourceArgs {
            gpus: Some(GpuSelection::Count(1)),
            ..ResourceArgs::default()
        };
        assert!(
            config(gpus_alone.clone())
                .unwrap_err()
                .contains("--resource-policy gpu")
        );
        let gpu = ResourceArgs {
            policy: Some(ResourcePolicyKind::Gpu),
            ..ResourceArgs::default()
        };
        assert!(config(gpu.clone()).is_ok());
        let blind = ResourceArgs {
            ignore_host: Some(true),
            ..gpu.clone()
        };
        assert!(config(blind.clone()).unwrap_err().contains("needs --gpus"));
        assert!(config(blind.or(gpus_alone)).is_ok());
        let no_memory = ResourceArgs {
            gpu_memory_gib: Some(0.0),
            ..gpu
        };
        assert!(config(no_memory).unwrap_err().contains("positive"));
    }
}
