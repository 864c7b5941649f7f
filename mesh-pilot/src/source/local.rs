//! The local-directory source: every YAML and JSON file under a directory (Services with a
//! clusterIP, WorkloadEntries selected by the Services' selectors, ServiceEntries, and the
//! routing kinds), read again when anything in it changes. A local mesh needs no cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service as KubeService;
use mesh_api::Resource;
use std::sync::Arc;

use mesh_api::load::{self, Loaded};
use mesh_api::networking::{Location, Resolution, ServiceEntry, WorkloadEntry, WorkloadEntrySpec};

use super::Rejected;
use crate::model::{self, Endpoint, Protocol, Service, ServicePort, Snapshot};

/// Annotation with the namespaces a Kubernetes Service is visible from (Istio's).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Label that marks a workload as running a sidecar (Istio's).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Reads `dir` into a snapshot (version 0; the caller numbers them) and the objects left out.
pub fn read(dir: &Path) -> (Snapshot, Vec<Rejected>) {
    Reader::default().read(dir)
}

/// Reads a directory again and again, keeping the last valid version of every object in force
/// when a later edit makes it invalid (or breaks its file), as a user expects from `kubectl
/// apply` being refused: a typo must not take a route away.
#[derive(Default)]
pub struct Reader {
    admission: super::Admission,
    /// The not-enforced objects already warned about (each is said once, not on every read).
    warned: HashSet<String>,
}

impl Reader {
    /// Reads `dir` once more.
    pub fn read(&mut self, dir: &Path) -> (Snapshot, Vec<Rejected>) {
        let mut report = load::load_path(dir);
        in_default_namespace(&mut report.objects);
        let warnings: HashSet<String> = report.warnings.iter().map(ToString::to_string).collect();
        for warning in warnings.difference(&self.warned) {
            tracing::warn!("{warning}");
        }
        self.warned = warnings;
        let mut rejected: Vec<Rejected> = report
            .errors
            .iter()
            .map(|e| Rejected { origin: e.file.clone(), object: None, reason: e.to_string() })
            .collect();
        let broken_files: HashSet<&str> = report.errors.iter().map(|e| e.file.as_str()).collect();
        let (objects, refused) = self.admission.admit(report.objects, &broken_files);
        rejected.extend(refused);
        let (snapshot, more) = build(&objects);
        rejected.extend(more);
        (snapshot, rejected)
    }
}

/// Puts objects applied without a namespace in `default`, as `kubectl apply` does: one step
/// for every kind, before anything looks at namespaces.
pub fn in_default_namespace(objects: &mut [Loaded]) {
    for loaded in objects {
        loaded.resource.default_namespace("default");
    }
}

