//! What every container backend marks its workloads with: the labels that say
//! which program, job, site, pool and worker a workload belongs to, and the
//! readable name derived from a job's site and id, so that a second launch of
//! the same job meets the first workload instead of making another.

/// The label every workload of this program carries.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY_VALUE: &str = "flare-launcher";
/// The label naming the job.
pub const JOB_ID: &str = "flare-launcher/job-id";
/// The label naming the job's site.
pub const SITE: &str = "flare-launcher/site";
/// The label naming the pool.
pub const POOL: &str = "flare-launcher/pool";
/// The label naming the worker that created the workload.
pub const WORKER: &str = "flare-launcher/worker";

/// Longest part of a workload name taken from the request's site.
const MAX_SITE_IN_NAME: usize = 63;

/// The workload name of a job: `flare-SITE-JOB_ID` (or `flare-JOB_ID` without a
/// site), the site cut down to the characters Docker allows in a name. Job ids
/// already use only those, so the name is the same on every launch of the job.
pub fn workload_name(site: Option<&str>, job_id: &str) -> String {
    let site: String = site
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_SITE_IN_NAME)
        .collect();
    if site.is_empty() {
        format!("flare-{job_id}")
    } else {
        format!("flare-{site}-{job_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_valid_for_docker() {
        assert_eq!(workload_name(None, "job-1"), "flare-job-1");
        assert_eq!(workload_name(Some("site-a"), "job.1"), "flare-site-a-job.1");
        assert_eq!(workload_name(Some("a b/ü"), "j"), "flare-a-b---j");
        let long = workload_name(Some(&"s".repeat(1000)), "j");
        assert_eq!(long.len(), "flare-".len() + MAX_SITE_IN_NAME + "-j".len());
        assert_eq!(workload_name(Some(""), "j"), "flare-j");
    }
}
