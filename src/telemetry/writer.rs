//! Where log lines go: appended to one in-memory buffer, which a writer thread hands to stdout in
//! one `write(2)` about every millisecond. A logging thread only takes a lock and copies its line
//! (no channel message, no wake-up of the writer per line, no system call); an idle daemon's line
//! still shows within a millisecond. `tracing-appender`'s writer sends each line through a
//! channel and wakes its thread for it: at tens of thousands of lines a second that was a tenth
//! of the daemon's CPU (perf, create-session path). Nothing is dropped: when the buffer is full
//! (stdout not keeping up), loggers wait, as they would for stdout itself.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather after the first one before writing them.
const LINGER: Duration = Duration::from_millis(1);
/// Loggers wait beyond this much unwritten text.
const MAX_PENDING: usize = 4 << 20;

#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    /// The writer is asleep on `ready` (a logger finding the buffer empty wakes it).
    idle: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Lines are waiting (to the writer) or the buffer has room again (to loggers).
    ready: Condvar,
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The loggers' side: `MakeWriter` for the JSON and text layers.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// Stops the writer thread when dropped, after it has written every line logged before.
pub struct Flush {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A buffer and its writer thread, writing to `out`.
pub fn spawn<W: Write + Send + 'static>(mut out: W) -> (Lines, Flush) {
    let shared = Arc::new(Shared::default());
    let writer = shared.clone();
    let thread = std::thread::Builder::new()
        .name("authlink-log".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(64 * 1024);
            loop {
                let mut pending = writer.lock();
                while pending.text.is_empty() && !pending.stop {
                    pending.idle = true;
                    pending = writer
                        .ready
                        .wait(pending)
                        .unwrap_or_else(|e| e.into_inner());
                }
                pending.idle = false;
                let stop = pending.stop;
                if !stop {
                    // Let a busy daemon's lines gather into one write.
                    drop(pending);
                    std::thread::sleep(LINGER);
                    pending = writer.lock();
                }
                std::mem::swap(&mut batch, &mut pending.text);
                drop(pending);
                writer.room.notify_all();
                // A write error (stdout closed) loses these lines; there is nowhere to report it.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                if batch.capacity() > MAX_PENDING {
                    batch = Vec::with_capacity(64 * 1024);
                }
                if stop && writer.lock().text.is_empty() {
                    return;
                }
            }
        })
        .expect("the log writer thread starts");
    (
        Lines(shared.clone()),
        Flush {
            shared,
            thread: Some(thread),
        },
    )
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &Lines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let shared = &self.0;
        let mut pending = shared.lock();
        while pending.text.len() >= MAX_PENDING && !pending.stop {
            pending = shared.room.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
        pending.text.extend_from_slice(line);
        if pending.idle {
            pending.idle = false;
            shared.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_flush_is_dropped() {
        let out = Out::default();
        let (lines, flush) = spawn(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let line = format!("{{\"thread\":{t},\"n\":{i}}}\n");
                        (&lines).write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a whole line");
            let t = v["thread"].as_u64().unwrap() as usize;
            assert_eq!(
                v["n"].as_u64().unwrap(),
                next[t],
                "a thread's lines in order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4], "nothing lost");
    }
}
