//! The Kubernetes source: reflectors over Services, EndpointSlices, Pods and the Istio kinds,
//! turned into a snapshot whenever any of them changes. [`build`] is the pure part (objects in,
//! snapshot out), tested on recorded API objects; [`run`] is the watching.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Pod, Secret, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use mesh_api::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use mesh_api::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use mesh_api::telemetry::Telemetry;
use mesh_api::{ObjectRef, Resource};
use tracing::warn;

use super::local::TLS_MODE_LABEL;
use super::{Admission, Rejected};
use crate::model::{DEFAULT_DOMAIN, Endpoint, Snapshot};

mod status;
mod unenforced;

/// Everything the Kubernetes source has seen, at one moment.
#[derive(Default)]
pub struct Objects {
    /// Kubernetes Services: host names, ports and ClusterIPs of the registry.
    pub services: Vec<Arc<KubeService>>,
    /// EndpointSlices: the endpoints of Kubernetes Services (ready ones only).
    pub slices: Vec<Arc<EndpointSlice>>,
    /// Pods, read for the labels, service account and sidecar of each endpoint.
    pub pods: Vec<Arc<Pod>>,
    /// VirtualServices of every namespace.
    pub virtual_services: Vec<Arc<VirtualService>>,
    /// DestinationRules of every namespace.
    pub destination_rules: Vec<Arc<DestinationRule>>,
    /// ServiceEntries: services outside Kubernetes, added to the registry.
    pub service_entries: Vec<Arc<ServiceEntry>>,
    /// WorkloadEntries: non-pod workloads, endpoints of the ServiceEntries that select them.
    pub workload_entries: Vec<Arc<WorkloadEntry>>,
    /// Sidecars: each workload's egress scope and outbound traffic policy.
    pub sidecars: Vec<Arc<Sidecar>>,
    /// Gateways: the listeners of gateway proxies.
    pub gateways: Vec<Arc<Gateway>>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<Arc<PeerAuthentication>>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<Arc<AuthorizationPolicy>>,
    /// RequestAuthentications.
    pub request_authentications: Vec<Arc<RequestAuthentication>>,
    /// Telemetries (when the cluster serves `telemetry.istio.io/v1`).
    pub telemetries: Vec<Arc<Telemetry>>,
    /// TLS Secrets (`kubernetes.io/tls`): gateways' `credentialName`s.
    pub secrets: Vec<Arc<Secret>>,
    /// Gateway API Gateways (when the cluster has the Gateway API).
    pub kube_gateways: Vec<Arc<mesh_api::gateway_api::Gateway>>,
    /// Gateway API GatewayClasses.
    pub gateway_classes: Vec<Arc<mesh_api::gateway_api::GatewayClass>>,
    /// Gateway API HTTPRoutes.
    pub http_routes: Vec<Arc<mesh_api::gateway_api::HTTPRoute>>,
    /// Gateway API GRPCRoutes.
    pub grpc_routes: Vec<Arc<mesh_api::gateway_api::GRPCRoute>>,
    /// Gateway API TLSRoutes (when the cluster serves the experimental channel's kind).
    pub tls_routes: Vec<Arc<mesh_api::gateway_api::TLSRoute>>,
    /// Gateway API ReferenceGrants.
    pub reference_grants: Vec<Arc<mesh_api::gateway_api::ReferenceGrant>>,
}

/// Builds the model: Services and ServiceEntries as in local mode (through the same code), and
/// endpoints from EndpointSlices, with the labels and service account of their Pods. Stateless;
/// [`run`] also keeps the last valid version of objects that turn invalid.
pub fn build(objects: &Objects) -> (Snapshot, Vec<Rejected>) {
    let (snapshot, rejected, _) = build_with(&mut Admission::default(), objects);
    (snapshot, rejected)
}

