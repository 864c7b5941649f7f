//! The dashboard's state and what keys do to it: which view shows, what is selected, the
//! filter, the service drilled into, the proxy watched live, and the data of the last two
//! scrapes. Pure: no terminal, no network; the event loop feeds it scrapes, tap lines and
//! keys, and asks it which proxy to tap.

use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::config::{Analyzer, Config, describe};
use super::envoy_stats;
use super::metrics::parse;
use super::model::{Edge, ProxySamples, ServiceKey, ServiceRow, Traffic, traffic};
use super::pods::Pods;
use super::source::{ConfigDoc, ProxyId, Scrape};
use super::status::{ProxyRow, parse_syncz, proxy_rows};
use super::tap::{TapEvent, TapLine, TapLog};
use super::trace::TracePanel;

/// The views, in Tab order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Per service and version: rates, success, latency, mTLS.
    #[default]
    Services,
    /// Who calls whom.
    Graph,
    /// Per proxy: xDS state, config version, certificate, uptime.
    Proxies,
    /// Live requests of one proxy.
    Live,
    /// The VirtualServices and DestinationRules of a service, and findings.
    Config,
}

impl View {
    /// Every view, in Tab order.
    pub const ALL: [View; 5] =
        [View::Services, View::Graph, View::Proxies, View::Live, View::Config];

