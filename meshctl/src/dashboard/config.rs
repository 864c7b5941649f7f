//! The Config view's data: which VirtualServices and DestinationRules apply to a service,
//! with hosts resolved as Istio resolves them (a short name in the object's namespace, `*.`
//! wildcards), and the hook through which `meshctl analyze`'s findings are shown.

use mesh_api::Resource;
use mesh_api::load::{Loaded, load_str_mixed};

use super::model::ServiceKey;
use super::source::ConfigDoc;

/// The cluster's DNS domain, which short names are qualified with.
pub const DNS_DOMAIN: &str = "cluster.local";

/// Analysis of the mesh's config documents (origin, text): one line per finding. The lead
/// plugs `meshctl analyze` in here; without one, the Config view shows no findings.
pub type Analyzer = fn(&[ConfigDoc]) -> Vec<String>;

/// The mesh's config, read once per change.
#[derive(Debug, Default)]
pub struct Config {
    /// The VirtualServices and DestinationRules read.
    pub objects: Vec<Loaded>,
    /// Documents that could not be read (one line each), or why there is no config at all.
    pub errors: Vec<String>,
    /// The analyzer's findings for all of it.
    pub findings: Vec<String>,
}

impl Config {
    /// Reads the documents (keeping only what the view shows) and runs `analyzer` on them.
    pub fn read(docs: &Result<Vec<ConfigDoc>, String>, analyzer: Option<Analyzer>) -> Self {
        let docs = match docs {
            Ok(docs) => docs,
            Err(err) => return Self { errors: vec![format!("config: {err}")], ..Self::default() },
        };
        let mut config = Self::default();
        for (origin, text) in docs {
            // A cluster's documents hold Pods and Deployments too: read past, never an error.
            let report = load_str_mixed(origin, text);
            config.errors.extend(report.errors.iter().map(ToString::to_string));
            config.objects.extend(report.objects.into_iter().filter(|o| {
                matches!(o.resource, Resource::VirtualService(_) | Resource::DestinationRule(_))
            }));
        }
        config.findings = analyzer.map(|analyze| analyze(docs)).unwrap_or_default();
        config
    }

    /// The objects that apply to `service`: VirtualServices first, each kind in the order read.
    pub fn applying_to(&self, service: &ServiceKey) -> Vec<&Loaded> {
        let fqdn = fqdn(service);
        let mut vs = Vec::new();
        let mut dr = Vec::new();
        for loaded in &self.objects {
            let namespace =
                loaded.resource.object_ref().namespace.unwrap_or_else(|| "default".into());
            let names = |host: &str| host_matches(&resolve(host, &namespace), &fqdn);
            match &loaded.resource {
                Resource::VirtualService(o) if o.spec.hosts.iter().any(|h| names(h)) => {
                    vs.push(loaded);
                }
                Resource::DestinationRule(o) if names(&o.spec.host) => dr.push(loaded),
                _ => {}
            }
        }
        vs.extend(dr);
        vs
    }

    /// The findings that name `service` or one of `objects`, and how many others there are.
    pub fn findings_for(&self, service: &ServiceKey, objects: &[&Loaded]) -> (Vec<&str>, usize) {
        let names: Vec<String> = std::iter::once(service.name.clone())
            .chain(objects.iter().map(|o| o.resource.object_ref().name))
            .filter(|n| !n.is_empty())
            .collect();
        let (mine, others): (Vec<&str>, Vec<&str>) = self
            .findings
            .iter()
            .map(String::as_str)
            .partition(|f| names.iter().any(|n| f.contains(n.as_str())));
        (mine, others.len())
    }
}