/// [`build`] with memory of valid versions; also returns the API reference of every object,
/// for Events about the rejected ones.
fn build_with(
    admission: &mut Admission,
    objects: &Objects,
) -> (Snapshot, Vec<Rejected>, HashMap<ObjectRef, ObjectReference>) {
    let mut loaded = Vec::new();
    let mut references = HashMap::new();
    let mut add = |resource: Resource, reference: ObjectReference| {
        let key = resource.object_ref();
        let origin = mesh_api::load::Origin {
            file: format!(
                "{} {}/{}",
                key.kind,
                key.namespace.clone().unwrap_or_default(),
                key.name
            ),
            document: 1,
            line: 1,
        };
        references.insert(key, reference);
        loaded.push(mesh_api::load::Loaded { origin, resource });
    };
    macro_rules! add_all {
        ($list:expr, $variant:ident) => {
            for o in &$list {
                add(Resource::$variant((**o).clone()), o.object_ref(&()));
            }
        };
    }
    add_all!(objects.services, Service);
    add_all!(objects.virtual_services, VirtualService);
    add_all!(objects.destination_rules, DestinationRule);
    add_all!(objects.service_entries, ServiceEntry);
    add_all!(objects.workload_entries, WorkloadEntry);
    add_all!(objects.sidecars, Sidecar);
    add_all!(objects.gateways, Gateway);
    add_all!(objects.peer_authentications, PeerAuthentication);
    add_all!(objects.authorization_policies, AuthorizationPolicy);
    add_all!(objects.request_authentications, RequestAuthentication);
    add_all!(objects.telemetries, Telemetry);
    add_all!(objects.secrets, Secret);
    add_all!(objects.kube_gateways, KubeGateway);
    add_all!(objects.gateway_classes, GatewayClass);
    add_all!(objects.http_routes, HttpRoute);
    add_all!(objects.grpc_routes, GrpcRoute);
    add_all!(objects.tls_routes, TlsRoute);
    add_all!(objects.reference_grants, ReferenceGrant);
    let (admitted, mut rejected) = admission.admit(loaded, &HashSet::new());
    let (mut snapshot, more) = super::local::build(&admitted);
    rejected.extend(more);
    slice_endpoints(&mut snapshot, objects);
    (snapshot, rejected, references)
}

/// Endpoints of Kubernetes Services come from their EndpointSlices, not from selectors.
fn slice_endpoints(snapshot: &mut Snapshot, objects: &Objects) {
    let pods: BTreeMap<(String, String), &Pod> = objects
        .pods
        .iter()
        .map(|p| ((p.namespace().unwrap_or_default(), p.name_any()), p.as_ref()))
        .collect();
    for slice in &objects.slices {
        let namespace = slice.namespace().unwrap_or_default();
        let Some(service_name) = slice.labels().get("kubernetes.io/service-name") else { continue };
        let host = format!("{service_name}.{namespace}.svc.{DEFAULT_DOMAIN}");
        let Some(service) = snapshot.services.get(&host).cloned() else { continue };
        for endpoint in &slice.endpoints {
            // Not ready (and not explicitly serving while terminating) gets no traffic.
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            if conditions.ready == Some(false) {
                continue;
            }
            let pod =
                endpoint.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(
                    |r| {
                        pods.get(&(
                            r.namespace.clone().unwrap_or_else(|| namespace.clone()),
                            r.name.clone().unwrap_or_default(),
                        ))
                    },
                );
            let labels: BTreeMap<String, String> =
                pod.map(|p| p.labels().clone()).unwrap_or_default();
            let service_account = pod
                .and_then(|p| p.spec.as_ref())
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned());
            let sidecar = labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio");
            let locality = endpoint.zone.clone().unwrap_or_default();
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else { continue };
                for port in &service.ports {
                    // The slice says which port number the endpoint uses for each port name.
                    let target = slice
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref().unwrap_or_default() == port.name)
                        .and_then(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok());
                    let Some(target) = target else { continue };
                    snapshot.endpoints.entry((host.clone(), port.port)).or_default().push(
                        Endpoint {
                            address: ip,
                            port: target,
                            labels: labels.clone(),
                            namespace: namespace.clone(),
                            service_account: service_account.clone(),
                            sidecar,
                            locality: locality.clone(),
                            weight: 1,
                        },
                    );
                }
            }
        }
    }
}

/// Publishes a Warning Event on each object newly found invalid (once per object and
/// reason), so `kubectl describe` shows why its config is not applied.
async fn report(
    recorder: &Recorder,
    rejected: &[Rejected],
    references: &HashMap<ObjectRef, ObjectReference>,
    reported: &mut HashSet<(ObjectRef, String)>,
) {
    let current: HashSet<(ObjectRef, String)> =
        rejected.iter().filter_map(|r| Some((r.object.clone()?, r.reason.clone()))).collect();
    for (object, reason) in current.difference(reported) {
        let Some(reference) = references.get(object) else { continue };
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidConfiguration".to_owned(),
            // The API server refuses notes over 1 KiB.
            note: Some(reason.chars().take(1000).collect()),
            action: "Validate".to_owned(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, reference).await {
            warn!(%object, "cannot publish an Event about the invalid object: {err}");
        }
    }
    *reported = current;
}

/// Says once per Telemetry that its `metrics` are read but not enforced (its tracing and
/// access logging are), as the local source's loader does for files.
fn metrics_not_enforced(telemetries: &[Arc<Telemetry>], said: &mut HashSet<ObjectRef>) {
    let current: HashSet<ObjectRef> = telemetries
        .iter()
        .filter(|t| !t.spec.metrics.is_empty())
        .map(|t| ObjectRef::of(t.as_ref()))
        .collect();
    for object in current.difference(said) {
        warn!("{object}: spec.metrics is read but not enforced");
    }
    *said = current;
}

