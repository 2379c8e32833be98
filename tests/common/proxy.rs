//! A TCP proxy between the tool and a store's stand-in that counts the bytes the tool sends and
//! receives, and
//! can act once when a request holding a given text passes, before the store sees it: so a test
//! measures what a run uploads, or replaces an object at the exact moment a run checks it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the proxy does once, before it forwards the bytes holding `text`.
type Trigger = (Vec<u8>, Box<dyn FnOnce() + Send>);

/// The trigger armed on a proxy, if any: taken when it fires.
type Armed = Arc<Mutex<Option<Trigger>>>;

/// A running proxy on a free loopback port.
pub struct CountingProxy {
    /// Its port: the tool is sent to `http://127.0.0.1:PORT` instead of the stand-in.
    pub port: u16,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    trigger: Armed,
}

impl CountingProxy {
    /// A proxy to `upstream` (`http://host:port` or `host:port`).
    pub fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let trigger: Armed = Arc::new(Mutex::new(None));
        let (counter, armed) = (sent.clone(), trigger.clone());
        let back_counter = received.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (client_back, server_back) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (counter, armed) = (counter.clone(), armed.clone());
                let back_counter = back_counter.clone();
                std::thread::spawn(move || pipe(client, server, &counter, Some(armed)));
                std::thread::spawn(move || pipe(server_back, client_back, &back_counter, None));
            }
        });
        CountingProxy {
            port,
            sent,
            received,
            trigger,
        }
    }

    /// Bytes the clients sent through it so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Bytes the store answered through it so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Runs `action` once, when bytes a client sends first hold `text` (within one read), before
    /// they go on to the store.
    pub fn on_request_holding(&self, text: &str, action: impl FnOnce() + Send + 'static) {
        *self.trigger.lock().unwrap() = Some((text.as_bytes().to_vec(), Box::new(action)));
    }

    /// Whether the action armed with [`CountingProxy::on_request_holding`] ran.
    pub fn triggered(&self) -> bool {
        self.trigger.lock().unwrap().is_none()
    }
}

/// Copies `from` to `to`, counting the bytes; on the client's side, firing the armed trigger.
fn pipe(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64, client_side: Option<Armed>) {
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer) {
        if read == 0 {
            break;
        }
        counter.fetch_add(read as u64, Ordering::SeqCst);
        if let Some(trigger) = &client_side {
            let mut armed = trigger.lock().unwrap();
            let holds = armed.as_ref().is_some_and(|(text, _)| {
                buffer[..read]
                    .windows(text.len())
                    .any(|window| window == text.as_slice())
            });
            if holds {
                let (_, action) = armed.take().unwrap();
                action();
            }
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