/// The Config view's text for `service`: each object that applies to it (kind, name, origin,
/// then its YAML), the findings about it, and the documents that could not be read.
pub fn describe(config: &Config, service: Option<&ServiceKey>) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(service) = service else {
        lines.push("No service selected: pick one in Services (Enter drills in).".to_owned());
        return lines;
    };
    let objects = config.applying_to(service);
    // What needs attention first, then the objects (which may run long).
    let (findings, others) = config.findings_for(service, &objects);
    if !findings.is_empty() || others > 0 {
        lines.push("Findings:".to_owned());
        lines.extend(findings.iter().map(|f| format!("  {f}")));
        if others > 0 {
            lines.push(format!("  ({others} more about the rest of the mesh)"));
        }
        lines.push(String::new());
    }
    if !config.errors.is_empty() {
        lines.push("Not read:".to_owned());
        lines.extend(config.errors.iter().map(|e| format!("  {e}")));
        lines.push(String::new());
    }
    if objects.is_empty() {
        lines.push(format!(
            "No VirtualService or DestinationRule applies to {}.",
            service.display()
        ));
    }
    for object in &objects {
        lines.push(format!("{}  ({})", object.resource.object_ref(), object.origin));
        match object.resource.to_yaml() {
            Ok(yaml) => lines.extend(yaml.lines().map(|l| format!("  {l}"))),
            Err(err) => lines.push(format!("  (cannot show: {err})")),
        }
    }
    lines
}

/// The service's host name (`reviews.default.svc.cluster.local`); a service outside the
/// cluster is its host.
pub fn fqdn(service: &ServiceKey) -> String {
    if super::model::known(&service.namespace) {
        format!("{}.{}.svc.{DNS_DOMAIN}", service.name, service.namespace)
    } else {
        service.name.clone()
    }
}

/// A host as an object in `namespace` means it: a name without a dot is a short name of that
/// namespace; anything else (FQDNs, `*.` wildcards, `*`) stands as written, as Istio does.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{DNS_DOMAIN}")
    }
}

/// Whether a resolved host (perhaps a wildcard) names `fqdn`.
pub fn host_matches(pattern: &str, fqdn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix) && fqdn.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(fqdn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, namespace: &str) -> ServiceKey {
        ServiceKey { name: name.into(), namespace: namespace.into() }
    }

    #[test]
    fn hosts_resolve_as_istio_does() {
        assert_eq!(resolve("reviews", "bookinfo"), "reviews.bookinfo.svc.cluster.local");
        // A name with a dot is taken as written, not searched as Kubernetes DNS would.
        assert_eq!(resolve("reviews.default", "bookinfo"), "reviews.default");
        assert!(host_matches("*.default.svc.cluster.local", "reviews.default.svc.cluster.local"));
        assert!(!host_matches("*.other.svc.cluster.local", "reviews.default.svc.cluster.local"));
        assert!(host_matches("*", "anything"));
        assert_eq!(fqdn(&key("api.example.com", "unknown")), "api.example.com");
    }

    fn analyzer(docs: &[ConfigDoc]) -> Vec<String> {
        vec![format!("{} documents", docs.len()), "VirtualService default/reviews: x".into()]
    }

    #[test]
    fn picks_the_objects_of_a_service() {
        let docs = vec![(
            "mesh.yaml".to_owned(),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\n\
             spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: all, namespace: other}\n\
             spec: {hosts: ['*.default.svc.cluster.local'], http: [{route: [{destination: {host: x}}]}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: other}\n\
             spec: {host: reviews}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\n\
             spec: {host: reviews.default.svc.cluster.local}\n---\nkind: Nonsense\n"
                .to_owned(),
        )];
        let config = Config::read(&Ok(docs), Some(analyzer));
        let names: Vec<String> = config
            .applying_to(&key("reviews", "default"))
            .iter()
            .map(|o| o.resource.object_ref().to_string())
            .collect();
        // The DestinationRule in `other` names reviews.other, not this service.
        assert_eq!(
            names,
            [
                "VirtualService default/reviews",
                "VirtualService other/all",
                "DestinationRule default/r"
            ]
        );
        assert_eq!(config.errors.len(), 1, "{:?}", config.errors);
        let objects = config.applying_to(&key("reviews", "default"));
        let (mine, others) = config.findings_for(&key("reviews", "default"), &objects);
        assert_eq!(mine, ["VirtualService default/reviews: x"]);
        assert_eq!(others, 1);
        assert!(Config::read(&Err("down".into()), None).errors[0].contains("down"));
    }

    #[test]
    fn a_clusters_workloads_are_read_past() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n  containers: []\n";
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {}\n  template: {}\n";
        let docs = vec![
            ("Pod default/p".to_owned(), pod.to_owned()),
            ("d".to_owned(), deployment.to_owned()),
        ];
        let config = Config::read(&Ok(docs), None);
        assert!(config.errors.is_empty(), "{:?}", config.errors);
    }
}
