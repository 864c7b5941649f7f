//! A cluster, through the Kubernetes API: a connection to a pod's port is the API's port-forward
//! (it arrives on the pod's loopback, where the proxies' admin and the pilot's debug endpoints
//! answer), bridged to a local socket pair so the same blocking HTTP reads it as a local one.

use std::os::unix::net::UnixStream;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod as KubePod, Service};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::de::DeserializeOwned;

use super::{AccessError, Conn, Mesh, MeshArgs, Pod, Target};

/// A cluster reached through its API server.
pub struct ClusterMesh {
    /// Runs the client and the port-forwards' copying in the background while meshctl's
    /// commands block on their answers.
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// The context's name, or the API server's address.
    name: String,
    /// The namespace of the control plane.
    mesh_namespace: String,
    /// The context's default namespace.
    default_namespace: String,
}

impl ClusterMesh {
    /// The cluster of `args`' kubeconfig and context (or the default ones).
    pub fn connect(args: &MeshArgs) -> Result<Self, AccessError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("meshctl-kube")
            .enable_all()
            .build()
            .map_err(|e| AccessError::io("cannot start the Kubernetes client's runtime", e))?;
        let options =
            KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
        let config = runtime.block_on(async {
            match &args.kubeconfig {
                Some(path) => {
                    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                        AccessError::NoMesh(format!("kubeconfig {}: {e}", path.display()))
                    })?;
                    Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| {
                        AccessError::NoMesh(format!("kubeconfig {}: {e}", path.display()))
                    })
                }
                None if args.context.is_some() => Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| AccessError::NoMesh(format!("kubeconfig: {e}"))),
                None => Config::infer()
                    .await
                    .map_err(|e| AccessError::NoMesh(format!("no kubeconfig: {e}"))),
            }
        })?;
        Self::with_config(runtime, config, args)
    }

    /// A cluster of an explicit client configuration (tests point it at a fake API server).
    pub fn with_config(
        runtime: tokio::runtime::Runtime,
        config: Config,
        args: &MeshArgs,
    ) -> Result<Self, AccessError> {
        let name = args.context.clone().unwrap_or_else(|| config.cluster_url.to_string());
        let default_namespace = config.default_namespace.clone();
        let client = {
            let _entered = runtime.enter();
            Client::try_from(config).map_err(|source| AccessError::Kube {
                what: "cannot make a Kubernetes client".into(),
                source,
            })?
        };
        Ok(Self {
            runtime,
            client,
            name,
            mesh_namespace: args.mesh_namespace.clone(),
            default_namespace,
        })
    }

    /// A running pod of the control plane's `app` (`mesh-pilot`, `mesh-ca`).
    fn control_plane_pod(&self, app: &str) -> Result<Pod, AccessError> {
        self.control_plane_pods(app)?.into_iter().next().ok_or_else(|| {
            AccessError::NotFound(format!(
                "no running {app} pod in namespace {} of {} (is the mesh installed? \
                 `meshctl install`; another namespace: --mesh-namespace)",
                self.mesh_namespace, self.name
            ))
        })
    }

    /// The running pods of the control plane's `app`, by name.
    fn control_plane_pods(&self, app: &str) -> Result<Vec<Pod>, AccessError> {
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), &self.mesh_namespace);
        let params = ListParams::default().labels(&format!("app={app}"));
        let pods =
            self.runtime.block_on(api.list(&params)).map_err(|source| AccessError::Kube {
                what: format!("cannot list the {app} pods in {}", self.mesh_namespace),
                source,
            })?;
        let mut running: Vec<Pod> = pods
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .map(|name| Pod { name, namespace: self.mesh_namespace.clone() })
            .collect();
        running.sort();
        Ok(running)
    }

    /// The objects of a namespaced kind `K` in `namespace`, or in all namespaces.
    fn scoped<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    /// Every object `api` lists, as (origin, JSON) documents; a kind the cluster does not
    /// serve (its CRD not installed) gives none.
    fn list<K>(&self, api: Api<K>) -> Result<Vec<(String, String)>, AccessError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize,
        K: std::fmt::Debug,
    {
        let kind = K::kind(&());
        let list = match self.runtime.block_on(api.list(&ListParams::default())) {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
            Err(source) => {
                return Err(AccessError::Kube { what: format!("cannot list {kind}s"), source });
            }
        };
        list.items
            .into_iter()
            .map(|item| {
                let origin = format!(
                    "{kind} {}/{}",
                    item.meta().namespace.as_deref().unwrap_or(""),
                    item.meta().name.as_deref().unwrap_or("")
                );
                let mut value = serde_json::to_value(&item).map_err(|e| AccessError::Http {
                    what: origin.clone(),
                    reason: e.to_string(),
                })?;
                // A list's items come without their type; the loader needs it.
                if let Some(object) = value.as_object_mut() {
                    object.insert("apiVersion".into(), K::api_version(&()).into_owned().into());
                    object.insert("kind".into(), kind.clone().into_owned().into());
                }
                Ok((origin, value.to_string()))
            })
            .collect()
    }
}

