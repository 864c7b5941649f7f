//! `meshctl dashboard`: a terminal UI of the mesh, refreshed every second or two, keyboard
//! driven, fine over SSH. Services (rates, success, latency, mTLS), the service graph, the
//! proxies' xDS and certificate state, one proxy's live requests, and a service's config.
//!
//! The data comes through a [`Source`] (the lead's access code, or recorded data in tests);
//! everything from parsing to layout is pure ([`metrics`], [`model`], [`envoy_stats`] and
//! [`pods`] for stock Envoy sidecars, [`status`], [`tap`], [`trace`], [`config`], [`app`],
//! [`views`]), and this module holds the only I/O: the terminal, a scraping thread and, while
//! the Live view shows, a tap-reading thread (and a request's trace, while its panel shows).

pub mod app;
pub mod config;
pub mod envoy_stats;
pub mod metrics;
pub mod model;
pub mod pods;
pub mod source;
pub mod status;
pub mod tap;
pub mod trace;
pub mod views;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Once};
use std::thread;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

pub use app::App;
pub use config::Analyzer;
pub use source::{ConfigDoc, ProxyId, ProxyScrape, Scrape, Source};

use tap::{TapEvent, parse_line, read_bounded_line};

/// How long the event loop waits for a key before looking for new data.
const TICK: Duration = Duration::from_millis(100);
/// Tap events waiting for the screen; beyond this the reader counts them as dropped.
const TAP_QUEUE: usize = 256;

/// `meshctl dashboard`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct DashboardArgs {
    /// Seconds between refreshes (at least 1).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh: u64,
    /// Show only this namespace's services, edges and proxies.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// Why the dashboard stopped other than by the user quitting.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The terminal could not be put into (or drawn in) full-screen mode.
    #[error("terminal: {0} (the dashboard needs an interactive terminal)")]
    Terminal(#[source] io::Error),
    /// Keys could not be read.
    #[error("reading keys: {0}")]
    Input(#[source] io::Error),
    /// A background thread could not be started.
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, #[source] io::Error),
    /// The scraping thread ended (it panicked: its message is printed above).
    #[error("the scraping thread stopped; see the message above")]
    ScraperStopped,
}

/// Runs the dashboard until the user quits, without analysis findings.
pub fn run(source: Arc<dyn Source>, args: &DashboardArgs) -> Result<(), DashboardError> {
    run_with_analyzer(source, args, None)
}

/// Runs the dashboard until the user quits; the Config view shows `analyzer`'s findings.
/// The terminal is restored on every way out: quitting, an error, a panic.
pub fn run_with_analyzer(
    source: Arc<dyn Source>,
    args: &DashboardArgs,
    analyzer: Option<Analyzer>,
) -> Result<(), DashboardError> {
    let mut app = App::new(args.namespace.clone(), analyzer);
    let refresh = Duration::from_secs(args.refresh.max(1));
    let (scrapes, _stop_scraping) = spawn_scraper(Arc::clone(&source), refresh)?;
    let guard = TerminalGuard::enter()?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).map_err(DashboardError::Terminal)?;
    let result = event_loop(&mut terminal, &mut app, &source, &scrapes, refresh);
    drop(terminal);
    drop(guard);
    result
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<io::Stdout>>,
    app: &mut App,
    source: &Arc<dyn Source>,
    scrapes: &Receiver<Scrape>,
    refresh: Duration,
) -> Result<(), DashboardError> {
    let mut tap: Option<Tap> = None;
    let mut traces = TraceFetch::default();
    loop {
        loop {
            match scrapes.try_recv() {
                Ok(scrape) => app.ingest(scrape),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(DashboardError::ScraperStopped),
            }
        }
        // The tap is open exactly while the Live view shows a proxy.
        let wanted = app.watched().cloned();
        if tap.as_ref().map(|t| &t.proxy) != wanted.as_ref() {
            tap = match wanted {
                Some(proxy) => Some(Tap::open(Arc::clone(source), proxy)?),
                None => None,
            };
        }
        if let Some(t) = &tap {
            for _ in 0..TAP_QUEUE {
                match t.events.try_recv() {
                    Ok(Ok(event)) => app.tap_event(event),
                    Ok(Err(why)) => app.tap_ended(why),
                    Err(_) => break,
                }
            }
        }
        traces.poll(app, source, refresh)?;
        terminal.draw(|frame| views::render(frame, app)).map_err(DashboardError::Terminal)?;
        if event::poll(TICK).map_err(DashboardError::Input)?
            && let Event::Key(key) = event::read().map_err(DashboardError::Input)?
            && app.on_key(key)
        {
            return Ok(());
        }
    }
}

