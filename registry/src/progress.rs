//! Download progress bars (bytes and bytes/s) on stderr; indicatif hides
//! them when stderr is not a terminal.

pub(crate) struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub fn new(enabled: bool, total: Option<u64>, label: &str) -> Bar {
        if !enabled {
            return Bar(None);
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::no_length(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        Bar(Some(bar))
    }

    pub fn set_position(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    pub fn set_length(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_length(n);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// hf-hub reports through its own trait.
impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, _filename: &str) {
        self.set_length(size as u64);
        self.set_position(0);
    }
    fn update(&mut self, size: usize) {
        self.inc(size as u64);
    }
    fn finish(&mut self) {}
}
