//! Drawing `top`'s view model with ratatui: a title line, the workers, the
//! jobs with the selected one marked, the failures by reason, and a line of
//! keys (or what the view cannot follow any more).

use super::model::{Model, age};
use crate::state::JobState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use time::OffsetDateTime;

/// What the view is of, for its title.
pub struct Scope<'a> {
    /// The subject prefix.
    pub prefix: &'a str,
}

/// Most rows the workers' table takes before it scrolls off.
const MAX_WORKER_ROWS: usize = 8;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, model: &Model, scope: &Scope, now: OffsetDateTime) {
    let worker_rows = model.workers().count().clamp(1, MAX_WORKER_ROWS);
    let [title, workers, middle, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(worker_rows as u16 + 3),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [jobs, failures] =
        Layout::horizontal([Constraint::Percentage(72), Constraint::Percentage(28)]).areas(middle);
    frame.render_widget(Paragraph::new(title_line(model, scope)), title);
    draw_workers(frame, model, workers, now);
    draw_jobs(frame, model, jobs, now);
    draw_failures(frame, model, failures);
    let footer = match model.problem() {
        Some(problem) => Line::styled(problem.to_owned(), Style::new().fg(Color::Red)),
        None => {
            Line::from("q quit   ↑/↓ j/k move   PgUp/PgDn page   Enter output of the selected job")
        }
    };
    frame.render_widget(Paragraph::new(footer), keys);
}

fn title_line(model: &Model, scope: &Scope) -> String {
    let counts: Vec<String> = model
        .counts()
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    format!(
        "flare-launcher top   prefix {}   workers: {}   jobs: {}",
        scope.prefix,
        model.workers().count(),
        if counts.is_empty() {
            "none".to_owned()
        } else {
            counts.join(", ")
        }
    )
}

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn draw_workers(frame: &mut Frame, model: &Model, area: Rect, now: OffsetDateTime) {
    let rows = model.workers().map(|worker| {
        let gpus = match worker.gpus {
            Some(0) | None => "-".to_owned(),
            Some(total) => format!("{}/{total}", model.gpus_in_use(&worker.id)),
        };
        Row::new(vec![
            worker.id.clone(),
            worker.host.clone(),
            worker.pool.clone(),
            worker.backends.clone(),
            format!("{}/{}", worker.running, worker.capacity),
            gpus,
            worker.version.clone(),
            worker
                .started
                .map_or_else(|| "?".to_owned(), |started| age(started, now)),
        ])
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(18),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(7),
    ];
    let table = Table::new(rows, widths)
        .header(header(&[
            "WORKER", "HOST", "POOL", "BACKENDS", "JOBS", "GPUS", "VERSION", "UP",
        ]))
        .block(Block::bordered().title(" Workers (from their leases) "));
    frame.render_widget(table, area);
}

fn state_style(state: JobState) -> Style {
    match state {
        JobState::Running => Style::new().fg(Color::Green),
        JobState::Starting => Style::new().fg(Color::Yellow),
        JobState::Succeeded => Style::new(),
        _ => Style::new().fg(Color::Red),
    }
}

fn draw_jobs(frame: &mut Frame, model: &Model, area: Rect, now: OffsetDateTime) {
    let rows = model.jobs().into_iter().map(|job| {
        Row::new(vec![
            job.id.clone(),
            job.state.to_string(),
            age(job.since, now),
            job.backend.to_string(),
            job.worker.clone(),
            job.return_code
                .map_or_else(String::new, |rc| rc.to_string()),
            job.reason.clone().unwrap_or_default(),
        ])
        .style(state_style(job.state))
    });
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Fill(2),
        Constraint::Length(3),
        Constraint::Fill(2),
    ];
    let table = Table::new(rows, widths)
        .header(header(&[
            "JOB", "STATE", "AGE", "BACKEND", "WORKER", "RC", "REASON",
        ]))
        .block(Block::bordered().title(" Jobs (age: time in their state) "))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(model.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_failures(frame: &mut Frame, model: &Model, area: Rect) {
    let rows = model.failures().into_iter().map(|(kind, count)| {
        Row::new(vec![
            kind.state.to_string(),
            kind.reason.clone(),
            count.to_string(),
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Length(6),
    ];
    let table = Table::new(rows, widths)
        .header(header(&["STATE", "REASON", "JOBS"]))
        .block(Block::bordered().title(" Failures by reason "));
    frame.render_widget(table, area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::model::Update;
    use crate::protocol::{BackendKind, JobEvent};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(model: &Model) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 20)).unwrap();
        let now = OffsetDateTime::parse(
            "2026-12-07T10:01:05Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        terminal
            .draw(|frame| draw(frame, model, &Scope { prefix: "p.q" }, now))
            .unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn the_screen_shows_jobs_with_their_age_and_the_selection_and_failures() {
        let mut model = Model::new(10);
        for (job, seq, state) in [
            ("alpha", 2, JobState::Running),
            ("beta", 3, JobState::Failed),
        ] {
            model.apply(Update::Event(Box::new(JobEvent {
                v: 1,
                job_id: job.into(),
                seq,
                state,
                return_code: state.is_terminal().then_some(1),
                exit_code: state.is_terminal().then_some(3),
                reason: None,
                message: None,
                worker: "w1".into(),
                backend: BackendKind::Process,
                ts: "2026-12-07T10:00:00Z".into(),
                gpus: None,
            })));
        }
        model.move_selection(1);
        let text = screen(&model);
        assert!(text.contains("prefix p.q"), "{text}");
        assert!(text.contains("jobs: 1 running, 1 failed"), "{text}");
        let alpha = text.lines().find(|l| l.contains("alpha")).unwrap();
        assert!(
            alpha.contains("running") && alpha.contains("1m05s"),
            "{text}"
        );
        let beta = text.lines().find(|l| l.contains("beta")).unwrap();
        assert!(beta.contains("> beta"), "the selection is marked: {text}");
        assert!(text.contains("exit code 3"), "{text}");
    }
}