/// Builds the model from valid objects (namespaces set: [`in_default_namespace`]).
pub fn build(objects: &[Arc<Loaded>]) -> (Snapshot, Vec<Rejected>) {
    let mut snapshot = Snapshot::default();
    let mut rejected = Vec::new();
    let workloads = Workloads::index(objects);
    let mut gateway_api = super::gateway_api::Inputs::default();
    for loaded in objects {
        match &loaded.resource {
            Resource::Service(svc) => match kube_service(svc, &snapshot.domain) {
                Ok(service) => {
                    let selector =
                        svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
                    let namespace = service.namespace.clone();
                    let selected = workloads.select(&namespace, selector.iter());
                    add_endpoints(
                        &mut snapshot,
                        &service,
                        selected.map(|we| (&we.spec, namespace.as_str())),
                    );
                    snapshot.services.insert(service.hostname.clone(), service);
                }
                Err(reason) => rejected.push(Rejected {
                    origin: loaded.origin.to_string(),
                    object: Some(loaded.resource.object_ref()),
                    reason,
                }),
            },
            Resource::ServiceEntry(se) => {
                for service in service_entry(se) {
                    let namespace = service.namespace.clone();
                    let from_selector: Vec<(&WorkloadEntrySpec, &str)> = match &se
                        .spec
                        .workload_selector
                    {
                        Some(selector) => workloads
                            .select(&namespace, selector.labels.iter())
                            .map(|we| (&we.spec, namespace.as_str()))
                            .collect(),
                        None => se.spec.endpoints.iter().map(|e| (e, namespace.as_str())).collect(),
                    };
                    if se.spec.resolution.clone().unwrap_or(Resolution::None) != Resolution::None {
                        add_endpoints(&mut snapshot, &service, from_selector.into_iter());
                    }
                    snapshot.services.insert(service.hostname.clone(), service);
                }
            }
            Resource::VirtualService(vs) => snapshot.virtual_services.push(vs.clone()),
            Resource::DestinationRule(dr) => snapshot.destination_rules.push(dr.clone()),
            Resource::Sidecar(sc) => snapshot.sidecars.push(sc.clone()),
            Resource::PeerAuthentication(pa) => snapshot.peer_authentications.push(pa.clone()),
            Resource::AuthorizationPolicy(ap) => {
                snapshot.authorization_policies.push(ap.clone());
            }
            Resource::RequestAuthentication(ra) => {
                snapshot.request_authentications.push(ra.clone());
            }
            Resource::Telemetry(t) => snapshot.telemetries.push(t.clone()),
            Resource::Gateway(gw) => snapshot.gateways.push(gw.clone()),
            Resource::KubeGateway(gw) => gateway_api.gateways.push(gw),
            Resource::HttpRoute(route) => gateway_api.http_routes.push(route),
            Resource::GrpcRoute(route) => gateway_api.grpc_routes.push(route),
            Resource::TlsRoute(route) => gateway_api.tls_routes.push(route),
            Resource::ReferenceGrant(grant) => gateway_api.grants.push(grant),
            Resource::GatewayClass(class) => gateway_api.classes.push(class),
            Resource::Secret(secret) => {
                if let Some(credential) = crate::model::Credential::from_secret(secret) {
                    let namespace =
                        secret.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    snapshot.credentials.insert((namespace, name), credential);
                }
            }
            _ => {}
        }
    }
    // The Gateway API, as the Istio kinds the translation serves.
    let (gateways, routes) = super::gateway_api::convert(&gateway_api, &snapshot.domain);
    snapshot.gateways.extend(gateways);
    snapshot.virtual_services.extend(routes);
    crate::translate::telemetry::sort(&mut snapshot.telemetries);
    (snapshot, rejected)
}

/// WorkloadEntries by namespace and label, so that selecting a service's workloads does not
/// look at every workload of the mesh (thousands of services times thousands of workloads).
struct Workloads<'a> {
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a WorkloadEntry>>,
}

impl<'a> Workloads<'a> {
    fn index(objects: &'a [Arc<Loaded>]) -> Self {
        let mut by_label: HashMap<_, Vec<&WorkloadEntry>> = HashMap::new();
        for loaded in objects {
            if let Resource::WorkloadEntry(we) = &loaded.resource {
                let namespace = we.metadata.namespace.as_deref().unwrap_or("default");
                for (key, value) in &we.spec.labels {
                    by_label.entry((namespace, key.as_str(), value.as_str())).or_default().push(we);
                }
            }
        }
        Self { by_label }
    }

    /// The workloads of `namespace` with every label of `selector` (none for an empty one).
    fn select<'s>(
        &'s self,
        namespace: &'s str,
        selector: impl Iterator<Item = (&'s String, &'s String)> + Clone + 's,
    ) -> impl Iterator<Item = &'a WorkloadEntry> + 's {
        let candidates = selector
            .clone()
            .next()
            .and_then(|(k, v)| self.by_label.get(&(namespace, k.as_str(), v.as_str())))
            .map(Vec::as_slice)
            .unwrap_or_default();
        candidates
            .iter()
            .copied()
            .filter(move |we| selector.clone().all(|(k, v)| we.spec.labels.get(k) == Some(v)))
    }
}

fn kube_service(svc: &KubeService, domain: &str) -> Result<Service, String> {
    let name = svc.metadata.name.clone().ok_or("Service without a name")?;
    let namespace = svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let spec = svc.spec.clone().unwrap_or_default();
    let vip = spec
        .cluster_ip
        .filter(|ip| ip != "None" && !ip.is_empty())
        .map(|ip| {
            ip.parse::<IpAddr>().map_err(|_| {
                format!("Service {namespace}/{name}: clusterIP {ip:?} is not an IP address")
            })
        })
        .transpose()?;
    let mut ports = Vec::new();
    for p in spec.ports.unwrap_or_default() {
        let port = u16::try_from(p.port)
            .map_err(|_| format!("Service {namespace}/{name}: port {} is out of range", p.port))?;
        let target_port = match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => {
                u16::try_from(*t).unwrap_or(port)
            }
            _ => port,
        };
        let port_name = p.name.clone().unwrap_or_default();
        ports.push(ServicePort {
            protocol: Protocol::detect(p.app_protocol.as_deref(), &port_name),
            name: port_name,
            port,
            target_port,
        });
    }
    Ok(Service {
        hostname: format!("{name}.{namespace}.svc.{domain}"),
        namespace,
        name,
        vip,
        ports,
        mesh_internal: true,
        resolution: model::Resolution::Endpoints,
        export_to: svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
            .map(|list| {
                list.split(',').map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect()
            })
            .unwrap_or_default(),
    })
}