/// Scrapes every `refresh` on a thread of its own, so a slow proxy never freezes the keys.
/// The channel holds one scrape: the thread waits for the screen rather than piling up.
/// Dropping the returned sender stops the thread at its next wait.
fn spawn_scraper(
    source: Arc<dyn Source>,
    refresh: Duration,
) -> Result<(Receiver<Scrape>, SyncSender<()>), DashboardError> {
    let (tx, rx) = sync_channel(1);
    let (stop, stopped) = sync_channel::<()>(1);
    thread::Builder::new()
        .name("dashboard-scrape".into())
        .spawn(move || {
            loop {
                let next = Instant::now() + refresh;
                if tx.send(source.scrape()).is_err() {
                    return;
                }
                match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| DashboardError::Thread("scraping", e))?;
    Ok((rx, stop))
}

/// One open tap: a thread reading the proxy's stream into a bounded channel. Dropping it
/// stops the thread at its next line (and so closes the stream).
struct Tap {
    proxy: ProxyId,
    events: Receiver<Result<TapEvent, String>>,
    stop: Arc<AtomicBool>,
}

impl Tap {
    fn open(source: Arc<dyn Source>, proxy: ProxyId) -> Result<Self, DashboardError> {
        let (tx, rx) = sync_channel(TAP_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let target = proxy.clone();
        thread::Builder::new()
            .name("dashboard-tap".into())
            .spawn(move || read_tap(source.as_ref(), &target, &tx, &stopped))
            .map_err(|e| DashboardError::Thread("tap", e))?;
        Ok(Self { proxy, events: rx, stop })
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_tap(
    source: &dyn Source,
    proxy: &ProxyId,
    tx: &SyncSender<Result<TapEvent, String>>,
    stop: &AtomicBool,
) {
    let mut reader = match source.tap(proxy) {
        Ok(reader) => reader,
        Err(err) => {
            let _ = tx.try_send(Err(err));
            return;
        }
    };
    let mut buf = Vec::new();
    // Lines the screen had no room for, told as one `Dropped` once there is room.
    let mut lost = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let event = match read_bounded_line(reader.as_mut(), &mut buf) {
            Ok(None) => {
                let _ = tx.try_send(Err("end of stream".to_owned()));
                return;
            }
            Err(err) => {
                let _ = tx.try_send(Err(err.to_string()));
                return;
            }
            Ok(Some(false)) => TapEvent::Dropped(1),
            Ok(Some(true)) if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(true)) => parse_line(&String::from_utf8_lossy(&buf)),
        };
        if lost > 0 && tx.try_send(Ok(TapEvent::Dropped(lost))).is_ok() {
            lost = 0;
        }
        match tx.try_send(Ok(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => lost += 1,
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// The trace panel's fetching: one request at a time on a thread of its own, asked again
/// every refresh while the panel shows the trace (its spans arrive over seconds).
#[derive(Default)]
struct TraceFetch {
    /// The trace last asked for, and when.
    last: Option<(String, Instant)>,
    /// The answer being waited for.
    pending: Option<Receiver<(String, Result<String, String>)>>,
}

impl TraceFetch {
    fn poll(
        &mut self,
        app: &mut App,
        source: &Arc<dyn Source>,
        refresh: Duration,
    ) -> Result<(), DashboardError> {
        if let Some(pending) = &self.pending {
            match pending.try_recv() {
                Ok((id, answer)) => {
                    app.trace_loaded(&id, answer);
                    self.pending = None;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => self.pending = None,
            }
        }
        let Some(id) = app.trace_shown() else {
            return Ok(());
        };
        let due = match &self.last {
            Some((last, at)) => last != id || at.elapsed() >= refresh,
            None => true,
        };
        if !due {
            return Ok(());
        }
        let (tx, rx) = sync_channel(1);
        let (id, source) = (id.to_owned(), Arc::clone(source));
        self.last = Some((id.clone(), Instant::now()));
        thread::Builder::new()
            .name("dashboard-trace".into())
            .spawn(move || {
                let answer = source.trace(&id);
                let _ = tx.try_send((id, answer));
            })
            .map_err(|e| DashboardError::Thread("trace", e))?;
        self.pending = Some(rx);
        Ok(())
    }
}

/// Whether the terminal is in the dashboard's mode (so restoring happens once).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Raw mode and the alternate screen while alive; the terminal as it was after.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> Result<Self, DashboardError> {
        install_panic_hook();
        enable_raw_mode().map_err(DashboardError::Terminal)?;
        ACTIVE.store(true, Ordering::SeqCst);
        if let Err(err) = execute!(io::stdout(), EnterAlternateScreen, cursor::Hide) {
            restore_terminal();
            return Err(DashboardError::Terminal(err));
        }
        Ok(Self)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Nothing to do about a failure here: the process is on its way out.
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = disable_raw_mode();
    }
}

/// A panic restores the terminal before its message is printed, so the message is readable
/// and the shell usable.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Cursor};
    use std::time::SystemTime;

    use super::*;
    use crate::dashboard::tap::TapLine;

    struct Fake {
        tap: Result<&'static str, String>,
    }

    impl Source for Fake {
        fn scrape(&self) -> Scrape {
            Scrape {
                at: SystemTime::UNIX_EPOCH,
                syncz: Err("no pilot".into()),
                proxies: Vec::new(),
                config: Ok(Vec::new()),
            }
        }

        fn tap(&self, _: &ProxyId) -> Result<Box<dyn BufRead + Send>, String> {
            let text = self.tap.clone()?;
            Ok(Box::new(Cursor::new(text.as_bytes())))
        }
    }

    #[test]
    fn the_tap_thread_reads_lines_then_says_the_stream_ended() {
        let source = Arc::new(Fake { tap: Ok("{\"path\": \"/a\"}\n\n{\"dropped\": 2}\nnot json") });
        let tap = Tap::open(source, ProxyId::default()).unwrap();
        // The thread ends after the stream does, which ends the iteration.
        let events: Vec<_> = tap.events.iter().collect();
        let line = TapLine { path: Some("/a".into()), ..TapLine::default() };
        assert_eq!(
            events,
            [
                Ok(TapEvent::Line(Box::new(line))),
                Ok(TapEvent::Dropped(2)),
                Ok(TapEvent::Invalid),
                Err("end of stream".to_owned())
            ]
        );
    }

    #[test]
    fn a_tap_that_cannot_open_says_why() {
        let source = Arc::new(Fake { tap: Err("admin unreachable".into()) });
        let tap = Tap::open(source, ProxyId::default()).unwrap();
        let events: Vec<_> = tap.events.iter().collect();
        assert_eq!(events, [Err("admin unreachable".to_owned())]);
    }

    #[test]
    fn the_scraper_delivers_and_stops_when_told() {
        let source = Arc::new(Fake { tap: Err(String::new()) });
        let (scrapes, stop) = spawn_scraper(source, Duration::from_secs(3600)).unwrap();
        assert_eq!(scrapes.recv().unwrap().syncz, Err("no pilot".to_owned()));
        drop(stop);
        // The thread leaves its wait at once and drops its sender.
        assert!(scrapes.recv().is_err());
    }

    #[test]
    fn refresh_is_at_least_one_second() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: DashboardArgs,
        }
        let args = Cli::try_parse_from(["x"]).unwrap().args;
        assert_eq!((args.refresh, args.namespace), (2, None));
        let args = Cli::try_parse_from(["x", "--refresh", "1", "-n", "bookinfo"]).unwrap().args;
        assert_eq!((args.refresh, args.namespace.as_deref()), (1, Some("bookinfo")));
        assert!(Cli::try_parse_from(["x", "--refresh", "0"]).is_err());
    }
}
