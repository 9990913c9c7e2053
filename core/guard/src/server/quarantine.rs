//! The quarantine: every disagreement appended to the JSON-lines log, and
//! the image kept when there is a quarantine directory.

use std::io::Write;
use std::time::SystemTime;

use serde_json::json;

use super::AppState;
use crate::pair::Decision;

impl AppState {
    pub(super) fn quarantine(&self, d: &Decision, bytes: &[u8]) {
        let line = json!({
            "time": humantime_now(),
            "image_sha256": d.image_sha256,
            "score": d.score,
            "threshold": d.threshold,
            "operating_point": self.opts.operating_point,
        });
        let mut f = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = f.as_mut()
            && let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush())
        {
            eprintln!("warning: quarantine log: {e}");
        }
        drop(f);
        if let Some(dir) = &self.opts.quarantine_dir {
            // Written whole or not at all (a kill mid-write leaves no
            // truncated image under the digest's name).
            let path = dir.join(format!("{}.img", d.image_sha256));
            let kept = std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))
                .and_then(|()| {
                    zooaudit_formats::write_atomic(&path, bytes).map_err(|e| e.to_string())
                });
            if let Err(e) = kept {
                eprintln!("warning: quarantine image not kept: {e}");
            }
        }
    }
}

pub(super) fn humantime_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}