/// Reflector stores of every kind the source watches.
struct Stores {
    services: Store<KubeService>,
    slices: Store<EndpointSlice>,
    pods: Store<Pod>,
    virtual_services: Store<VirtualService>,
    destination_rules: Store<DestinationRule>,
    service_entries: Store<ServiceEntry>,
    workload_entries: Store<WorkloadEntry>,
    sidecars: Store<Sidecar>,
    gateways: Store<Gateway>,
    peer_authentications: Store<PeerAuthentication>,
    authorization_policies: Store<AuthorizationPolicy>,
    request_authentications: Store<RequestAuthentication>,
    /// Watched only when the cluster serves the kind (Istio's CRD or the mesh's).
    telemetries: Option<Store<Telemetry>>,
    secrets: Store<Secret>,
    /// The Gateway API's kinds, watched only when the cluster serves them (their CRDs are not
    /// the mesh's).
    gateway_api: Option<GatewayApiStores>,
}

struct GatewayApiStores {
    classes: Store<mesh_api::gateway_api::GatewayClass>,
    gateways: Store<mesh_api::gateway_api::Gateway>,
    routes: Store<mesh_api::gateway_api::HTTPRoute>,
    grpc_routes: Option<Store<mesh_api::gateway_api::GRPCRoute>>,
    tls_routes: Option<Store<mesh_api::gateway_api::TLSRoute>>,
    grants: Store<mesh_api::gateway_api::ReferenceGrant>,
}

impl Stores {
    fn objects(&self) -> Objects {
        Objects {
            services: self.services.state(),
            slices: self.slices.state(),
            pods: self.pods.state(),
            virtual_services: self.virtual_services.state(),
            destination_rules: self.destination_rules.state(),
            service_entries: self.service_entries.state(),
            workload_entries: self.workload_entries.state(),
            sidecars: self.sidecars.state(),
            gateways: self.gateways.state(),
            peer_authentications: self.peer_authentications.state(),
            authorization_policies: self.authorization_policies.state(),
            request_authentications: self.request_authentications.state(),
            telemetries: self.telemetries.as_ref().map(Store::state).unwrap_or_default(),
            secrets: self.secrets.state(),
            kube_gateways: self
                .gateway_api
                .as_ref()
                .map(|g| g.gateways.state())
                .unwrap_or_default(),
            gateway_classes: self
                .gateway_api
                .as_ref()
                .map(|g| g.classes.state())
                .unwrap_or_default(),
            http_routes: self.gateway_api.as_ref().map(|g| g.routes.state()).unwrap_or_default(),
            grpc_routes: self
                .gateway_api
                .as_ref()
                .and_then(|g| g.grpc_routes.as_ref())
                .map(Store::state)
                .unwrap_or_default(),
            tls_routes: self
                .gateway_api
                .as_ref()
                .and_then(|g| g.tls_routes.as_ref())
                .map(Store::state)
                .unwrap_or_default(),
            reference_grants: self
                .gateway_api
                .as_ref()
                .map(|g| g.grants.state())
                .unwrap_or_default(),
        }
    }
}

