//! Progress as plain lines, for a run whose output is not a terminal (a batch job, `nohup`,
//! a log file): one line per change of a job's state, training steps with their loss,
//! tokens per second and the time left, at a bounded rate, and no escape codes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xlt_provider::{FineTuneJob, JobEvent, JobStatus, Progress};

use crate::{Observer, Plan};

/// One optimizer step as a training job's event states it
/// (`step 12/40: loss 1.2345, learning rate 2.000e-4, 131.2 tokens/s`, what the local
/// provider writes; OpenAI's `Step 12/40: training loss=1.2345` reads too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingStep {
    /// Steps done (1-based).
    pub step: u64,
    /// Steps of the whole job.
    pub total: u64,
    /// The step's training loss (mean cross-entropy per target token, nats), if stated.
    pub loss: Option<f64>,
    /// The step's throughput (tokens per second), if stated.
    pub tokens_per_second: Option<f64>,
}

impl TrainingStep {
    /// Reads a step from an event's message; `None` for any other event.
    pub fn parse(message: &str) -> Option<TrainingStep> {
        let lower = message.to_ascii_lowercase();
        let rest = lower.strip_prefix("step ")?;
        let (fraction, tail) = rest.split_once(':').unwrap_or((rest, ""));
        let (step, total) = fraction.trim().split_once('/')?;
        let number_after = |key: &str| -> Option<f64> {
            let at = tail.find(key)? + key.len();
            let text = tail[at..].trim_start_matches([' ', '=']);
            let end = text
                .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | '-' | '+')))
                .unwrap_or(text.len());
            text[..end].parse().ok()
        };
        let tokens_per_second = tail.find(" tokens/s").and_then(|end| {
            let start = tail[..end].rfind(' ').map_or(0, |i| i + 1);
            tail[start..end].parse().ok()
        });
        Some(TrainingStep {
            step: step.trim().parse().ok()?,
            total: total.trim().parse().ok()?,
            loss: number_after("loss"),
            tokens_per_second,
        })
    }
}

/// A job resumed from a checkpoint, as its event says (`resumed at step 10 of 40`): the
/// step it resumed at and the job's steps.
pub fn resumed_at(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix("resumed at step ")?;
    let (step, total) = rest.split_once(" of ")?;
    let total = total.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((step.trim().parse().ok()?, total.parse().ok()?))
}

/// `1h02m`, `3m05s`, `42s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// What is known of one job's training, from its events.
#[derive(Debug, Clone, Default)]
struct Training {
    /// The first step seen in this run and its event's time (seconds since the epoch).
    first: Option<(u64, i64)>,
    /// When the last step line was written (the event's time).
    printed: Option<i64>,
}

impl Training {
    /// The line of `step` at `at`, with the time left from the pace of the steps seen
    /// since the first one (event times, whole seconds).
    fn line(&mut self, slice: &str, step: &TrainingStep, at: i64) -> String {
        let (first_step, first_at) = *self.first.get_or_insert((step.step, at));
        let mut line = format!("fine-tune {slice}: step {}/{}", step.step, step.total);
        if let Some(loss) = step.loss {
            line += &format!(", loss {loss:.4}");
        }
        if let Some(rate) = step.tokens_per_second {
            line += &format!(", {rate:.0} tokens/s");
        }
        if step.step > first_step && at > first_at {
            let per_step = (at - first_at) as f64 / (step.step - first_step) as f64;
            let left = step.total.saturating_sub(step.step) as f64 * per_step;
            line += &format!(", ETA {}", format_duration(left));
        }
        line
    }
}

/// An [`Observer`] writing plain lines to `W` (standard error for a program): messages and
/// the plan as they come, a job's state when it changes, a training step at most once per
/// `every` of the job's event time (the first, the last, and a resume always), an
/// evaluation's count at most once per `every` (and its last). No escape codes, no
/// carriage returns: a log file reads as the run went. Paid work is refused without
/// `--yes` (it cannot ask).
pub struct ProgressLines<W: Write + Send> {
    every: Duration,
    state: Mutex<Lines<W>>,
}

