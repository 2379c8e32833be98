//! Turns SIGINT and SIGTERM into a request to stop, which every render loop watches.

use tokio::sync::watch;

/// A stop request that render loops wait on alongside their work.
pub struct Stop(watch::Receiver<Option<&'static str>>);

impl Stop {
    /// Stops on the first SIGINT or SIGTERM; a second one ends the process at once.
    pub fn on_signals() -> Stop {
        use tokio::signal::unix::{signal, SignalKind};
        let (sender, receiver) = watch::channel(None);
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        if let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) {
            tokio::spawn(async move {
                let name = tokio::select! {
                    _ = interrupt.recv() => "SIGINT",
                    _ = terminate.recv() => "SIGTERM",
                };
                tracing::warn!("{name} received: stopping; the output keeps its previous state");
                let _ = sender.send(Some(name));
                crate::db::stop_waits(name);
                // A second signal means now.
                tokio::select! {
                    _ = interrupt.recv() => std::process::exit(130),
                    _ = terminate.recv() => std::process::exit(143),
                }
            });
        }
        Stop(receiver)
    }

    /// A stop that a caller triggers itself (tests, embedding), with the name it reports.
    pub fn manual() -> (Stop, impl FnOnce(&'static str)) {
        let (sender, receiver) = watch::channel(None);
        (Stop(receiver), move |name| {
            let _ = sender.send(Some(name));
        })
    }

    /// Resolves with the signal's name once one arrived; never, if none can arrive.
    pub async fn stopped(&self) -> &'static str {
        let mut receiver = self.0.clone();
        let signal = match receiver.wait_for(Option::is_some).await {
            Ok(value) => *value,
            Err(_) => None,
        };
        match signal {
            Some(name) => name,
            None => std::future::pending().await,
        }
    }
}