/// Watches the cluster and calls `on_change` with a new snapshot after every change (the
/// debounce downstream turns bursts into one push).
pub async fn run(client: Client, on_change: impl Fn(Snapshot, Vec<Rejected>) + Send + 'static) {
    let (tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let retry = tx.clone();
    macro_rules! watch {
        ($kind:ty) => {
            watch!($kind, watcher::Config::default())
        };
        ($kind:ty, $config:expr) => {{
            let (reader, writer) = reflector::store::<$kind>();
            let api: Api<$kind> = Api::all(client.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream =
                    watcher(api, $config).default_backoff().reflect(writer).touched_objects();
                futures::pin_mut!(stream);
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(_) => {
                            let _ = tx.try_send(());
                        }
                        Err(err) => warn!(kind = stringify!($kind), "watch error: {err}"),
                    }
                }
            });
            reader
        }};
    }
    let mut stores = Stores {
        services: watch!(KubeService),
        slices: watch!(EndpointSlice),
        pods: watch!(Pod),
        virtual_services: watch!(VirtualService),
        destination_rules: watch!(DestinationRule),
        service_entries: watch!(ServiceEntry),
        workload_entries: watch!(WorkloadEntry),
        sidecars: watch!(Sidecar),
        gateways: watch!(Gateway),
        peer_authentications: watch!(PeerAuthentication),
        authorization_policies: watch!(AuthorizationPolicy),
        request_authentications: watch!(RequestAuthentication),
        telemetries: None,
        // Only TLS Secrets: a gateway's certificate (with `ca.crt` for MUTUAL) is one.
        secrets: watch!(Secret, watcher::Config::default().fields("type=kubernetes.io/tls")),
        gateway_api: None,
    };
    let serves = |list: &k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
                  plural: &str| list.resources.iter().any(|r| r.name == plural);
    // Telemetry is watched where its CRD is (a cluster installed before it has none).
    let telemetry = client.list_api_group_resources("telemetry.istio.io/v1").await.ok();
    if telemetry.is_some_and(|list| serves(&list, "telemetries")) {
        stores.telemetries = Some(watch!(Telemetry));
    } else {
        tracing::info!("the cluster does not serve telemetry.istio.io/v1 Telemetry: not watched");
    }
    // The Gateway API is watched when the cluster serves it; without its CRDs the mesh's own
    // kinds still make the mesh. GRPCRoute (standard since v1.1) and TLSRoute (experimental)
    // are watched where the cluster has them.
    let v1 = client.list_api_group_resources("gateway.networking.k8s.io/v1").await.ok();
    if let Some(resources) = v1 {
        let grpc = serves(&resources, "grpcroutes");
        let alpha =
            client.list_api_group_resources("gateway.networking.k8s.io/v1alpha2").await.ok();
        let tls = alpha.is_some_and(|list| serves(&list, "tlsroutes"));
        stores.gateway_api = Some(GatewayApiStores {
            classes: watch!(mesh_api::gateway_api::GatewayClass),
            gateways: watch!(mesh_api::gateway_api::Gateway),
            routes: watch!(mesh_api::gateway_api::HTTPRoute),
            grpc_routes: grpc.then(|| watch!(mesh_api::gateway_api::GRPCRoute)),
            tls_routes: tls.then(|| watch!(mesh_api::gateway_api::TLSRoute)),
            grants: watch!(mesh_api::gateway_api::ReferenceGrant),
        });
        status::ensure_classes(&client).await;
    } else {
        tracing::info!(
            "the cluster does not serve the Gateway API (gateway.networking.k8s.io/v1): not watched"
        );
    }
    // The first snapshot waits until every kind has been listed, so readiness means "synced".
    for ready in [
        stores.services.wait_until_ready().await,
        stores.slices.wait_until_ready().await,
        stores.pods.wait_until_ready().await,
        stores.virtual_services.wait_until_ready().await,
        stores.destination_rules.wait_until_ready().await,
        stores.service_entries.wait_until_ready().await,
        stores.workload_entries.wait_until_ready().await,
        stores.sidecars.wait_until_ready().await,
        stores.gateways.wait_until_ready().await,
        stores.peer_authentications.wait_until_ready().await,
        stores.authorization_policies.wait_until_ready().await,
        stores.request_authentications.wait_until_ready().await,
        stores.secrets.wait_until_ready().await,
    ] {
        if ready.is_err() {
            warn!("a watch stopped before its first list");
            return;
        }
    }
    if let Some(store) = &stores.telemetries
        && store.wait_until_ready().await.is_err()
    {
        warn!("the Telemetry watch stopped before its first list");
        return;
    }
    if let Some(gateway_api) = &stores.gateway_api {
        let mut lists = vec![
            gateway_api.classes.wait_until_ready().await,
            gateway_api.gateways.wait_until_ready().await,
            gateway_api.routes.wait_until_ready().await,
            gateway_api.grants.wait_until_ready().await,
        ];
        for store in [&gateway_api.grpc_routes].into_iter().flatten() {
            lists.push(store.wait_until_ready().await);
        }
        for store in [&gateway_api.tls_routes].into_iter().flatten() {
            lists.push(store.wait_until_ready().await);
        }
        if lists.iter().any(Result::is_err) {
            warn!("a Gateway API watch stopped before its first list");
            return;
        }
    }
    // Istio kinds the mesh does not implement: watched where their CRDs are, to say so.
    let mut unenforced = unenforced::Unenforced::watch(&client, &tx).await;
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: "mesh-pilot".to_owned(), instance: std::env::var("POD_NAME").ok() },
    );
    let mut admission = Admission::default();
    let mut reported = HashSet::new();
    let mut metrics_said = HashSet::new();
    loop {
        let objects = stores.objects();
        metrics_not_enforced(&objects.telemetries, &mut metrics_said);
        let (snapshot, rejected, references) = build_with(&mut admission, &objects);
        report(&recorder, &rejected, &references, &mut reported).await;
        unenforced.report(&recorder).await;
        if stores.gateway_api.is_some() {
            let now = k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
            let statuses = status::compute(&objects, &snapshot, &rejected, &now.to_string());
            if !status::write(&client, &objects, &statuses).await {
                // A conflict or a failed write: another pass in a while, changes or not.
                let tx = retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    let _ = tx.try_send(());
                });
            }
        }
        on_change(snapshot, rejected);
        if changed.recv().await.is_none() {
            return;
        }
    }
}
