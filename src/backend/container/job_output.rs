//! A workload's output appended to its job's log file, as the container
//! backends copy it from their engine: the file opened
//! for appending, each chunk written as it comes, and every failure logged once
//! with the file's path (the job's end is reported whatever became of its log).

use crate::report::error_chain;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// A job's log file open for appending.
pub struct JobLog {
    file: tokio::fs::File,
    path: PathBuf,
}

impl JobLog {
    /// Opens `path` for appending (made if missing); `None`, logged, when it
    /// cannot be.
    pub async fn open(path: &Path) -> Option<JobLog> {
        let opened = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await;
        match opened {
            Ok(file) => Some(JobLog {
                file,
                path: path.to_owned(),
            }),
            Err(e) => {
                tracing::error!(log = %path.display(), error = %error_chain(&e), "cannot open the job's log file");
                None
            }
        }
    }

    /// Appends `bytes`; `false`, logged, when the file refuses them.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        match self.file.write_all(bytes).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(log = %self.path.display(), error = %error_chain(&e), "cannot write the job's log file");
                false
            }
        }
    }

    /// Flushes what was written; `false`, logged, when the file refuses it.
    pub async fn finish(mut self) -> bool {
        match self.file.flush().await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(log = %self.path.display(), error = %error_chain(&e), "cannot write the job's log file");
                false
            }
        }
    }
}
