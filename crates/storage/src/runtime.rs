//! The storage's own Tokio runtime, on one thread named `jakguard-storage`.
//!
//! Why not the caller's runtime: actix-web runs one single-threaded runtime per worker, and a
//! PostgreSQL connection is bound to the runtime that opened it; a pool shared by workers would
//! have each connection's I/O driven by whichever worker happened to open it. Here every
//! database operation runs on this runtime and callers await a `JoinHandle`, which works from
//! any executor (actix workers, `main`, tests). It also keeps the audit writer's retries off
//! the request path. The CLI (`jakguard report`) uses [`StorageRuntime::block_on`] from plain
//! threads.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::{OpenError, StorageError};

pub(crate) const THREAD_NAME: &str = "jakguard-storage";

pub(crate) struct StorageRuntime {
    handle: Handle,
    // Dropping the sender ends the runtime's thread.
    _stop: oneshot::Sender<()>,
}

impl StorageRuntime {
    pub(crate) fn start() -> Result<StorageRuntime, OpenError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(rt.handle().clone()));
                // Runs every spawned task until the owner goes away; the runtime is then
                // dropped here, on its own thread, which is the one place that is allowed.
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(|e| OpenError::Io(format!("cannot start the storage thread: {e}")))?;
        let handle = ready_rx
            .recv()
            .map_err(|_| OpenError::Io("the storage thread ended at start".into()))?
            .map_err(|e| OpenError::Io(format!("cannot start the storage runtime: {e}")))?;
        Ok(StorageRuntime {
            handle,
            _stop: stop_tx,
        })
    }

    /// Runs `fut` on the storage runtime; the answer can be awaited from any executor.
    pub(crate) fn run<F>(&self, fut: F) -> impl Future<Output = Result<F::Output, StorageError>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.handle.spawn(fut);
        async move {
            task.await
                .map_err(|e| StorageError::Unavailable(format!("storage task failed: {e}")))
        }
    }

    /// Runs `fut` and waits for it on this thread (start-up and the CLI: never on the
    /// storage thread itself, where it would wait forever).
    pub(crate) fn block_on<F>(&self, fut: F) -> Result<F::Output, StorageError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| StorageError::Unavailable("the storage runtime stopped".into()))
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }
}

/// Whether the current thread is the storage runtime's (where blocking waits would deadlock).
pub(crate) fn on_storage_thread() -> bool {
    std::thread::current().name() == Some(THREAD_NAME)
}
