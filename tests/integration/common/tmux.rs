//! A program in a terminal for a test: a detached tmux session of fixed size on
//! a tmux server of the test's own, which the test sends keys to and reads the
//! screen of. When the program ends the pane says `LABEL exited with CODE` and
//! stays, so that its end can be read too. The server is killed when dropped.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How often the screen is read while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A tmux server with one session running one program.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `argv` in a `width` x `height` terminal; `label` names it in the
    /// line written when it ends.
    pub fn start(label: &str, width: u16, height: u16, argv: &[&str]) -> Tmux {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "flare-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let tmux = Tmux { socket };
        let script = format!("\"$@\"; echo \"{label} exited with $?\"; exec sleep 3600");
        let (width, height) = (width.to_string(), height.to_string());
        let mut args = vec![
            "new-session",
            "-d",
            "-x",
            &width,
            "-y",
            &height,
            "sh",
            "-c",
            &script,
            "sh",
        ];
        args.extend(argv);
        let started = tmux.run(&args);
        assert!(started.status.success(), "tmux starts: {started:?}");
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)")
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// What it shows now, then the normal screen behind a full-screen program's
    /// (empty when none is in front).
    pub fn screen_and_behind(&self) -> String {
        let behind = self.run(&["capture-pane", "-p", "-a"]);
        format!(
            "{}\n{}",
            self.screen(),
            String::from_utf8_lossy(&behind.stdout)
        )
    }

    /// Sends keys, by tmux's names (`j`, `Down`, `Enter`, `C-c`).
    pub fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend(keys);
        let sent = self.run(&args);
        assert!(sent.status.success(), "tmux send-keys: {sent:?}");
    }

    /// Waits until the screen shows `what` (`done` says when), returning it;
    /// fails with the last screen after `limit`.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_until(what, limit, done, Self::screen).await
    }

    /// [`Tmux::wait_for`] on the screen and what is behind it.
    pub async fn wait_for_behind(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_until(what, limit, done, Self::screen_and_behind)
            .await
    }

    async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
        read: fn(&Self) -> String,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = read(self);
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {what} within {limit:?}:\n{screen}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