fn service_entry(se: &ServiceEntry) -> Vec<Service> {
    let namespace = se.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let vip = se.spec.addresses.iter().find_map(|a| a.split('/').next()?.parse::<IpAddr>().ok());
    let ports: Vec<ServicePort> = se
        .spec
        .ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.number).ok()?;
            Some(ServicePort {
                name: p.name.clone(),
                port,
                target_port: p.target_port.and_then(|t| u16::try_from(t).ok()).unwrap_or(port),
                protocol: Protocol::detect(Some(&p.protocol), ""),
            })
        })
        .collect();
    let internal = se.spec.location == Some(Location::MeshInternal);
    let resolution = match se.spec.resolution.as_ref() {
        Some(Resolution::Static) => model::Resolution::Endpoints,
        Some(Resolution::Dns | Resolution::DnsRoundRobin) => model::Resolution::Dns,
        _ => model::Resolution::Passthrough,
    };
    se.spec
        .hosts
        .iter()
        .map(|host| Service {
            hostname: host.clone(),
            namespace: namespace.clone(),
            name: String::new(),
            vip,
            ports: ports.clone(),
            mesh_internal: internal,
            resolution,
            export_to: se.spec.export_to.clone(),
        })
        .collect()
}

/// Endpoints of each service port from workload specs (WorkloadEntries or ServiceEntry
/// endpoints); entries whose address is not an IP are skipped (DNS resolution is the proxy's).
fn add_endpoints<'a>(
    snapshot: &mut Snapshot,
    service: &Service,
    workloads: impl Iterator<Item = (&'a WorkloadEntrySpec, &'a str)>,
) {
    let workloads: Vec<_> = workloads.collect();
    for port in &service.ports {
        let endpoints: Vec<Endpoint> = workloads
            .iter()
            .filter_map(|(we, namespace)| {
                let address: IpAddr = we.address.parse().ok()?;
                let target = we
                    .ports
                    .get(&port.name)
                    .and_then(|p| u16::try_from(*p).ok())
                    .unwrap_or(port.target_port);
                Some(Endpoint {
                    address,
                    port: target,
                    labels: we.labels.clone(),
                    namespace: (*namespace).to_owned(),
                    service_account: we
                        .service_account
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                    sidecar: we.labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio"),
                    locality: we.locality.clone().unwrap_or_default(),
                    weight: we.weight.unwrap_or(1).max(1),
                })
            })
            .collect();
        snapshot.endpoints.insert((service.hostname.clone(), port.port), endpoints);
    }
}

/// A fingerprint of every config file under `dir` (path, size, modification time), to notice
/// changes without a file-system notification API.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            // The loader skips dot files (ConfigMap mounts' `..data`); so does the watch.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Watches `dir`, sending a new snapshot (and the rejected objects) whenever its files change.
/// Polls every `interval`, which also picks up ConfigMap volume updates (symlink swaps).
pub async fn watch(
    dir: PathBuf,
    interval: Duration,
    on_change: impl Fn(Snapshot, Vec<Rejected>) + Send + 'static,
) {
    let mut last = None;
    let mut reader = Some(Reader::default());
    loop {
        let now = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || fingerprint(&dir)).await.unwrap_or_default()
        };
        if last.as_ref() != Some(&now) {
            let dir = dir.clone();
            let mut taken = reader.take().unwrap_or_default();
            if let Ok((snapshot, rejected, back)) = tokio::task::spawn_blocking(move || {
                let (snapshot, rejected) = taken.read(&dir);
                (snapshot, rejected, taken)
            })
            .await
            {
                reader = Some(back);
                on_change(snapshot, rejected);
            }
            last = Some(now);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Labels as Istio's selectors compare them.
pub type Labels = BTreeMap<String, String>;
