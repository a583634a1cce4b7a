//! One container of a pod on the kubelet: the image "pull" (instant, or failing
//! with `ErrImagePull`/`ImagePullBackOff` for unpullable images), the command run
//! as a real local process with the pod's environment and working directory, its
//! exit (`OOMKilled` when [`crate::oom`] killed it), restarts with back-off as
//! the restart policy says, and stopping it with SIGTERM, then SIGKILL after the
//! grace period.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::env;
use crate::events::{self, EventType, Source};
use crate::oom::ContainerName;
use crate::podstatus;
use crate::store::Key;

/// Why the kubelet stops a pod's containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Deleted with a grace period: the pod is deleted once stopped.
    Deleted,
    /// `activeDeadlineSeconds` passed.
    Deadline,
    /// Removed from the API at once (grace period 0): kill, report nothing.
    Forced,
}

/// A request to stop, with the grace period before SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub reason: StopReason,
    pub grace: Duration,
}

/// What a container task needs.
pub struct Context {
    pub cluster: Arc<Cluster>,
    pub key: Key,
    pub pod: Arc<Value>,
    pub stop: watch::Receiver<Option<Stop>>,
}

impl Context {
    fn event(&self, container: &str, kind: EventType, reason: &str, message: &str) {
        events::record(
            &self.cluster,
            &self.pod,
            Some(container),
            kind,
            reason,
            message,
            Source::Kubelet,
        );
    }

    fn set(&self, container: &str, edit: impl FnOnce(&mut Value)) {
        if !self.forced() {
            podstatus::set_container(&self.cluster, &self.key, container, edit);
        }
    }

    fn stopping(&self) -> Option<Stop> {
        *self.stop.borrow()
    }

    fn forced(&self) -> bool {
        self.stopping()
            .is_some_and(|s| s.reason == StopReason::Forced)
    }

    /// Sleeps for `d`; returns the stop request if one comes first.
    async fn wait(&mut self, d: Duration) -> Option<Stop> {
        if let Some(stop) = self.stopping() {
            return Some(stop);
        }
        tokio::select! {
            () = tokio::time::sleep(d) => None,
            s = self.stop.wait_for(Option::is_some) => s.ok().and_then(|r| *r),
        }
    }
}

fn backoff(cluster: &Cluster, attempt: u32) -> Duration {
    let initial = cluster.config.backoff_initial;
    initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cluster.config.backoff_max)
}

