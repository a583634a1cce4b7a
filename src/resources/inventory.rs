//! The GPUs a worker with the `gpu` policy hands out: read from the host with
//! `nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader,nounits`,
//! narrowed and checked against `--gpus` and `--gpu-memory-gib`; or, with
//! `--ignore-host`, taken from those options as given, without looking at the
//! host (the jobs run elsewhere, e.g. on a cluster). A worker told to use GPUs
//! the host does not have refuses to start and says why.

use crate::config::ResourceConfig;
use crate::protocol::bounded::{bounded_to, one_line};
use std::time::Duration;

/// The program asked for the host's GPUs (found on `PATH`).
pub const NVIDIA_SMI: &str = "nvidia-smi";
/// Its arguments.
const NVIDIA_SMI_ARGS: [&str; 2] = [
    "--query-gpu=index,uuid,memory.total",
    "--format=csv,noheader,nounits",
];
/// How long `nvidia-smi` may take.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of `nvidia-smi`'s output an error quotes.
const MAX_QUOTED: usize = 512;

/// One GPU of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryGpu {
    /// Its index on the host.
    pub index: u32,
    /// Its UUID, when the host was asked.
    pub uuid: Option<String>,
    /// Its memory in MiB, when known.
    pub memory_mb: Option<u64>,
}

/// Why the `gpu` policy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// `nvidia-smi` could not be run.
    #[error(
        "the gpu resource policy asks the host for its GPUs with {NVIDIA_SMI}, which could not be run: {0} (give --gpus with --ignore-host to hand out GPUs this host does not have)"
    )]
    NoNvidiaSmi(String),
    /// `nvidia-smi` failed.
    #[error("{NVIDIA_SMI} failed ({status}): {output}")]
    NvidiaSmiFailed {
        /// Its exit status.
        status: String,
        /// What it said, cut.
        output: String,
    },
    /// Its output is not what was asked for.
    #[error("cannot read {NVIDIA_SMI}'s line {line:?}: expected INDEX, UUID, MEMORY_MIB")]
    Unreadable {
        /// The line, cut.
        line: String,
    },
    /// The host has no GPU.
    #[error("the gpu resource policy found no GPU on this host ({NVIDIA_SMI} lists none)")]
    NoGpu,
    /// `--gpus` names GPUs the host does not have.
    #[error(
        "--gpus names GPU {missing} that this host does not have (it has {host}); give --ignore-host if the jobs run elsewhere"
    )]
    Missing {
        /// The indices missing, comma-separated.
        missing: String,
        /// The host's indices, comma-separated.
        host: String,
    },
    /// `--gpu-memory-gib` is more than a GPU has.
    #[error("--gpu-memory-gib is {given_mb} MiB, more than GPU {index} has ({host_mb} MiB)")]
    MemoryOver {
        /// The GPU.
        index: u32,
        /// Its memory.
        host_mb: u64,
        /// What was given.
        given_mb: u64,
    },
}

/// Reads `nvidia-smi`'s CSV lines.
///
/// # Errors
/// [`InventoryError::Unreadable`] for a line that is not `INDEX, UUID, MEMORY`.
pub fn parse_nvidia_smi(text: &str) -> Result<Vec<InventoryGpu>, InventoryError> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let unreadable = || InventoryError::Unreadable {
                line: bounded_to(&one_line(line), MAX_QUOTED),
            };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, uuid, memory] = fields[..] else {
                return Err(unreadable());
            };
            Ok(InventoryGpu {
                index: index.parse().map_err(|_| unreadable())?,
                uuid: (!uuid.is_empty()).then(|| uuid.to_owned()),
                // `[N/A]` on some devices: memory unknown.
                memory_mb: memory.parse().ok(),
            })
        })
        .collect()
}

/// Asks the host for its GPUs.
///
/// # Errors
/// An [`InventoryError`] when `nvidia-smi` cannot be run, fails, or says
/// something unreadable.
pub async fn query_host() -> Result<Vec<InventoryGpu>, InventoryError> {
    let run = tokio::process::Command::new(NVIDIA_SMI)
        .args(NVIDIA_SMI_ARGS)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(NVIDIA_SMI_TIMEOUT, run)
        .await
        .map_err(|_| {
            InventoryError::NoNvidiaSmi(format!("it did not answer within {NVIDIA_SMI_TIMEOUT:?}"))
        })?
        .map_err(|e| InventoryError::NoNvidiaSmi(e.to_string()))?;
    if !output.status.success() {
        let said = [output.stdout.as_slice(), output.stderr.as_slice()].concat();
        return Err(InventoryError::NvidiaSmiFailed {
            status: output.status.to_string(),
            output: bounded_to(&one_line(&String::from_utf8_lossy(&said)), MAX_QUOTED),
        });
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout))
}

