//! `top`'s loop: draws the view, folds in each change as it comes (redrawing
//! at most once per batch, and every second for the ages), acts on keys, and
//! hands the terminal to a job's output and takes it back.

use super::child;
use super::draw::{Scope, draw};
use super::model::{Model, Update};
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

/// Most changes folded in before the screen is drawn again.
const BATCH: usize = 10_000;
/// Rows a page key moves.
const PAGE: isize = 10;

/// Why `top` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The terminal could not be set up, drawn on or read.
    #[error("the terminal: {0}")]
    Terminal(#[source] std::io::Error),
    /// `top` was not started on a terminal.
    #[error("top draws on a terminal, and its output is not one")]
    NotATerminal,
    /// SIGINT could not be listened for (so a child's Ctrl-C would end `top`).
    #[error("cannot listen for SIGINT: {0}")]
    Signal(#[source] std::io::Error),
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop.
    Quit,
    /// Move the selection by this many rows.
    Move(isize),
    /// Open the selected job's output.
    Open,
}

/// The action of a key, if it has one.
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(Action::Quit),
        KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Move(1)),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Move(-1)),
        KeyCode::PageDown => Some(Action::Move(PAGE)),
        KeyCode::PageUp => Some(Action::Move(-PAGE)),
        KeyCode::End | KeyCode::Char('G') => Some(Action::Move(isize::MAX)),
        KeyCode::Home | KeyCode::Char('g') => Some(Action::Move(isize::MIN)),
        KeyCode::Enter => Some(Action::Open),
        _ => None,
    }
}

/// The view and what feeds it.
pub struct App<'a> {
    /// The view model.
    pub model: Model,
    /// The changes, from [`super::feed::start`].
    pub updates: mpsc::Receiver<Update>,
    /// What the view is of.
    pub scope: Scope<'a>,
    /// The global options to give a job's output command.
    pub global_flags: Vec<OsString>,
}

impl App<'_> {
    /// Runs until a quit key; the terminal is left as it was found.
    ///
    /// # Errors
    /// [`AppError`] when there is no terminal or it fails.
    pub async fn run(mut self) -> Result<(), AppError> {
        if !std::io::stdout().is_terminal() {
            return Err(AppError::NotATerminal);
        }
        // From here SIGINT no longer ends `top`: a child's Ctrl-C is the child's.
        let mut sigint = signal(SignalKind::interrupt()).map_err(AppError::Signal)?;
        let mut terminal = ratatui::try_init().map_err(AppError::Terminal)?;
        let ran = self.run_on(&mut terminal, &mut sigint).await;
        let restored = ratatui::try_restore().map_err(AppError::Terminal);
        ran.and(restored)
    }

    async fn run_on(
        &mut self,
        terminal: &mut DefaultTerminal,
        sigint: &mut Signal,
    ) -> Result<(), AppError> {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut feeding = true;
        loop {
            terminal
                .draw(|frame| draw(frame, &self.model, &self.scope, OffsetDateTime::now_utc()))
                .map_err(AppError::Terminal)?;
            tokio::select! {
                update = self.updates.recv(), if feeding => match update {
                    Some(update) => self.fold(update),
                    None => feeding = false,
                },
                key = keys.next() => match key {
                    Some(Ok(Event::Key(key))) => match action(key) {
                        Some(Action::Quit) => return Ok(()),
                        Some(Action::Move(by)) => self.model.move_selection(by),
                        Some(Action::Open) => {
                            if let Some(job_id) = self.model.selected() {
                                // The output command reads the terminal: no
                                // reader of ours may be left.
                                drop(keys);
                                self.open_output(terminal, sigint, &job_id).await?;
                                keys = EventStream::new();
                            }
                        }
                        None => {}
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(AppError::Terminal(e)),
                    None => return Ok(()),
                },
                _ = tick.tick() => {}
                _ = sigint.recv() => {}
            }
        }
    }

    /// Folds `first` and whatever else is waiting, up to a batch.
    fn fold(&mut self, first: Update) {
        self.model.apply(first);
        for _ in 1..BATCH {
            match self.updates.try_recv() {
                Ok(update) => self.model.apply(update),
                Err(_) => break,
            }
        }
    }

    /// Leaves the view for `logs JOB_ID -f`, folding changes in meanwhile, and
    /// comes back when it ends; when it could not run or failed, the screen
    /// stays until a key is pressed, so that what it said can be read.
    async fn open_output(
        &mut self,
        terminal: &mut DefaultTerminal,
        sigint: &mut Signal,
        job_id: &str,
    ) -> Result<(), AppError> {
        ratatui::try_restore().map_err(AppError::Terminal)?;
        let args = child::logs_args(&self.global_flags, job_id);
        println!(
            "flare-launcher {}   (Ctrl-C to come back to top)",
            child::describe(&args)
        );
        let outcome = match std::env::current_exe()
            .and_then(|exe| tokio::process::Command::new(exe).args(&args).spawn())
        {
            Ok(mut running) => loop {
                tokio::select! {
                    status = running.wait() => break status,
                    Some(update) = self.updates.recv() => self.model.apply(update),
                    _ = sigint.recv() => {}
                }
            },
            Err(e) => Err(e),
        };
        let failure = match outcome {
            // A signal (Ctrl-C) is how one leaves a followed output.
            Ok(status) if status.success() || status.code().is_none() => None,
            Ok(status) => Some(format!("the logs command ended: {status}")),
            Err(e) => Some(format!("the logs command could not run: {e}")),
        };
        crossterm::terminal::enable_raw_mode().map_err(AppError::Terminal)?;
        if let Some(failure) = failure {
            print!("\r\n[{failure}; press any key to come back to top]\r\n");
            std::io::stdout().flush().map_err(AppError::Terminal)?;
            self.wait_for_a_key().await?;
        }
        use crossterm::terminal::{Clear, ClearType, EnterAlternateScreen};
        crossterm::execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            Clear(ClearType::All)
        )
        .map_err(AppError::Terminal)?;
        // The screen is blank: an empty frame makes the next one drawn whole.
        // (`Terminal::clear` would ask the terminal where its cursor is, and the
        // answer may go to a key reader that is not quite gone.)
        terminal.draw(|_| {}).map_err(AppError::Terminal)?;
        Ok(())
    }

    async fn wait_for_a_key(&mut self) -> Result<(), AppError> {
        let mut keys = EventStream::new();
        loop {
            tokio::select! {
                key = keys.next() => match key {
                    Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(AppError::Terminal(e)),
                    None => return Ok(()),
                },
                Some(update) = self.updates.recv() => self.model.apply(update),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> Option<Action> {
        action(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn keys_quit_move_and_open() {
        assert_eq!(key(KeyCode::Char('q')), Some(Action::Quit));
        assert_eq!(key(KeyCode::Esc), Some(Action::Quit));
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(key(KeyCode::Char('j')), Some(Action::Move(1)));
        assert_eq!(key(KeyCode::Up), Some(Action::Move(-1)));
        assert_eq!(key(KeyCode::Enter), Some(Action::Open));
        assert_eq!(key(KeyCode::Char('x')), None);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), None);
    }
}
