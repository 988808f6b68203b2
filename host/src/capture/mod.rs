//! Capture: the gateway's traffic written to a file while it serves, for `sluice replay` to run
//! again (against a candidate fleet or strategy) or to evaluate offline (against a candidate
//! policy set). Off by default; started and stopped through the admin API (`/api/capture`) or at
//! boot (`capture.start`), bounded in size and time.
//!
//! The data path only hands finished events to a bounded channel (no I/O, no serialization on
//! the runtime's threads); one writer thread serializes them ([`format`]) and writes. When the
//! channel is full an event is dropped and counted (the capture's last line says how many), so
//! a slow disk never slows statements. The file holds statements with their literals unless the
//! capture redacts them: it is created 0600.

pub mod format;
pub mod offline;
pub mod player;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use format::{BackendInfo, Event, FORMAT, Header, VERSION, What};

/// Events waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;

/// How often the writer flushes what it wrote, at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How long the writer sleeps when the queue is empty (the queue holds far more than arrives
/// meanwhile).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// What a capture is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureOptions {
    pub file: PathBuf,
    /// Stop when the file reaches this size.
    pub max_bytes: u64,
    /// Stop after this long.
    pub max_secs: u64,
    /// Statements as their digests (literals replaced by `?`).
    pub redact_literals: bool,
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("a capture is already running (into {0})")]
    Running(String),
    #[error("captures are not enabled: set capture.dir to the directory they are written to")]
    NoDirectory,
    #[error("capture name {0:?}: a file name (letters, digits, '.', '-', '_'), not a path")]
    BadName(String),
    #[error("cannot create {file}: {why}")]
    Create { file: String, why: String },
}

/// A capture as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaptureStatus {
    pub file: String,
    pub running: bool,
    pub events: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub seconds: f64,
    pub redacted: bool,
    /// Why it stopped, once it has.
    pub stopped: Option<String>,
}

/// A running (or finished) capture.
pub struct Recorder {
    /// Tells captures apart: a session announces itself once per capture.
    pub id: u64,
    pub redacted: bool,
    file: PathBuf,
    started: Instant,
    deadline: Instant,
    tx: SyncSender<Event>,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writer and the data path both see.
#[derive(Default)]
struct Shared {
    stopped: AtomicBool,
    stop_reason: Mutex<Option<String>>,
    events: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    /// Why the capture stopped (empty while it runs).
    fn reason(&self) -> String {
        self.stop_reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_default()
    }

