//! The behaviours every backend shows, each a test over a [`Backend`] fixture.

use super::{AdoptsWorkloads, Backend};
use crate::common::docker::unique;
use crate::common::system::{assert_well_formed, log_path, states};
use flare_launcher::state::JobState;

/// A job that exits 0 succeeds with its standard output and error in its log;
/// its record names its workload, which is let go once the end is recorded.
pub async fn exit_0_succeeds_with_its_output<B: Backend>() {
    let backend = B::start().await;
    let system = backend.system();
    let job_id = unique("ok");
    let request = backend.request(&job_id, "echo out; echo err >&2; exit 0");
    let events = system.run(&request).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "succeeded"]);
    let last = events.last().unwrap();
    assert_eq!((last.return_code, last.exit_code), (Some(0), Some(0)));
    assert!(
        events
            .iter()
            .all(|e| e.backend == B::KIND && e.worker == system.config.worker_id),
        "{events:?}"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert!(log.contains("out\n") && log.contains("err\n"), "{log:?}");
    let record = system.client.status(&job_id).await.unwrap();
    backend.assert_names_its_workload(&job_id, &record);
    backend.wait_until_released(&job_id).await;
    backend.assert_cost_of_one_job();
}

/// Jobs that exit 3 and 101 fail, with return codes 1 (an execution error) and
/// 101 (NVFlare's own code, kept).
pub async fn exit_3_and_101_fail<B: Backend>() {
    let backend = B::start().await;
    for (code, return_code) in [(3, 1), (101, 101)] {
        let job_id = unique(&format!("exit{code}"));
        let request = backend.request(&job_id, &format!("exit {code}"));
        let events = backend.system().run(&request).await;
        assert_well_formed(&events);
        assert_eq!(states(&events), ["starting", "running", "failed"]);
        let last = events.last().unwrap();
        assert_eq!(
            (last.return_code, last.exit_code),
            (Some(return_code), Some(code))
        );
    }
}

/// A terminate with a grace reaches the job's SIGTERM trap: the job, leaving
/// with 0, ends `terminated` (not `succeeded`) with what its trap printed in
/// its log, and its workload is let go.
pub async fn terminate_ends_the_job_through_its_trap<B: Backend>() {
    let backend = B::start().await;
    let system = backend.system();
    let job_id = unique("term");
    let forever = "while true; do sleep 0.1; done";
    backend
        .launch_until_ready(&job_id, "trap 'echo bye; exit 0' TERM", forever)
        .await;
    let reply = system
        .client
        .terminate(&job_id, Some(30))
        .await
        .expect("terminate answered");
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal(&job_id).await;
    assert_well_formed(&events);
    let last = events.last().unwrap();
    assert_eq!(last.state, JobState::Terminated, "{events:?}");
    assert_eq!(last.return_code, Some(9));
    assert_eq!(last.exit_code, Some(0), "the trap ran: {last:?}");
    assert_eq!(last.reason.as_deref(), Some("TerminateRequested"));
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    if B::SIGNALS_ONLY_THE_MAIN_PROCESS {
        assert_eq!(log, "ready\nbye\n");
    } else {
        // The whole process group is signalled: the shell may report its
        // child's end too.
        assert!(
            log.starts_with("ready\n") && log.ends_with("bye\n"),
            "{log:?}"
        );
    }
    backend.wait_until_released(&job_id).await;
    backend.assert_cost_of_one_job();
}

/// A worker killed and started again with its id finishes the stories of its
/// jobs: one whose workload exited with 3 while the worker was away gets its
/// true end from the new worker, and one still running (leaving on SIGTERM with
/// 0) is followed again: a terminate reaches it and its events carry on from
/// its seq. Both workloads are let go.
pub async fn a_worker_killed_and_restarted_finishes_its_jobs_stories<B: Backend>() {
    let backend = B::without_worker().await;
    let system = backend.system();
    let mut worker = backend.spawn_worker();
    let keeps = unique("keeps");
    let ends = unique("ends");
    let forever = "while true; do sleep 0.1; done";
    backend
        .launch_until_ready(&keeps, "trap 'exit 0' TERM", forever)
        .await;
    let wait_for_go = format!(
        "while ! {}; do sleep 0.05; done; exit 3",
        backend.gone_ahead(&ends)
    );
    backend.launch_until_ready(&ends, ":", &wait_for_go).await;

    worker.kill().await.unwrap();
    // One workload ends while its worker is away; the other runs on.
    backend.give_go_and_wait_for_its_end(&ends).await;

    let _worker = backend.spawn_worker();
    let events = system.events_until_terminal(&ends).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    assert_eq!(events[2].exit_code, Some(3));
    assert_eq!(events[2].worker, backend.worker_id());
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "ready\n");
    let reply = system.client.terminate(&keeps, Some(10)).await.unwrap();
    assert!(reply.accepted, "{reply:?}");
    let events = system.events_until_terminal(&keeps).await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "terminated"]);
    assert_eq!(events[2].exit_code, Some(0), "{events:?}");
    backend.wait_until_released(&keeps).await;
    backend.wait_until_released(&ends).await;
}

/// A launch that finds its job's workload already made (printing `adopted`,
/// exiting 3) adopts it instead of making another.
pub async fn a_launch_that_meets_its_jobs_workload_adopts_it<B: AdoptsWorkloads>() {
    let backend = B::start().await;
    let job_id = unique("adopt");
    backend
        .make_workload_by_hand(&job_id, "echo adopted; exit 3")
        .await;
    let events = backend
        .system()
        .run(&backend.request(&job_id, "exit 0"))
        .await;
    assert_well_formed(&events);
    assert_eq!(states(&events), ["starting", "running", "failed"]);
    assert_eq!(
        events.last().unwrap().exit_code,
        Some(3),
        "the adopted workload ran"
    );
    let log = std::fs::read_to_string(log_path(&events)).expect("the job's log");
    assert_eq!(log, "adopted\n");
}
