//! `flare-launcher top` in a real terminal: a tmux session of fixed size runs
//! it against a real worker and real jobs; the test sends keys and reads the
//! screen. The view shows the worker from its lease, each job's latest state
//! (including jobs that ended before it started), failures by reason, follows
//! what happens next, moves its selection, opens the selected job's output
//! and comes back, and quits on `q`.

use crate::common::system::{System, sh};
use crate::common::tmux::Tmux;
use flare_launcher::state::JobState;
use std::time::Duration;

/// How long the screen may take to show what the test waits for.
const SHOWN: Duration = Duration::from_secs(60);

/// The screen line holding `text`, or an empty one.
fn line_with<'a>(screen: &'a str, text: &str) -> &'a str {
    screen
        .lines()
        .find(|line| line.contains(text))
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_pool_follows_it_and_answers_keys() {
    let system = System::start().await;
    system.run(&sh("top-ok", "exit 0")).await;
    let failed = system.run(&sh("top-fails", "echo boom; exit 3")).await;
    assert_eq!(failed.last().unwrap().state, JobState::Failed);
    system
        .launch_until_running(&sh("top-runs", "echo tick; sleep 600"))
        .await;

    let top = Tmux::start(
        "top",
        160,
        45,
        &[
            env!("CARGO_BIN_EXE_flare-launcher"),
            "--nats-url",
            &system.nats.url(),
            "top",
        ],
    );
    let screen = top
        .wait_for("the pool, the jobs and the failures", SHOWN, |screen| {
            screen.contains("jobs: 1 running, 1 succeeded, 1 failed")
                && line_with(screen, "w1").contains("process")
                && line_with(screen, "w1").contains(" 1/")
                && screen.contains("exit code 3")
        })
        .await;
    let runs = line_with(&screen, "top-runs");
    assert!(
        runs.contains("running") && runs.contains("process"),
        "{screen}"
    );
    assert!(
        line_with(&screen, "top-fails").contains("failed"),
        "{screen}"
    );
    // Running first, then the ended jobs, latest end first; the first selected.
    let order: Vec<usize> = ["> top-runs", "top-fails", "top-ok"]
        .iter()
        .map(|job| screen.find(job).expect("every job is shown"))
        .collect();
    assert!(order.is_sorted(), "{screen}");

    // Keys move the selection.
    top.send(&["j"]);
    top.wait_for("j moves down", SHOWN, |s| s.contains("> top-fails"))
        .await;
    top.send(&["Down"]);
    top.wait_for("Down moves down", SHOWN, |s| s.contains("> top-ok"))
        .await;
    top.send(&["Down"]);
    top.wait_for("the last row stays selected", SHOWN, |s| {
        s.contains("> top-ok")
    })
    .await;
    top.send(&["k"]);
    top.wait_for("k moves up", SHOWN, |s| s.contains("> top-fails"))
        .await;

    // What happens next is followed: a terminate, a new job.
    system.client.terminate("top-runs", Some(1)).await.unwrap();
    system.run(&sh("top-later", "exit 0")).await;
    top.wait_for("the terminate and the new job", SHOWN, |s| {
        line_with(s, "top-runs").contains("terminated")
            && line_with(s, "top-later").contains("succeeded")
            && s.contains("TerminateRequested")
    })
    .await;
    top.wait_for("the selection stays on its job", SHOWN, |s| {
        s.contains("> top-fails")
    })
    .await;

    // Enter runs `logs top-fails -f` with top's global options, and the view
    // comes back when it ends. Until the logs command exists the child is
    // refused by the argument parser, and top waits for a key so that its
    // message can be read.
    top.send(&["Enter"]);
    let url = system.nats.url();
    let asked = format!("flare-launcher --nats-url={url} logs top-fails -f");
    let left = top
        .wait_for_behind("the output command", SHOWN, |s| {
            s.contains("press any key to come back") || s.contains("boom")
        })
        .await;
    assert!(left.contains(&asked), "{left}");
    assert!(
        left.contains("unrecognized subcommand 'logs'") || left.contains("boom"),
        "the child ran: {left}"
    );
    if left.contains("press any key") {
        top.send(&["x"]);
    }
    let back = top
        .wait_for("the view again", SHOWN, |s| {
            s.contains("flare-launcher top") && s.contains("> top-fails")
        })
        .await;
    assert!(!back.contains("press any key"), "{back}");

    top.send(&["q"]);
    top.wait_for("top ends on q", SHOWN, |s| s.contains("top exited with 0"))
        .await;
}
