//! [`StopSignals`]: SIGTERM, SIGINT and SIGQUIT handling armed before a server can answer.
//!
//! actix-web installs its own handlers only when the server future is first polled, and only
//! after its workers and its accept thread have started: for a moment the server answers
//! requests while SIGTERM still has its default action, and a service manager (or a client)
//! that stops the service right after its first answer kills it instead of stopping it cleanly.
//! The handlers here are installed when [`StopSignals::arm`] returns, and a signal that arrives
//! from then on is kept until [`StopSignals::recv`] reads it.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Which stop signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: stop gracefully (the service manager's stop request).
    Terminate,
    /// SIGINT: stop now (Ctrl-C).
    Interrupt,
    /// SIGQUIT: stop now.
    Quit,
}

impl StopSignal {
    /// Whether in-flight requests get the server's shutdown timeout to finish: only for
    /// SIGTERM, as actix-web does.
    pub fn graceful(self) -> bool {
        self == StopSignal::Terminate
    }

    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
        }
    }
}

/// SIGTERM, SIGINT and SIGQUIT, caught from the moment [`StopSignals::arm`] returns.
///
/// Arm them before the server is bound (or at least before it is first polled), and hand them to
/// [`super::run_until_restart_with`]; [`super::run_until_restart`] arms them itself on entry.
#[derive(Debug)]
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
    quit: Signal,
}

impl StopSignals {
    /// Installs the handlers now: from here on these signals no longer end the process by their
    /// default action, and each one is delivered to [`StopSignals::recv`].
    ///
    /// # Errors
    ///
    /// When the OS refuses to install a handler.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime with its I/O driver enabled (actix's `System`
    /// has one).
    pub fn arm() -> io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Waits for the next stop signal, including one that arrived since [`StopSignals::arm`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal not yet returned stays pending for the next call.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.terminate.recv() => StopSignal::Terminate,
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.quit.recv() => StopSignal::Quit,
        }
    }
}
