//! What a person sees while an audit or a pair fit runs: on a terminal, a
//! live bar per stage (model and what it embeds, images done / total,
//! images per second, time left); otherwise (CI, a service's log) a plain
//! line per stage every [`LINE_EVERY`] at most, and one when it ends; with
//! `--quiet`, nothing. Never both a bar and lines. At the end, what the
//! embedding cache saved.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zooaudit_audit::Progress;

/// The least time between two plain lines of one stage.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Terminal,
    Lines,
    Quiet,
}

/// Turns [`Progress`] events into a bar or lines on stderr.
pub struct Reporter {
    mode: Mode,
    /// The stage being shown (its key) and its bar, on a terminal.
    bar: Option<(String, ProgressBar)>,
    /// The stage being shown in lines, and when its last line was printed.
    line: Option<(String, Instant)>,
    /// Images read from the cache, images embedded, seconds spent embedding.
    hits: usize,
    misses: usize,
    embed_seconds: f64,
}

impl Reporter {
    /// A bar on a terminal, lines otherwise, nothing when `quiet`.
    /// `ZOOAUDIT_PROGRESS=lines` asks for lines on a terminal too.
    pub fn new(quiet: bool) -> Self {
        let lines_asked = std::env::var("ZOOAUDIT_PROGRESS").is_ok_and(|v| v == "lines");
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !lines_asked {
            Mode::Terminal
        } else {
            Mode::Lines
        };
        Reporter {
            mode,
            bar: None,
            line: None,
            hits: 0,
            misses: 0,
            embed_seconds: 0.0,
        }
    }

    /// Whether anything is shown.
    pub fn quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// Shows one event.
    pub fn event(&mut self, p: Progress) {
        match p {
            Progress::Embedded {
                model,
                what,
                done,
                total,
                cached,
                seconds,
            } => {
                let key = format!("embedding {model}: {what}");
                let fresh = done.saturating_sub(cached);
                let rate = (seconds > 0.0 && fresh > 0).then(|| fresh as f64 / seconds);
                let left = rate.map(|r| (total - done.min(total)) as f64 / r);
                let mut msg = match rate {
                    Some(r) => format!("{r:.1} images/s"),
                    None => "starting".to_string(),
                };
                if let Some(l) = left {
                    msg.push_str(&format!(", {} left", duration(l)));
                }
                if cached > 0 {
                    msg.push_str(&format!(" ({cached} cached)"));
                }
                self.show(&key, done, total, &msg);
            }
            Progress::Embedding {
                model,
                what,
                images,
                cached,
                seconds,
            } => {
                let fresh = images - cached.min(images);
                self.hits += cached.min(images);
                self.misses += fresh;
                if fresh > 0 {
                    self.embed_seconds += seconds;
                }
                let rate = if seconds > 0.0 && fresh > 0 {
                    format!(", {:.1} images/s", fresh as f64 / seconds)
                } else {
                    String::new()
                };
                self.end(&format!(
                    "embedding {model}: {what}: {images} images ({cached} cached{rate}, {seconds:.1} s)"
                ));
            }
            Progress::Aligning {
                photos,
                total,
                faces,
                seconds,
            } => {
                let rate = photos as f64 / seconds.max(1e-9);
                let left = (total - photos.min(total)) as f64 / rate.max(1e-9);
                let msg = format!("{faces} faces, {rate:.1} photos/s, {} left", duration(left));
                if photos >= total {
                    self.end(&format!(
                        "aligning: {photos}/{total} photos, {faces} faces ({rate:.1} photos/s)"
                    ));
                } else {
                    self.show("aligning photos", photos, total, &msg);
                }
            }
            Progress::Pair {
                probe,
                reference,
                step,
            } => self.end(&format!("pair {probe} → {reference}: {step}")),
        }
    }

    /// A stage goes on.
    fn show(&mut self, key: &str, done: usize, total: usize, msg: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Terminal => {
                if self.bar.as_ref().is_none_or(|(k, _)| k != key) {
                    self.clear();
                    let bar = ProgressBar::with_draw_target(
                        Some(total as u64),
                        ProgressDrawTarget::stderr(),
                    );
                    bar.set_style(
                        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(key.to_string());
                    self.bar = Some((key.to_string(), bar));
                }
                if let Some((_, bar)) = &self.bar {
                    bar.set_message(msg.to_string());
                    bar.set_position(done as u64);
                }
            }
            Mode::Lines => {
                let now = Instant::now();
                match &self.line {
                    Some((k, last)) if k == key => {
                        if now.duration_since(*last) >= LINE_EVERY {
                            eprintln!("{key}: {done}/{total} images, {msg}");
                            self.line = Some((key.to_string(), now));
                        }
                    }
                    // A new stage prints nothing until it has run a while.
                    _ => self.line = Some((key.to_string(), now)),
                }
            }
        }
    }

    /// A stage ended (or a one-off step): its line, in every mode but quiet.
    fn end(&mut self, text: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        self.clear();
        self.line = None;
        eprintln!("{text}");
    }

    fn clear(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// What the embedding cache saved, one line.
    pub fn cache_line(&self, dir: Option<&str>) -> String {
        let total = self.hits + self.misses;
        format!(
            "cache: {} of {total} images from the cache, {} embedded in {:.1} s ({})",
            self.hits,
            self.misses,
            self.embed_seconds,
            dir.unwrap_or("no cache")
        )
    }

    /// Images from the cache, images embedded, seconds spent embedding.
    pub fn cache_use(&self) -> (usize, usize, f64) {
        (self.hits, self.misses, self.embed_seconds)
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Seconds as "1 h 2 min", "3 min 4 s" or "5 s".
fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_says_them() {
        assert_eq!(duration(4.4), "4 s");
        assert_eq!(duration(184.0), "3 min 4 s");
        assert_eq!(duration(3720.0), "1 h 2 min");
    }
}