struct Lines<W> {
    out: W,
    jobs: HashMap<String, JobStatus>,
    training: HashMap<String, Training>,
    evals: HashMap<String, Instant>,
}

/// The least time between two progress lines of one job or model, by default.
pub const PLAIN_LINE_EVERY: Duration = Duration::from_secs(10);

impl ProgressLines<std::io::Stderr> {
    /// Lines on standard error, at most one per job or model every [`PLAIN_LINE_EVERY`].
    pub fn stderr() -> Self {
        ProgressLines::new(std::io::stderr())
    }
}

impl<W: Write + Send> ProgressLines<W> {
    /// Lines written to `out`, at most one per job or model every [`PLAIN_LINE_EVERY`].
    pub fn new(out: W) -> Self {
        ProgressLines {
            every: PLAIN_LINE_EVERY,
            state: Mutex::new(Lines {
                out,
                jobs: HashMap::new(),
                training: HashMap::new(),
                evals: HashMap::new(),
            }),
        }
    }

    /// At most one line per job or model every `every` (a step's time is its event's).
    #[must_use]
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// The writer, once the run is over.
    pub fn into_inner(self) -> W {
        self.state
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .out
    }

    fn write(&self, text: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(state.out, "{}", text.trim_end());
        let _ = state.out.flush();
    }
}

impl<W: Write + Send> Observer for ProgressLines<W> {
    fn message(&self, text: &str) {
        self.write(text);
    }

    fn plan(&self, plan: &Plan) {
        self.write(&plan.to_text());
    }

    fn job(&self, slice: &str, job: &FineTuneJob, retried: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.jobs.insert(slice.to_owned(), job.status) == Some(job.status) {
            return;
        }
        let retried = if retried > 0 {
            format!(", {retried} retries so far")
        } else {
            String::new()
        };
        let _ = writeln!(
            state.out,
            "fine-tune {slice}: {} [{}]{retried}",
            job.provider_status, job.id
        );
        let _ = state.out.flush();
    }

    fn job_event(&self, slice: &str, event: &JobEvent) {
        let every = self.every.as_secs() as i64;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = if let Some((step, total)) = resumed_at(&event.message) {
            Some(format!(
                "fine-tune {slice}: resumed at step {step} of {total} (from its checkpoint)"
            ))
        } else if let Some(step) = TrainingStep::parse(&event.message) {
            let training = state.training.entry(slice.to_owned()).or_default();
            let due = training
                .printed
                .is_none_or(|t| event.created_at - t >= every)
                || step.step >= step.total;
            let line = training.line(slice, &step, event.created_at);
            due.then(|| {
                training.printed = Some(event.created_at);
                line
            })
        } else if event.level == "error" || event.level == "warning" || event.level == "warn" {
            Some(format!(
                "fine-tune {slice}: {}: {}",
                event.level, event.message
            ))
        } else {
            None
        };
        if let Some(line) = line {
            let _ = writeln!(state.out, "{line}");
            let _ = state.out.flush();
        }
    }

    fn eval(&self, label: &str, p: &Progress) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let last = p.done == p.total;
        let due = state
            .evals
            .get(label)
            .is_none_or(|t| t.elapsed() >= self.every);
        if !(due || last) {
            return;
        }
        state.evals.insert(label.to_owned(), Instant::now());
        let _ = writeln!(
            state.out,
            "evaluate {label}: {}/{}, failed {}, retried {}",
            p.done, p.total, p.failed, p.retried
        );
        let _ = state.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_resumes_are_read_from_event_messages() {
        let check = |message: &str, expected: Option<TrainingStep>| {
            assert_eq!(TrainingStep::parse(message), expected, "{message}");
        };
        check(
            "step 12/40: loss 1.2345, learning rate 2.000e-4, 131.2 tokens/s",
            Some(TrainingStep {
                step: 12,
                total: 40,
                loss: Some(1.2345),
                tokens_per_second: Some(131.2),
            }),
        );
        check(
            "Step 3/100: training loss=0.51",
            Some(TrainingStep {
                step: 3,
                total: 100,
                loss: Some(0.51),
                tokens_per_second: None,
            }),
        );
        check("succeeded", None);
        check("step up: nothing", None);
        assert_eq!(resumed_at("resumed at step 10 of 40"), Some((10, 40)));
        assert_eq!(resumed_at("step 10/40"), None);
        for (seconds, shown) in [
            (0.0, "0s"),
            (42.4, "42s"),
            (185.0, "3m05s"),
            (3725.0, "1h02m"),
        ] {
            assert_eq!(format_duration(seconds), shown, "{seconds}");
        }
    }