/// Runs container `spec` until it is done for good or stopped.
pub async fn run(mut ctx: Context, spec: Value) {
    let name = spec["name"].as_str().unwrap_or_default().to_owned();
    let image = spec["image"].as_str().unwrap_or_default().to_owned();
    if !pull(&mut ctx, &name, &image).await {
        return;
    }
    let mut restarts: u32 = 0;
    loop {
        let exit = match env::resolve(&ctx.cluster, &ctx.pod, &spec) {
            Ok(process) => run_once(&mut ctx, &name, &process).await,
            Err(message) => {
                ctx.event(
                    &name,
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                );
                ctx.set(&name, |cs| {
                    cs["state"] = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                });
                if ctx.wait(backoff(&ctx.cluster, 0)).await.is_some() {
                    return;
                }
                continue;
            }
        };
        if ctx.stopping().is_some() {
            return;
        }
        let policy = ctx.pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always");
        let again = policy == "Always" || (policy == "OnFailure" && exit != 0);
        if !again {
            return;
        }
        let delay = backoff(&ctx.cluster, restarts);
        restarts += 1;
        let pod_id = format!(
            "{}_{}({})",
            crate::objects::name(&ctx.pod),
            ctx.key.namespace,
            crate::objects::uid(&ctx.pod)
        );
        let message = format!(
            "back-off {}s restarting failed container={name} pod={pod_id}",
            delay.as_secs()
        );
        ctx.set(&name, |cs| {
            cs["lastState"] = cs["state"].clone();
            cs["restartCount"] = json!(restarts);
            cs["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}});
        });
        ctx.event(
            &name,
            EventType::Warning,
            "BackOff",
            &format!("Back-off restarting failed container {name} in pod {pod_id}"),
        );
        if ctx.wait(delay).await.is_some() {
            return;
        }
    }
}

/// "Pulls" the image; false if stopped while it cannot be pulled.
async fn pull(ctx: &mut Context, name: &str, image: &str) -> bool {
    let mut attempt = 0;
    loop {
        ctx.event(
            name,
            EventType::Normal,
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        if !ctx.cluster.config.unpullable(image) {
            ctx.event(name, EventType::Normal, "Pulled", &format!(
                "Successfully pulled image \"{image}\" in 0s (0s including waiting). Image size: 0 bytes."
            ));
            return true;
        }
        let why = format!(
            "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found"
        );
        ctx.event(
            name,
            EventType::Warning,
            "Failed",
            &format!("Failed to pull image \"{image}\": {why}"),
        );
        ctx.event(name, EventType::Warning, "Failed", "Error: ErrImagePull");
        ctx.set(name, |cs| {
            cs["state"] = json!({"waiting": {"reason": "ErrImagePull", "message": why}});
        });
        let delay = backoff(&ctx.cluster, attempt);
        attempt += 1;
        // The kubelet reports the back-off as soon as the next sync sees it.
        if ctx.wait(Duration::from_millis(500)).await.is_some() {
            return false;
        }
        let message = format!("Back-off pulling image \"{image}\"");
        ctx.event(name, EventType::Normal, "BackOff", &message);
        ctx.event(
            name,
            EventType::Warning,
            "Failed",
            "Error: ImagePullBackOff",
        );
        ctx.set(name, |cs| {
            cs["state"] = json!({"waiting": {"reason": "ImagePullBackOff", "message": message}});
        });
        if ctx.wait(delay).await.is_some() {
            return false;
        }
    }
}

/// Starts the process once and waits for it to exit (or stops it); returns the
/// exit code.
async fn run_once(ctx: &mut Context, name: &str, process: &env::Process) -> i64 {
    let container_id = format!("kube-sim://{}", crate::meta::new_uid().replace('-', ""));
    let log = ctx.cluster.log_path(crate::objects::uid(&ctx.pod), name);
    let spawned = std::fs::File::create(&log).and_then(|out| {
        let err = out.try_clone()?;
        let program = env::find_program(
            &process.argv[0],
            process.env.get("PATH").map(String::as_str),
        );
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg0(&process.argv[0])
            .args(&process.argv[1..])
            .env_clear()
            .envs(&process.env)
            .current_dir(&process.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
    });
    ctx.event(
        name,
        EventType::Normal,
        "Created",
        &format!("Created container: {name}"),
    );
    let started = crate::meta::now();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = format!(
                "failed to create containerd task: failed to create shim task: exec: \"{}\": {e}",
                process.argv[0]
            );
            ctx.event(
                name,
                EventType::Warning,
                "Failed",
                &format!("Error: {message}"),
            );
            ctx.set(name, |cs| {
                cs["containerID"] = json!(container_id);
                cs["state"] = json!({"terminated": {
                    "exitCode": 128, "reason": "StartError", "message": message,
                    "startedAt": "1970-01-01T00:00:00Z", "finishedAt": crate::meta::now(),
                    "containerID": container_id,
                }});
            });
            return 128;
        }
    };
    // Known to the OOM killer before anyone can see it running.
    let pid = child.id().map(|p| Pid::from_raw(p as i32));
    let oom_name = ContainerName {
        namespace: ctx.key.namespace.clone(),
        pod: ctx.key.name.clone(),
        container: name.to_owned(),
    };
    if let Some(pid) = pid {
        ctx.cluster
            .oom
            .started(oom_name.clone(), &container_id, pid);
    }
    ctx.event(
        name,
        EventType::Normal,
        "Started",
        &format!("Started container {name}"),
    );
    ctx.set(name, |cs| {
        cs["containerID"] = json!(container_id);
        cs["state"] = json!({"running": {"startedAt": started}});
    });
    let forced = Stop {
        reason: StopReason::Forced,
        grace: Duration::ZERO,
    };
    let status = tokio::select! {
        status = child.wait() => Some(status),
        s = ctx.stop.wait_for(Option::is_some) => {
            let _ = s.ok().and_then(|r| *r);
            None
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            let stop = ctx.stopping().unwrap_or(forced);
            if stop.reason != StopReason::Forced {
                ctx.event(
                    name,
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {name}"),
                );
            }
            if let Some(pid) = pid {
                let first = if stop.grace.is_zero() {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                };
                let _ = killpg(pid, first);
            }
            match tokio::time::timeout(stop.grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    if let Some(pid) = pid {
                        let _ = killpg(pid, Signal::SIGKILL);
                    }
                    child.wait().await
                }
            }
        }
    };
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .map(i64::from)
                .or_else(|| s.signal().map(|sig| 128 + i64::from(sig)))
                .unwrap_or(1)
        }
        Err(_) => 1,
    };
    let oom_killed = ctx.cluster.oom.ended(&oom_name, &container_id);
    let reason = match code {
        _ if oom_killed => "OOMKilled",
        0 => "Completed",
        _ => "Error",
    };
    ctx.set(name, |cs| {
        cs["state"] = json!({"terminated": {
            "exitCode": code, "reason": reason, "startedAt": started,
            "finishedAt": crate::meta::now(), "containerID": container_id,
        }});
    });
    code
}