    fn stop(&self, reason: &str) {
        if !self.stopped.swap(true, Ordering::Relaxed)
            && let Ok(mut r) = self.stop_reason.lock()
        {
            *r = Some(reason.to_string());
        }
    }
}

impl Recorder {
    /// Creates `opts.file` (0600, refusing to overwrite one), writes the header with `backends`,
    /// and starts the writer.
    pub fn start(
        id: u64,
        opts: &CaptureOptions,
        backends: Vec<BackendInfo>,
    ) -> Result<Arc<Self>, CaptureError> {
        let file = create_private(&opts.file).map_err(|e| CaptureError::Create {
            file: opts.file.display().to_string(),
            why: e.to_string(),
        })?;
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            sluice: env!("CARGO_PKG_VERSION").into(),
            started_unix_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            redacted: opts.redact_literals,
            backends,
        };
        let mut out = std::io::BufWriter::new(file);
        let first = serde_json::to_vec(&header).map_err(|e| CaptureError::Create {
            file: opts.file.display().to_string(),
            why: e.to_string(),
        })?;
        out.write_all(&first)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| CaptureError::Create {
                file: opts.file.display().to_string(),
                why: e.to_string(),
            })?;
        let shared = Arc::new(Shared::default());
        shared
            .bytes
            .store(first.len() as u64 + 1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(QUEUE);
        let writer = {
            let shared = Arc::clone(&shared);
            let max = opts.max_bytes;
            std::thread::Builder::new()
                .name("sluice-capture".into())
                .spawn(move || write_events(&rx, out, &shared, max))
                .map_err(|e| CaptureError::Create {
                    file: opts.file.display().to_string(),
                    why: format!("cannot start its writer: {e}"),
                })?
        };
        let started = Instant::now();
        Ok(Arc::new(Self {
            id,
            redacted: opts.redact_literals,
            file: opts.file.clone(),
            started,
            deadline: started + Duration::from_secs(opts.max_secs.max(1)),
            tx,
            shared,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Whether events are still taken.
    pub fn running(&self) -> bool {
        !self.shared.stopped.load(Ordering::Relaxed)
    }

    /// Microseconds from the capture's start to `at` (0 before it).
    pub fn offset_us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }

    /// Hands an event to the writer: never waits; a full queue drops it (counted).
    pub fn record(&self, event: Event) {
        if !self.running() {
            return;
        }
        if Instant::now() >= self.deadline {
            self.shared.stop("time limit");
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.shared.stop("the writer failed"),
        }
    }

    /// Stops taking events, lets the writer finish the file, and says how it ended.
    pub fn stop(&self, reason: &str) -> CaptureStatus {
        self.shared.stop(reason);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            // The writer's last line: the reason and what was dropped.
            let end = Event {
                t: self.offset_us(Instant::now()),
                c: 0,
                what: What::End {
                    reason: self.stop_reason(),
                    dropped: self.shared.dropped.load(Ordering::Relaxed),
                },
            };
            let _ = self.tx.send(end);
            let _ = h.join();
        }
        self.status()
    }

    fn stop_reason(&self) -> String {
        self.shared.reason()
    }

    pub fn status(&self) -> CaptureStatus {
        let running = self.running();
        CaptureStatus {
            file: self.file.display().to_string(),
            running,
            events: self.shared.events.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs_f64(),
            redacted: self.redacted,
            stopped: (!running).then(|| self.stop_reason()),
        }
    }
}

/// The writer thread: serializes events, one per line, until the end event, a size limit, or
/// the recorder going away.
fn write_events(
    rx: &Receiver<Event>,
    mut out: std::io::BufWriter<std::fs::File>,
    shared: &Shared,
    max_bytes: u64,
) {
    let mut line = Vec::with_capacity(512);
    let mut flushed = Instant::now();
    loop {
        // Polled, not waited on: a sender never has to wake this thread (a wake-up per event
        // costs the data path more than the event itself on a small machine).
        let event = match rx.try_recv() {
            Ok(e) => e,
            Err(TryRecvError::Empty) => {
                if flushed.elapsed() >= FLUSH_EVERY {
                    flushed = Instant::now();
                    if out.flush().is_err() {
                        shared.stop("cannot write the file");
                        return;
                    }
                }
                std::thread::sleep(POLL_EVERY);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let last = matches!(event.what, What::End { .. });
        line.clear();
        if serde_json::to_writer(&mut line, &event).is_err() {
            continue;
        }
        line.push(b'\n');
        if out.write_all(&line).is_err() {
            shared.stop("cannot write the file");
            break;
        }
        let bytes =
            shared.bytes.fetch_add(line.len() as u64, Ordering::Relaxed) + line.len() as u64;
        if !last {
            shared.events.fetch_add(1, Ordering::Relaxed);
        }
        if last {
            break;
        }
        if bytes >= max_bytes {
            // Cut here, whatever is still queued: the file keeps to its limit.
            shared.stop("size limit");
            let reason = shared.reason();
            let end = Event {
                t: event.t,
                c: 0,
                what: What::End {
                    reason,
                    dropped: shared.dropped.load(Ordering::Relaxed),
                },
            };
            if let Ok(mut l) = serde_json::to_vec(&end) {
                l.push(b'\n');
                let _ = out.write_all(&l);
            }
            break;
        }
    }
    let _ = out.flush();
}

/// Creates `path` readable by its owner only, failing if it exists.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// The file a capture named `name` is written to, in `dir`.
pub fn file_in(dir: Option<&Path>, name: &str) -> Result<PathBuf, CaptureError> {
    let dir = dir.ok_or(CaptureError::NoDirectory)?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !plain {
        return Err(CaptureError::BadName(name.to_string()));
    }
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::format::Capture;
    use super::*;

    fn options(dir: &Path, name: &str) -> CaptureOptions {
        CaptureOptions {
            file: dir.join(name),
            max_bytes: 1 << 20,
            max_secs: 60,
            redact_literals: false,
        }
    }

    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-capture-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_capture_is_private_ends_with_its_reason_and_reads_back() {
        let d = dir("private");
        let rec = Recorder::start(1, &options(&d, "a.jsonl"), Vec::new()).expect("starts");
        for i in 0..3 {
            rec.record(Event {
                t: i,
                c: 9,
                what: What::InitDb {
                    schema: format!("s{i}"),
                },
            });
        }
        let status = rec.stop("stopped by the admin API");
        assert!(!status.running);
        assert_eq!((status.events, status.dropped), (3, 0));
        rec.record(Event {
            t: 9,
            c: 9,
            what: What::Quit,
        });
        let back = Capture::open(&d.join("a.jsonl")).expect("reads");
        assert_eq!(back.events.len(), 4);
        assert!(matches!(
            &back.events[3].what,
            What::End { reason, dropped: 0 } if reason == "stopped by the admin API"
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join("a.jsonl"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = Recorder::start(2, &options(&d, "a.jsonl"), Vec::new());
        assert!(again.is_err(), "an existing capture is not overwritten");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_size_limit_stops_a_capture_and_names_only_plain_files() {
        let d = dir("size");
        let mut o = options(&d, "b.jsonl");
        o.max_bytes = 400;
        let rec = Recorder::start(1, &o, Vec::new()).expect("starts");
        for i in 0..100 {
            rec.record(Event {
                t: i,
                c: 1,
                what: What::InitDb {
                    schema: "x".repeat(40),
                },
            });
        }
        // Stopped at once: the writer still cuts what is queued at the limit.
        let status = rec.stop("stopped");
        assert!(
            status.stopped.is_some() && status.bytes < 400 + 200,
            "{status:?}"
        );
        let back = Capture::open(&d.join("b.jsonl")).expect("reads");
        assert!(matches!(
            &back.events.last().map(|e| &e.what),
            Some(What::End { .. })
        ));
        assert!(back.events.len() < 10, "{}", back.events.len());
        for bad in ["../x", "a/b", ".hidden", ""] {
            assert!(file_in(Some(&d), bad).is_err(), "{bad}");
        }
        assert!(file_in(None, "ok.jsonl").is_err());
        assert_eq!(
            file_in(Some(&d), "ok.jsonl").expect("ok"),
            d.join("ok.jsonl")
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
