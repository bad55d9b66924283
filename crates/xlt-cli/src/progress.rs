//! The study's progress on a terminal (indicatif bars) or in a file (plain lines).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use xlt_provider::{FineTuneJob, JobEvent, Progress};
use xlt_study::{Plan, ProgressLines, StudyError, TrainingStep};

/// Progress of a run: bars on a terminal; without one, the library's plain lines
/// ([`ProgressLines`]: bounded rate, no escape codes).
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Without a terminal: plain lines instead of bars.
    lines: Option<ProgressLines<std::io::Stderr>>,
}

impl Bars {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Bars {
        let tty = std::io::stderr().is_terminal();
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            lines: (!tty).then(ProgressLines::stderr),
        }
    }

    /// Shows `key`'s state on the terminal: a spinner (`len` None) or a bar of `len`.
    fn show(&self, key: &str, len: Option<(u64, u64)>, msg: String, last: bool) {
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(key.to_owned()).or_insert_with(|| {
            let (b, template) = match len {
                Some(_) => (
                    ProgressBar::new(0),
                    "{prefix:>23} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                ),
                None => (
                    ProgressBar::new_spinner(),
                    "{spinner} {prefix}: {msg} ({elapsed})",
                ),
            };
            b.set_style(
                ProgressStyle::with_template(template)
                    .unwrap()
                    .progress_chars("=> "),
            );
            b.set_prefix(key.to_owned());
            if len.is_none() {
                b.enable_steady_tick(Duration::from_millis(200));
            }
            self.multi.add(b)
        });
        if let Some((pos, n)) = len {
            bar.set_length(n);
            bar.set_position(pos);
        }
        bar.set_message(msg);
        if last {
            bar.finish();
        }
    }
}

impl xlt_study::Observer for Bars {
    fn message(&self, text: &str) {
        if let Some(lines) = &self.lines {
            return lines.message(text);
        }
        if self.multi.is_hidden() || self.multi.println(text).is_err() {
            eprintln!("{text}");
        }
    }

    fn plan(&self, plan: &Plan) {
        eprint!("{}", plan.to_text());
    }

    fn confirm(&self, _plan: &Plan) -> Result<(), StudyError> {
        use std::io::Write;
        let refuse = |m: &str| Err(StudyError::Refused(m.to_owned()));
        if !std::io::stdin().is_terminal() {
            return refuse("this run costs money; pass --yes to proceed without a prompt");
        }
        eprint!("Proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        match answer.trim() {
            "y" | "Y" | "yes" => Ok(()),
            _ => refuse("not confirmed; nothing was spent"),
        }
    }

    fn job(&self, slice: &str, job: &FineTuneJob, retried: u64) {
        if let Some(lines) = &self.lines {
            return lines.job(slice, job, retried);
        }
        let msg = format!("{} [{}] retried {retried}", job.provider_status, job.id);
        self.show(
            &format!("fine-tune {slice}"),
            None,
            msg,
            job.status.is_terminal(),
        );
    }

    fn job_event(&self, slice: &str, event: &JobEvent) {
        if let Some(lines) = &self.lines {
            return lines.job_event(slice, event);
        }
        if let Some(s) = TrainingStep::parse(&event.message) {
            let loss = s.loss.map(|l| format!("loss {l:.4}")).unwrap_or_default();
            let rate = s.tokens_per_second.map(|r| format!(", {r:.0} tokens/s"));
            let msg = loss + &rate.unwrap_or_default();
            let key = format!("train {slice}");
            self.show(&key, Some((s.step, s.total)), msg, s.step >= s.total);
        } else if let Some((step, total)) = xlt_study::resumed_at(&event.message) {
            self.message(&format!(
                "fine-tune {slice}: resumed at step {step} of {total}"
            ));
        }
    }

    fn eval(&self, label: &str, p: &Progress) {
        if let Some(lines) = &self.lines {
            return lines.eval(label, p);
        }
        let msg = format!("failed {} retried {}", p.failed, p.retried);
        let key = format!("evaluate {label}");
        self.show(&key, Some((p.done, p.total)), msg, p.done == p.total);
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}
