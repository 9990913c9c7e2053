//! What a person sees while an audit or a pair fit runs: on a terminal, a
//! live bar per stage (model and what it embeds, images done / total,
//! images per second, time left); otherwise (CI, a log) the lines of
//! [`ProgressLines`] (a running stage at most every
//! [`zooaudit_audit::progress::LINE_EVERY`], and its end); with `--quiet`,
//! nothing. Never both a bar and lines. At the end, what the embedding
//! cache saved.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use zooaudit_audit::Progress;
use zooaudit_audit::progress::{LINE_EVERY, ProgressLines};

enum Mode {
    /// The stage shown and its bar.
    Terminal(Option<(String, ProgressBar)>),
    Lines(ProgressLines),
    Quiet,
}

/// Turns [`Progress`] events into a bar or lines on stderr.
pub struct Reporter {
    mode: Mode,
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
            Mode::Terminal(None)
        } else {
            Mode::Lines(ProgressLines::new(LINE_EVERY))
        };
        Reporter {
            mode,
            hits: 0,
            misses: 0,
            embed_seconds: 0.0,
        }
    }

    /// Whether nothing is shown.
    pub fn quiet(&self) -> bool {
        matches!(self.mode, Mode::Quiet)
    }

    /// Shows one event.
    pub fn event(&mut self, p: Progress) {
        if let Progress::Embedding {
            images,
            cached,
            seconds,
            ..
        } = &p
        {
            let fresh = images - cached.min(images);
            self.hits += cached.min(images);
            self.misses += fresh;
            if fresh > 0 {
                self.embed_seconds += seconds;
            }
        }
        match &mut self.mode {
            Mode::Quiet => {}
            Mode::Lines(lines) => {
                if let Some(l) = lines.line(&p) {
                    eprintln!("{l}");
                }
            }
            Mode::Terminal(shown) => {
                if let Some(r) = p.running() {
                    if shown.as_ref().is_none_or(|(k, _)| *k != r.stage) {
                        clear(shown);
                        let bar = ProgressBar::with_draw_target(
                            Some(r.total as u64),
                            ProgressDrawTarget::stderr(),
                        );
                        bar.set_style(
                            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                        );
                        bar.set_prefix(r.stage.clone());
                        *shown = Some((r.stage.clone(), bar));
                    }
                    if let Some((_, bar)) = shown {
                        bar.set_position(r.done as u64);
                        bar.set_message(r.message);
                    }
                } else if let Some(l) = p.line() {
                    clear(shown);
                    eprintln!("{l}");
                }
            }
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

fn clear(shown: &mut Option<(String, ProgressBar)>) {
    if let Some((_, bar)) = shown.take() {
        bar.finish_and_clear();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Mode::Terminal(shown) = &mut self.mode {
            clear(shown);
        }
    }
}
