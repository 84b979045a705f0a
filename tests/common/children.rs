//! Log capture, interop peers (Python websockets) run as child processes, and the
//! directories that hold a test's socket files.

use super::*;

/// Keeps the log lines of the TCP client, so a test can count dial attempts (the client
/// logs every failed dial). Installed once per test binary; records of other targets
/// are dropped.
pub struct ClientLog {
    lines: Mutex<Vec<String>>,
}

impl log::Log for ClientLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target().starts_with("getty_transports::client")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

impl ClientLog {
    /// Installs the capture (once) and returns it.
    pub fn install() -> &'static ClientLog {
        static LOG: OnceLock<&'static ClientLog> = OnceLock::new();
        LOG.get_or_init(|| {
            let log: &'static ClientLog = Box::leak(Box::new(ClientLog {
                lines: Mutex::new(Vec::new()),
            }));
            log::set_logger(log).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Debug);
            log
        })
    }

    /// How many captured lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

// ---------------------------------------------------------------------------------------
// Interop peers (Python websockets)
// ---------------------------------------------------------------------------------------

/// The python of the interop venv (with the `websockets` package), installed once per test
/// binary by `tests/interop/install.sh`.
pub fn interop_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/install.sh");
        let out = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/interop/install.sh");
        assert!(
            out.status.success(),
            "installing Python websockets failed (needs python3 and access to PyPI)"
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

pub fn ws_peer_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ws_peer.py")
}

/// Kills the child when dropped (a failing test leaves no process behind).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit within `limit` and returns its stdout.
pub fn finish_child(mut child: Reaped, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
            assert!(status.success(), "the python peer failed ({status}): {out}");
            return out;
        }
        assert!(Instant::now() < deadline, "the python peer did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// Socket files
// ---------------------------------------------------------------------------------------

/// A fresh directory of one test (its unix sockets live there), removed with everything in
/// it when dropped. Named by the process, a sequence number and `name`, so tests running
/// at once never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("getty-{}-{seq}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's directory");
        TempDir(dir)
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