    /// The tab's title.
    pub fn title(self) -> &'static str {
        match self {
            View::Services => "Services",
            View::Graph => "Graph",
            View::Proxies => "Proxies",
            View::Live => "Live",
            View::Config => "Config",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// The longest filter one can type.
const MAX_FILTER: usize = 64;

/// The dashboard's state.
#[derive(Debug, Default)]
pub struct App {
    /// The view shown.
    pub view: View,
    /// The view Esc goes back to from Live.
    back: View,
    /// Per view: the selected row (the scroll offset in Config).
    selected: [usize; 5],
    /// Per view: the filter text (matched case-insensitively against each row's text). Each
    /// view keeps its own, so the proxy picked by filtering the Proxies view does not leave its
    /// Live view filtered by that proxy's name.
    filters: [String; 5],
    /// Whether keys go into the filter.
    pub editing: bool,
    /// The service drilled into (Services shows its versions and pods; Config shows it).
    pub drill: Option<ServiceKey>,
    /// The proxy the Live view shows.
    pub live: Option<ProxyId>,
    /// What the Live view's tap has delivered.
    pub tap: TapLog,
    /// The Live view's trace panel, when `t` opened it.
    pub trace: Option<TracePanel>,
    /// The last window's traffic.
    pub traffic: Traffic,
    /// The proxies' state.
    pub proxies: Vec<ProxyRow>,
    /// The mesh's config.
    pub config: Config,
    /// What went wrong in the last scrape, one line each (the pilot unreachable, ...).
    pub problems: Vec<String>,
    /// Only this namespace's services, edges and proxies, when set.
    pub namespace: Option<String>,
    /// How many scrapes came in.
    pub scrapes: u64,
    analyzer: Option<Analyzer>,
    /// What the config says of the pods, for proxies whose metrics do not say who they are.
    pods: Pods,
    last: Option<(SystemTime, ProxySamples)>,
    config_docs: Option<Result<Vec<ConfigDoc>, String>>,
}

impl App {
    /// A dashboard showing `namespace` (all when `None`), with `analyzer`'s findings in Config.
    pub fn new(namespace: Option<String>, analyzer: Option<Analyzer>) -> Self {
        Self { namespace, analyzer, ..Self::default() }
    }

    /// The namespace names are shown relative to.
    pub fn home(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// Takes a scrape in: rates against the previous one, proxy states, config.
    pub fn ingest(&mut self, scrape: Scrape) {
        self.scrapes += 1;
        self.problems.clear();
        let mut current = ProxySamples::new();
        let mut unreachable = Vec::new();
        for p in &scrape.proxies {
            let key = (p.id.pod.clone(), p.id.namespace.clone());
            match &p.metrics {
                Ok(text) => {
                    let parsed =
                        parse(text, |name| name.starts_with("istio_") || envoy_stats::keep(name));
                    if parsed.dropped > 0 {
                        self.problems.push(format!(
                            "{}: {} series over the bound",
                            p.id.pod, parsed.dropped
                        ));
                    }
                    current.insert(key, parsed.samples);
                }
                Err(_) => unreachable.push(p.id.pod.clone()),
            }
        }
        if !unreachable.is_empty() {
            // A few names, so the line stays a line in a big mesh.
            let mut names = unreachable.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if unreachable.len() > 3 {
                names.push_str(&format!(" and {} more", unreachable.len() - 3));
            }
            self.problems.push(format!("metrics unreachable: {names}"));
        }
        let syncz = match &scrape.syncz {
            Ok(text) => parse_syncz(text).unwrap_or_else(|err| {
                self.problems.push(format!("pilot: {err}"));
                Vec::new()
            }),
            Err(err) => {
                self.problems.push(format!("pilot: {err}"));
                Vec::new()
            }
        };
        if self.config_docs.as_ref() != Some(&scrape.config) {
            self.config = Config::read(&scrape.config, self.analyzer);
            self.pods = Pods::read(&scrape.config);
            self.config_docs = Some(scrape.config);
        }
        let (previous, seconds) = match &self.last {
            Some((at, samples)) => {
                let seconds = scrape.at.duration_since(*at).map_or(0.0, |d| d.as_secs_f64());
                (Some(samples), seconds)
            }
            None => (None, 0.0),
        };
        let listed: Vec<(String, String)> =
            scrape.proxies.iter().map(|p| (p.id.pod.clone(), p.id.namespace.clone())).collect();
        let (previous, translated) =
            envoy_stats::translate(previous, &current, &listed, &self.pods);
        self.traffic = traffic(previous.as_ref(), &translated, seconds);
        self.proxies = proxy_rows(&scrape.proxies, &syncz, scrape.at);
        self.last = Some((scrape.at, current));
        self.clamp();
    }

    /// Takes a line of the Live view's tap in.
    pub fn tap_event(&mut self, event: TapEvent) {
        self.tap.push(event);
    }

    /// Notes that the Live view's tap stream ended, and why.
    pub fn tap_ended(&mut self, why: String) {
        self.tap.ended = Some(why);
    }

    /// The trace the Live view's panel shows, while it shows: the event loop fetches it (again
    /// every refresh: spans arrive over seconds) and hands the answer to [`App::trace_loaded`].
    pub fn trace_shown(&self) -> Option<&str> {
        self.trace.as_ref().filter(|_| self.view == View::Live)?.trace_id.as_deref()
    }

    /// Takes in the collector's answer for trace `trace_id`.
    pub fn trace_loaded(&mut self, trace_id: &str, answer: Result<String, String>) {
        if let Some(panel) = &mut self.trace {
            panel.loaded(trace_id, answer);
        }
    }

    /// Opens the trace panel on the selected request's trace.
    fn open_trace(&mut self) {
        let selected = self.selected(View::Live);
        let Some(line) = self.live_lines().get(selected).copied() else {
            return;
        };
        let trace_id = line.trace_id.clone();
        if self.trace.as_ref().is_none_or(|p| p.trace_id != trace_id || trace_id.is_none()) {
            self.trace = Some(TracePanel::open(trace_id));
        }
    }

    /// The proxy whose tap should be open now: the Live view's, while it shows.
    pub fn watched(&self) -> Option<&ProxyId> {
        self.live.as_ref().filter(|_| self.view == View::Live)
    }

    /// The selected row (or scroll offset) of `view`.
    pub fn selected(&self, view: View) -> usize {
        self.selected[view.index()]
    }

    fn matches(&self, texts: &[&str]) -> bool {
        let filter = self.filter().to_lowercase();
        filter.is_empty() || texts.iter().any(|t| t.to_lowercase().contains(&filter))
    }

    fn in_namespace(&self, namespaces: &[&str]) -> bool {
        self.namespace.as_ref().is_none_or(|ns| namespaces.contains(&ns.as_str()))
    }

    /// The Services view's rows: the drilled service's versions, or every service the filter
    /// and namespace let through.
    pub fn services(&self) -> Vec<&ServiceRow> {
        let rows = self.traffic.services.iter();
        match &self.drill {
            Some(service) => rows.filter(|r| &r.service == service).collect(),
            None => rows
                .filter(|r| self.in_namespace(&[&r.service.namespace]))
                .filter(|r| {
                    let workloads: Vec<&str> = r.workloads.iter().map(|w| w.0.as_str()).collect();
                    self.matches(&[&r.service.display(), &r.version]) || self.matches(&workloads)
                })
                .collect(),
        }
    }

    /// A proxy's workload: as its own metrics name it or, when they could not be read, the
    /// workload of `workloads` its pod is named after (`<deployment>-<hash>...`).
    fn workload_of<'a>(
        &'a self,
        p: &ProxyRow,
        workloads: &'a [(String, String)],
    ) -> Option<&'a (String, String)> {
        let key = (p.id.pod.clone(), p.id.namespace.clone());
        match self.traffic.proxy_workloads.get(&key) {
            Some(own) => Some(own),
            None => workloads
                .iter()
                .filter(|(name, ns)| {
                    *ns == p.id.namespace && p.id.pod.starts_with(&format!("{name}-"))
                })
                .max_by_key(|(name, _)| name.len()),
        }
    }

    /// The proxies of a set of workloads, with the workload of each.
    fn proxies_of(&self, workloads: &[(String, String)]) -> Vec<(&ProxyRow, String)> {
        self.proxies
            .iter()
            .filter_map(|p| {
                let w = self.workload_of(p, workloads).filter(|w| workloads.contains(w))?;
                Some((p, w.0.clone()))
            })
            .collect()
    }

    /// In a drilled Services view: the pods serving the service's versions, with their
    /// workloads.
    pub fn drilled_pods(&self) -> Vec<(&ProxyRow, String)> {
        let workloads: Vec<(String, String)> =
            self.services().iter().flat_map(|r| r.workloads.clone()).collect();
        self.proxies_of(&workloads)
    }

    /// The Graph view's edges.
    pub fn edges(&self) -> Vec<&Edge> {
        let home = self.home();
        self.traffic
            .edges
            .iter()
            .filter(|e| self.in_namespace(&[&e.from.namespace, &e.to.namespace]))
            .filter(|e| {
                self.matches(&[&e.from.label(home), &e.to.label(home), &e.service.display()])
            })
            .collect()
    }

    /// The Proxies view's rows.
    pub fn proxy_rows(&self) -> Vec<&ProxyRow> {
        self.proxies
            .iter()
            .filter(|p| self.in_namespace(&[&p.id.namespace]))
            .filter(|p| self.matches(&[&p.id.pod, &p.id.namespace]))
            .collect()
    }

    /// The Live view's requests, newest first.
    pub fn live_lines(&self) -> Vec<&TapLine> {
        let text = |f: &Option<String>| f.clone().unwrap_or_default();
        self.tap
            .lines
            .iter()
            .rev()
            .filter(|l| {
                self.matches(&[
                    &text(&l.method),
                    &text(&l.path),
                    &text(&l.authority),
                    &text(&l.status),
                    &text(&l.upstream_cluster),
                    &text(&l.response_flags),
                ])
            })
            .collect()
    }

    /// The service the Config view shows: the drilled one, else the one selected in Services.
    pub fn config_service(&self) -> Option<ServiceKey> {
        self.drill.clone().or_else(|| {
            let rows = self.services();
            rows.get(self.selected(View::Services)).map(|r| r.service.clone())
        })
    }

    fn len(&self, view: View) -> usize {
        match view {
            View::Services if self.drill.is_some() => self.drilled_pods().len(),
            View::Services => self.services().len(),
            View::Graph => self.edges().len(),
            View::Proxies => self.proxy_rows().len(),
            View::Live => self.live_lines().len(),
            View::Config => self.config_lines().len(),
        }
    }

    fn clamp(&mut self) {
        for view in View::ALL {
            let len = self.len(view);
            let selected = &mut self.selected[view.index()];
            *selected = (*selected).min(len.saturating_sub(1));
        }
    }

    fn move_by(&mut self, delta: isize) {
        let view = self.view;
        let len = self.len(view);
        let selected = &mut self.selected[view.index()];
        *selected = selected.saturating_add_signed(delta).min(len.saturating_sub(1));
    }

    /// Opens the Live view on `proxy` (a new proxy starts an empty log).
    fn watch(&mut self, proxy: ProxyId) {
        if self.live.as_ref() != Some(&proxy) {
            self.tap = TapLog::default();
            self.trace = None;
            self.selected[View::Live.index()] = 0;
        }
        self.live = Some(proxy);
        if self.view != View::Live {
            self.back = self.view;
        }
        self.view = View::Live;
    }

    /// The proxy `l` (or Enter) would watch from the current view and selection.
    fn proxy_to_watch(&self) -> Option<ProxyId> {
        let selected = self.selected(self.view);
        match self.view {
            View::Proxies => self.proxy_rows().get(selected).map(|p| p.id.clone()),
            View::Services if self.drill.is_some() => {
                self.drilled_pods().get(selected).map(|p| p.0.id.clone())
            }
            View::Services => {
                let row = *self.services().get(selected)?;
                self.proxies_of(&row.workloads).first().map(|p| p.0.id.clone())
            }
            _ => None,
        }
    }

    fn enter(&mut self) {
        let selected = self.selected(self.view);
        match self.view {
            View::Services if self.drill.is_none() => {
                if let Some(row) = self.services().get(selected) {
                    self.drill = Some(row.service.clone());
                    self.selected[View::Services.index()] = 0;
                    self.selected[View::Config.index()] = 0;
                }
            }
            View::Graph => {
                if let Some(edge) = self.edges().get(selected) {
                    self.drill = Some(edge.service.clone());
                    self.view = View::Services;
                    self.selected[View::Services.index()] = 0;
                    self.selected[View::Config.index()] = 0;
                }
            }
            View::Services | View::Proxies => {
                if let Some(proxy) = self.proxy_to_watch() {
                    self.watch(proxy);
                }
            }
            View::Live | View::Config => {}
        }
    }

    fn escape(&mut self) {
        if self.view == View::Live && self.trace.is_some() {
            self.trace = None;
        } else if self.view == View::Live {
            self.view = self.back;
        } else if self.drill.is_some() && matches!(self.view, View::Services | View::Config) {
            self.drill = None;
            self.selected[View::Services.index()] = 0;
        } else {
            self.filter_mut().clear();
        }
        self.clamp();
    }

    /// The filter of the view shown.
    pub fn filter(&self) -> &str {
        &self.filters[self.view.index()]
    }

    fn filter_mut(&mut self) -> &mut String {
        &mut self.filters[self.view.index()]
    }

    fn edit_filter(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => self.editing = false,
            KeyCode::Esc => {
                self.editing = false;
                self.filter_mut().clear();
            }
            KeyCode::Backspace => {
                self.filter_mut().pop();
            }
            KeyCode::Char(c) if !c.is_control() && self.filter().chars().count() < MAX_FILTER => {
                self.filter_mut().push(c);
            }
            _ => {}
        }
        self.clamp();
    }

    /// Handles a key; returns whether to quit.
    pub fn on_key(&mut self, key: KeyEvent) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return true;
        }
        if self.editing {
            self.edit_filter(key);
            return false;
        }
        match key.code {
            KeyCode::Char('q') => return true,
            KeyCode::Tab => self.view = View::ALL[(self.view.index() + 1) % View::ALL.len()],
            KeyCode::BackTab => {
                self.view = View::ALL[(self.view.index() + View::ALL.len() - 1) % View::ALL.len()]
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX),
            KeyCode::Enter => self.enter(),
            KeyCode::Char('l') => {
                if let Some(proxy) = self.proxy_to_watch() {
                    self.watch(proxy);
                }
            }
            KeyCode::Char('t') if self.view == View::Live => self.open_trace(),
            KeyCode::Char('/') => self.editing = true,
            KeyCode::Esc | KeyCode::Backspace => self.escape(),
            _ => {}
        }
        self.clamp();
        false
    }

    /// The Config view's text: the service's objects as YAML, the findings, read errors.
    pub fn config_lines(&self) -> Vec<String> {
        describe(&self.config, self.config_service().as_ref())
    }
}
