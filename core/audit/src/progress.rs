//! Progress as text, for every front end: the running state of a stage (a
//! terminal bar's message) and the lines a log gets — a stage's end and
//! one-off steps always, a running stage at most once per interval. The
//! CLI draws bars from [`Progress::running`] on a terminal and prints
//! [`ProgressLines`] otherwise; the zoo service's workers log the lines.

use std::time::{Duration, Instant};

use crate::Progress;

/// The least time between two lines of one running stage in a log.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// A running stage: what it is, images (or photos) done of the total, and
/// its rate and time left as text.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub stage: String,
    pub done: usize,
    pub total: usize,
    /// What `done` counts: `images` or `photos`.
    pub unit: &'static str,
    pub message: String,
}

impl Progress {
    /// The running state this event shows, or `None` for an event that
    /// ends a stage or is a one-off step ([`Progress::line`]).
    pub fn running(&self) -> Option<Running> {
        match self {
            Progress::Embedded {
                model,
                what,
                done,
                total,
                cached,
                seconds,
            } => {
                let fresh = done.saturating_sub(*cached);
                let rate = (*seconds > 0.0 && fresh > 0).then(|| fresh as f64 / seconds);
                let mut message = match rate {
                    Some(r) => format!(
                        "{r:.1} images/s, {} left",
                        duration((total - done.min(total)) as f64 / r)
                    ),
                    None => "starting".to_string(),
                };
                if *cached > 0 {
                    message.push_str(&format!(" ({cached} cached)"));
                }
                Some(Running {
                    stage: format!("embedding {model}: {what}"),
                    done: *done,
                    total: *total,
                    unit: "images",
                    message,
                })
            }
            Progress::Aligning {
                photos,
                total,
                faces,
                seconds,
            } if photos < total => {
                let rate = *photos as f64 / seconds.max(1e-9);
                let left = (total - photos) as f64 / rate.max(1e-9);
                Some(Running {
                    stage: "aligning photos".into(),
                    done: *photos,
                    total: *total,
                    unit: "photos",
                    message: format!("{faces} faces, {rate:.1} photos/s, {} left", duration(left)),
                })
            }
            _ => None,
        }
    }

    /// The line of an event that ends a stage or is a one-off step.
    pub fn line(&self) -> Option<String> {
        match self {
            Progress::Embedding {
                model,
                what,
                images,
                cached,
                seconds,
            } => {
                let fresh = images - cached.min(images);
                let rate = if *seconds > 0.0 && fresh > 0 {
                    format!(", {:.1} images/s", fresh as f64 / seconds)
                } else {
                    String::new()
                };
                Some(format!(
                    "embedding {model}: {what}: {images} images ({cached} cached{rate}, {seconds:.1} s)"
                ))
            }
            Progress::Aligning {
                photos,
                total,
                faces,
                seconds,
            } if photos >= total => Some(format!(
                "aligning: {photos}/{total} photos, {faces} faces ({:.1} photos/s)",
                *photos as f64 / seconds.max(1e-9)
            )),
            Progress::Pair {
                probe,
                reference,
                step,
            } => Some(format!("pair {probe} → {reference}: {step}")),
            _ => None,
        }
    }
}

/// Progress for a log: every stage end and step, and a running stage's
/// state at most once per `every` (none before it has run that long).
#[derive(Debug)]
pub struct ProgressLines {
    every: Duration,
    current: Option<(String, Instant)>,
}

impl ProgressLines {
    pub fn new(every: Duration) -> Self {
        ProgressLines {
            every,
            current: None,
        }
    }

    /// The line to print for `p`, if any.
    pub fn line(&mut self, p: &Progress) -> Option<String> {
        if let Some(line) = p.line() {
            self.current = None;
            return Some(line);
        }
        let r = p.running()?;
        let now = Instant::now();
        match &self.current {
            Some((stage, last)) if *stage == r.stage => {
                if now.duration_since(*last) < self.every {
                    return None;
                }
                self.current = Some((r.stage.clone(), now));
                Some(format!(
                    "{}: {}/{} {}, {}",
                    r.stage, r.done, r.total, r.unit, r.message
                ))
            }
            _ => {
                self.current = Some((r.stage, now));
                None
            }
        }
    }
}

/// Seconds as "1 h 2 min", "3 min 4 s" or "5 s".
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn embedded(done: usize) -> Progress {
        Progress::Embedded {
            model: "m".into(),
            what: "clean".into(),
            done,
            total: 100,
            cached: 10,
            seconds: 2.0,
        }
    }

    #[test]
    fn durations_read_like_a_person_says_them() {
        assert_eq!(duration(4.4), "4 s");
        assert_eq!(duration(184.0), "3 min 4 s");
        assert_eq!(duration(3720.0), "1 h 2 min");
    }

    #[test]
    fn a_running_stage_shows_its_rate_over_the_images_it_embedded() {
        let r = embedded(30).running().unwrap();
        assert_eq!(r.stage, "embedding m: clean");
        assert_eq!((r.done, r.total), (30, 100));
        // 20 embedded in 2 s: 10 images/s, 70 left: 7 s.
        assert_eq!(r.message, "10.0 images/s, 7 s left (10 cached)");
    }

    #[test]
    fn a_log_gets_a_running_stage_at_most_once_per_interval() {
        let mut l = ProgressLines::new(Duration::from_millis(200));
        assert_eq!(l.line(&embedded(20)), None, "not at the start");
        assert_eq!(l.line(&embedded(30)), None, "not within the interval");
        std::thread::sleep(Duration::from_millis(250));
        let line = l.line(&embedded(40)).unwrap();
        assert!(
            line.starts_with("embedding m: clean: 40/100 images, "),
            "{line}"
        );
        assert_eq!(l.line(&embedded(50)), None);
        let end = Progress::Embedding {
            model: "m".into(),
            what: "clean".into(),
            images: 100,
            cached: 10,
            seconds: 9.0,
        };
        assert_eq!(
            l.line(&end).unwrap(),
            "embedding m: clean: 100 images (10 cached, 10.0 images/s, 9.0 s)"
        );
    }
}
