//! The writer behind the log thread: buffered, and pausing briefly after each batch it writes.
//!
//! tracing-appender's thread blocks for the first line of a batch, drains the channel, then
//! flushes. Under load (one line per call, thousands per second) that drain usually finds one
//! or two lines, so the thread woke and wrote to standard error once per call or two: about
//! 0.5 `write` and 0.3 `sched_yield` system calls per call (strace under wrk), and 2 to 4 us
//! of CPU per call on a machine whose two cores also run the workers. After a flush that wrote
//! something, [`Gather`] sleeps for [`PAUSE`], so that the next batch holds what arrived
//! meanwhile (dozens of lines at these rates) and goes out in one `write`.
//!
//! What this costs: a line may appear up to [`PAUSE`] (plus the time of the write before it)
//! later than it was logged, and the first line after a quiet spell is not delayed at all (the pause follows a write,
//! it never precedes one). Nothing is dropped: the channel in front is bounded and not lossy,
//! so a worker that found it full would wait rather than lose a line (it holds 128,000 lines,
//! several seconds of the fastest logging measured, against a pause of 2 ms). A stopping
//! service's guard still flushes the tail: the pause adds at most [`PAUSE`] to the shutdown.

use std::io::{self, Write};
use std::time::Duration;

/// How long the log thread waits after writing a batch before it looks for the next one.
pub const PAUSE: Duration = Duration::from_millis(2);

/// A buffered writer that pauses after every flush that wrote something.
pub struct Gather<W: Write> {
    inner: io::BufWriter<W>,
    pause: Duration,
    /// Whether anything was written since the last flush.
    dirty: bool,
}

impl<W: Write> Gather<W> {
    pub fn new(inner: W) -> Self {
        Gather::with_pause(inner, PAUSE)
    }

    fn with_pause(inner: W, pause: Duration) -> Self {
        Gather {
            inner: io::BufWriter::with_capacity(64 * 1024, inner),
            pause,
            dirty: false,
        }
    }
}

impl<W: Write> Write for Gather<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.dirty |= !buf.is_empty();
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()?;
        if std::mem::take(&mut self.dirty) && !self.pause.is_zero() {
            std::thread::sleep(self.pause);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// A sink that records each `write` it receives.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_of_a_batch_reach_the_sink_in_one_write_at_the_flush() {
        let sink = Sink::default();
        let mut w = Gather::with_pause(sink.clone(), Duration::ZERO);
        w.write_all(b"{\"a\":1}\n").unwrap();
        w.write_all(b"{\"b\":2}\n").unwrap();
        assert!(
            sink.0.lock().unwrap().is_empty(),
            "nothing before the flush"
        );
        w.flush().unwrap();
        assert_eq!(
            *sink.0.lock().unwrap(),
            vec![b"{\"a\":1}\n{\"b\":2}\n".to_vec()]
        );
    }

    #[test]
    fn a_flush_pauses_only_after_writing_something() {
        let sink = Sink::default();
        // Long enough that a descheduled test thread cannot pass for a pause.
        let pause = Duration::from_millis(300);
        let mut w = Gather::with_pause(sink.clone(), pause);
        // Nothing written: no pause (the thread must not sleep when it has nothing to say).
        let t = Instant::now();
        w.flush().unwrap();
        assert!(t.elapsed() < pause, "an empty flush paused");
        // Written: the line is out before the pause starts, and the flush then pauses.
        w.write_all(b"line\n").unwrap();
        let t = Instant::now();
        w.flush().unwrap();
        assert!(t.elapsed() >= pause, "a flush after a write did not pause");
        assert_eq!(*sink.0.lock().unwrap(), vec![b"line\n".to_vec()]);
        // The pause is taken once per batch, not again on the next empty flush.
        let t = Instant::now();
        w.flush().unwrap();
        assert!(t.elapsed() < pause);
    }
}