    /// The plain lines of a recorded sequence: a job's states when they change, its steps
    /// at most once per 10 s of event time (the first and last always) with the time left
    /// from the pace so far, a resumed job's resume, nothing for other events, and no
    /// escape code or carriage return.
    #[test]
    fn plain_lines_of_a_recorded_sequence() {
        let job = |id: &str, status: JobStatus| FineTuneJob {
            id: id.to_owned(),
            status,
            provider_status: status.as_str().to_owned(),
            base_model: "m".to_owned(),
            fine_tuned_model: None,
            error: None,
            error_code: None,
            error_param: None,
            trained_tokens: None,
        };
        let event = |at: i64, message: String| JobEvent {
            created_at: at,
            level: "info".to_owned(),
            message,
        };
        let step = |at: i64, n: u64| {
            let loss = 2.2 - 0.1 * n as f64;
            event(
                at,
                format!(
                    "step {n}/12: loss {loss:.4}, learning rate {:.3e}, 128.0 tokens/s",
                    2e-4
                ),
            )
        };
        let lines = ProgressLines::new(Vec::new());
        lines.job("en-stem", &job("ftjob-a", JobStatus::Queued), 0);
        lines.job("en-stem", &job("ftjob-a", JobStatus::Running), 0);
        lines.job("en-stem", &job("ftjob-a", JobStatus::Running), 0);
        for n in 1..=12 {
            lines.job_event("en-stem", &step(96 + 4 * n as i64, n));
        }
        lines.job_event("en-stem", &event(145, "succeeded".to_owned()));
        lines.job("en-stem", &job("ftjob-a", JobStatus::Succeeded), 2);
        lines.job("de-stem", &job("ftjob-b", JobStatus::Running), 2);
        let resumed = "resumed at step 10 of 12 (from the checkpoint)".to_owned();
        lines.job_event("de-stem", &event(490, resumed));
        lines.job_event("de-stem", &step(500, 11));
        lines.job_event("de-stem", &step(503, 12));
        let out = String::from_utf8(lines.into_inner()).unwrap();
        let expected = "\
fine-tune en-stem: queued [ftjob-a]
fine-tune en-stem: running [ftjob-a]
fine-tune en-stem: step 1/12, loss 2.1000, 128 tokens/s
fine-tune en-stem: step 4/12, loss 1.8000, 128 tokens/s, ETA 32s
fine-tune en-stem: step 7/12, loss 1.5000, 128 tokens/s, ETA 20s
fine-tune en-stem: step 10/12, loss 1.2000, 128 tokens/s, ETA 8s
fine-tune en-stem: step 12/12, loss 1.0000, 128 tokens/s, ETA 0s
fine-tune en-stem: succeeded [ftjob-a], 2 retries so far
fine-tune de-stem: running [ftjob-b], 2 retries so far
fine-tune de-stem: resumed at step 10 of 12 (from its checkpoint)
fine-tune de-stem: step 11/12, loss 1.1000, 128 tokens/s
fine-tune de-stem: step 12/12, loss 1.0000, 128 tokens/s, ETA 0s
";
        assert_eq!(out, expected, "got:\n{out}\nexpected:\n{expected}");
        assert!(!out.contains(['\x1b', '\r']), "{out:?}");
    }
}
