//! Supervised background loops: [`supervise`] runs a loop as a tokio task and restarts it, with
//! a growing pause, whenever it panics or returns an error; each death is logged at `error`
//! with the loop's name and the panic message or error. A loop that returns normally has
//! ended on purpose (its stop was asked) and is not restarted. So no background loop of the
//! server (usage flush, projection runner, audit pruning, ...) can be silently gone.
//!
//! The pause starts at [`Backoff::initial`], doubles with every death up to
//! [`Backoff::max`], and starts over once a run has lasted [`Backoff::reset_after`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// How long a supervisor waits before restarting a loop that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first death.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
    /// A run at least this long resets the pause to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// What a loop's run ends with: `()` or `Ok(())` (ended on purpose), or an error (restarted).
pub trait LoopOutcome {
    /// `Err` with the message to log when the run failed.
    ///
    /// # Errors
    /// The run failed.
    fn into_result(self) -> Result<(), String>;
}

impl LoopOutcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> LoopOutcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:#}"))
    }
}

/// Runs the loop that `start` makes, restarting it with [`Backoff::default`] whenever it dies
/// (see the module docs). Aborting the returned handle stops the loop.
///
/// # Panics
/// Outside a tokio runtime.
pub fn supervise<F, Fut>(name: &'static str, start: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: LoopOutcome,
{
    supervise_with(name, Backoff::default(), start)
}

/// [`supervise`] with the given backoff.
///
/// # Panics
/// Outside a tokio runtime.
pub fn supervise_with<F, Fut>(name: &'static str, backoff: Backoff, mut start: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: LoopOutcome,
{
    tokio::spawn(async move {
        let mut pause = backoff.initial;
        loop {
            let started = Instant::now();
            let died = match CatchUnwind(Box::pin(start())).await {
                Ok(outcome) => match outcome.into_result() {
                    Ok(()) => {
                        tracing::debug!(background_loop = name, "background loop ended");
                        return;
                    }
                    Err(error) => error,
                },
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            if started.elapsed() >= backoff.reset_after {
                pause = backoff.initial;
            }
            tracing::error!(
                background_loop = name,
                error = %died,
                restart_in_ms = pause.as_millis() as u64,
                "background loop died; restarting it"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(backoff.max);
        }
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// A future that turns a panic while it is polled into `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::*;

    /// Log lines written while the test runs.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
            reset_after: Duration::from_secs(60),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_loop_that_panics_or_fails_is_logged_and_restarted_until_it_ends() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let handle = supervise_with("test loop", quick(), move || {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                match run {
                    0 => panic!("boom {run}"),
                    1 => Err(anyhow::anyhow!("store unavailable")),
                    _ => Ok(()),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the supervisor ends once the loop ends")
            .expect("the supervisor itself never panics");
        assert_eq!(runs.load(Ordering::SeqCst), 3, "started three times");
        let text = log.text();
        assert!(
            text.contains("background loop died") && text.contains("panicked: boom 0"),
            "{text}"
        );
        assert!(text.contains("store unavailable"), "{text}");
        assert!(text.contains("test loop"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn aborting_the_handle_stops_the_loop() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let handle = supervise_with("endless", quick(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        handle.abort();
        assert!(handle.await.unwrap_err().is_cancelled());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