/// The inventory the `gpu` policy hands out, from `config` and, unless it
/// says `ignore_host`, the host's GPUs (`host`).
///
/// # Errors
/// An [`InventoryError`] when the host does not have what `config` names.
pub fn inventory(
    config: &ResourceConfig,
    host: Option<Vec<InventoryGpu>>,
) -> Result<Vec<InventoryGpu>, InventoryError> {
    let Some(host) = host else {
        let indices = config
            .gpus
            .as_ref()
            .map(|gpus| gpus.indices())
            .unwrap_or_default();
        return Ok(indices
            .into_iter()
            .map(|index| InventoryGpu {
                index,
                uuid: None,
                memory_mb: config.gpu_memory_mb,
            })
            .collect());
    };
    if host.is_empty() {
        return Err(InventoryError::NoGpu);
    }
    let chosen: Vec<InventoryGpu> = match &config.gpus {
        None => host.clone(),
        Some(selection) => {
            let wanted = selection.indices();
            let missing: Vec<String> = wanted
                .iter()
                .filter(|index| !host.iter().any(|gpu| gpu.index == **index))
                .map(u32::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(InventoryError::Missing {
                    missing: missing.join(","),
                    host: host
                        .iter()
                        .map(|gpu| gpu.index.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                });
            }
            host.into_iter()
                .filter(|gpu| wanted.contains(&gpu.index))
                .collect()
        }
    };
    chosen
        .into_iter()
        .map(|gpu| match (config.gpu_memory_mb, gpu.memory_mb) {
            (Some(given_mb), Some(host_mb)) if given_mb > host_mb => {
                Err(InventoryError::MemoryOver {
                    index: gpu.index,
                    host_mb,
                    given_mb,
                })
            }
            (Some(given_mb), _) => Ok(InventoryGpu {
                memory_mb: Some(given_mb),
                ..gpu
            }),
            (None, _) => Ok(gpu),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GpuSelection, ResourceArgs, ResourcePolicyKind};

    fn config(gpus: Option<GpuSelection>, gib: Option<f64>, ignore_host: bool) -> ResourceConfig {
        ResourceArgs {
            policy: Some(ResourcePolicyKind::Gpu),
            gpus,
            gpu_memory_gib: gib,
            ignore_host: Some(ignore_host),
            gpu_naming: None,
        }
        .config()
    }

    fn host() -> Vec<InventoryGpu> {
        parse_nvidia_smi("0, GPU-aaa, 16384\n1, GPU-bbb, 16384\n\n2, GPU-ccc, [N/A]\n").unwrap()
    }

    #[test]
    fn nvidia_smi_lines_are_read_and_bad_ones_refused() {
        let gpus = host();
        assert_eq!(gpus.len(), 3);
        assert_eq!(
            gpus[1],
            InventoryGpu {
                index: 1,
                uuid: Some("GPU-bbb".into()),
                memory_mb: Some(16384)
            }
        );
        assert_eq!(gpus[2].memory_mb, None);
        let error = parse_nvidia_smi("No devices were found\n").unwrap_err();
        assert!(
            error.to_string().contains("No devices were found"),
            "{error}"
        );
    }

    #[test]
    fn the_host_must_have_the_gpus_named() {
        let all = inventory(&config(None, None, false), Some(host())).unwrap();
        assert_eq!(all.len(), 3);
        let some = inventory(
            &config(Some(GpuSelection::Indices(vec![0, 2])), None, false),
            Some(host()),
        )
        .unwrap();
        assert_eq!(some.iter().map(|g| g.index).collect::<Vec<_>>(), [0, 2]);
        let error = inventory(
            &config(Some(GpuSelection::Count(4)), None, false),
            Some(host()),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("GPU 3 that this host does not have (it has 0,1,2)"),
            "{error}"
        );
        assert!(matches!(
            inventory(&config(None, None, false), Some(Vec::new())),
            Err(InventoryError::NoGpu)
        ));
        let over = inventory(&config(None, Some(20.0), false), Some(host())).unwrap_err();
        assert!(
            matches!(over, InventoryError::MemoryOver { index: 0, .. }),
            "{over}"
        );
        let under = inventory(&config(None, Some(8.0), false), Some(host())).unwrap();
        assert!(under.iter().all(|gpu| gpu.memory_mb == Some(8192)));
    }

    #[test]
    fn ignore_host_takes_the_options_as_given() {
        let given = inventory(
            &config(Some(GpuSelection::Count(2)), Some(40.0), true),
            None,
        )
        .unwrap();
        assert_eq!(
            given,
            [0, 1].map(|index| InventoryGpu {
                index,
                uuid: None,
                memory_mb: Some(40960)
            })
        );
    }
}