impl Mesh for ClusterMesh {
    fn describe(&self) -> String {
        format!("the cluster {}", self.name)
    }

    fn connect(&self, target: &Target, port: u16) -> Result<Box<dyn Conn>, AccessError> {
        let pod = match target {
            Target::Pilot => self.control_plane_pod("mesh-pilot")?,
            Target::Ca => self.control_plane_pod("mesh-ca")?,
            Target::Pod(pod) => pod.clone(),
            Target::Tracing => {
                return Err(AccessError::NotFound(format!(
                    "meshctl reads traces from the local mesh's receiver only \
                     (`meshctl local up --tracing`); {} sends its spans to the collector \
                     MeshConfig's extensionProviders name: look the trace up there (Jaeger, \
                     Tempo)",
                    self.describe()
                )));
            }
        };
        let what = format!("port-forward to {pod}:{port}");
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let mut forwarder = self
            .runtime
            .block_on(api.portforward(&pod.name, &[port]))
            .map_err(|source| AccessError::Kube { what: what.clone(), source })?;
        let mut upstream = forwarder.take_stream(port).ok_or_else(|| AccessError::Connect {
            what: what.clone(),
            reason: "the API server gave no stream for the port".into(),
        })?;
        let (mine, theirs) = UnixStream::pair().map_err(|e| AccessError::io(&what, e))?;
        theirs.set_nonblocking(true).map_err(|e| AccessError::io(&what, e))?;
        let theirs = {
            let _entered = self.runtime.enter();
            tokio::net::UnixStream::from_std(theirs).map_err(|e| AccessError::io(&what, e))?
        };
        self.runtime.spawn(async move {
            let mut theirs = theirs;
            let _ = tokio::io::copy_bidirectional(&mut theirs, &mut upstream).await;
            drop(upstream);
            let _ = forwarder.join().await;
        });
        Ok(Box::new(mine))
    }

    fn pilots(&self) -> Result<Vec<(String, Target)>, AccessError> {
        // At least the one the error names when there is none.
        let pods = match self.control_plane_pods("mesh-pilot")? {
            pods if pods.is_empty() => vec![self.control_plane_pod("mesh-pilot")?],
            pods => pods,
        };
        Ok(pods.into_iter().map(|pod| (pod.name.clone(), Target::Pod(pod))).collect())
    }

    fn pilot_token(&self) -> Option<String> {
        // A port-forward arrives on the pilot's loopback, where /debug needs no token.
        None
    }

    fn config_documents(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<(String, String)>, AccessError> {
        use mesh_api::gateway_api as gw;
        use mesh_api::networking as net;
        use mesh_api::security as sec;
        let mut documents = Vec::new();
        // Namespaces are read whole: their labels decide injection for every check.
        documents.extend(self.list(Api::<Namespace>::all(self.client.clone()))?);
        documents.extend(self.list(self.scoped::<Service>(namespace))?);
        documents.extend(self.list(self.scoped::<Deployment>(namespace))?);
        documents.extend(self.list(self.scoped::<KubePod>(namespace))?);
        documents.extend(self.list(self.scoped::<net::VirtualService>(namespace))?);
        documents.extend(self.list(self.scoped::<net::DestinationRule>(namespace))?);
        documents.extend(self.list(self.scoped::<net::Gateway>(namespace))?);
        documents.extend(self.list(self.scoped::<net::ServiceEntry>(namespace))?);
        documents.extend(self.list(self.scoped::<net::Sidecar>(namespace))?);
        documents.extend(self.list(self.scoped::<net::WorkloadEntry>(namespace))?);
        documents.extend(self.list(self.scoped::<sec::PeerAuthentication>(namespace))?);
        documents.extend(self.list(self.scoped::<sec::AuthorizationPolicy>(namespace))?);
        documents.extend(self.list(self.scoped::<sec::RequestAuthentication>(namespace))?);
        documents.extend(self.list(self.scoped::<mesh_api::telemetry::Telemetry>(namespace))?);
        documents.extend(self.list(Api::<gw::GatewayClass>::all(self.client.clone()))?);
        documents.extend(self.list(self.scoped::<gw::Gateway>(namespace))?);
        documents.extend(self.list(self.scoped::<gw::HTTPRoute>(namespace))?);
        documents.extend(self.list(self.scoped::<gw::GRPCRoute>(namespace))?);
        documents.extend(self.list(self.scoped::<gw::TLSRoute>(namespace))?);
        documents.extend(self.list(self.scoped::<gw::ReferenceGrant>(namespace))?);
        Ok(documents)
    }

    fn find_pod(&self, name: &str) -> Result<Pod, AccessError> {
        let pod = super::split_pod_name(name, &self.default_namespace);
        let api: Api<KubePod> = Api::namespaced(self.client.clone(), &pod.namespace);
        match self.runtime.block_on(api.get_opt(&pod.name)) {
            Ok(Some(_)) => Ok(pod),
            Ok(None) => Err(AccessError::NotFound(format!("no pod {pod} in {}", self.describe()))),
            Err(source) => {
                Err(AccessError::Kube { what: format!("cannot read pod {pod}"), source })
            }
        }
    }
}
