//! The translation checked through the model, on small meshes whose numbers are worked out
//! by hand in the comments.

use super::*;
use crate::dashboard::metrics::parse;
use crate::dashboard::model::{Traffic, traffic};

#[test]
fn cluster_names() {
    assert_eq!(parse_cluster("inbound|9080||"), Some(Cluster::Inbound { host: None }));
    assert_eq!(
        parse_cluster("inbound|9080|http|reviews.default.svc.cluster.local"),
        Some(Cluster::Inbound { host: Some("reviews.default.svc.cluster.local") })
    );
    assert_eq!(
        parse_cluster("outbound|9080|v1|reviews.default.svc.cluster.local"),
        Some(Cluster::Outbound { subset: Some("v1"), host: "reviews.default.svc.cluster.local" })
    );
    assert_eq!(
        parse_cluster("outbound|443||api.example.com"),
        Some(Cluster::Outbound { subset: None, host: "api.example.com" })
    );
    for other in
        ["xds-grpc", "PassthroughCluster", "outbound|9080||", "outbound|x||a", "inbound|1|2|3|4"]
    {
        assert_eq!(parse_cluster(other), None, "{other}");
    }
    let service =
        |name: &str, namespace: &str| ServiceKey { name: name.into(), namespace: namespace.into() };
    assert_eq!(host_service("reviews.default.svc.cluster.local"), service("reviews", "default"));
    assert_eq!(host_service("reviews.default.svc"), service("reviews", "default"));
    assert_eq!(host_service("api.example.com"), service("api.example.com", "unknown"));
}

/// Envoy's lines for one cluster: a per-code counter, its same-named class counter (which
/// must not count again) and, with `buckets`, the request time histogram's cumulative
/// buckets at 1, 5 and 10 ms and +Inf.
fn cluster(name: &str, codes: &[(&str, u32)], buckets: Option<[u32; 4]>) -> String {
    let mut text = String::new();
    for (code, n) in codes {
        let class = &code[..1];
        text.push_str(&format!(
            "envoy_cluster_upstream_rq{{response_code=\"{code}\",cluster_name=\"{name}\"}} {n}\n\
             envoy_cluster_upstream_rq{{response_code_class=\"{class}xx\",cluster_name=\"{name}\"}} {n}\n"
        ));
    }
    let total: u32 = codes.iter().map(|(_, n)| n).sum();
    text.push_str(&format!("envoy_cluster_upstream_rq_total{{cluster_name=\"{name}\"}} {total}\n"));
    for (le, n) in ["1", "5", "10", "+Inf"].iter().zip(buckets.into_iter().flatten()) {
        text.push_str(&format!(
            "envoy_cluster_upstream_rq_time_bucket{{cluster_name=\"{name}\",le=\"{le}\"}} {n}\n"
        ));
    }
    text
}

fn samples(proxies: &[(&str, String)]) -> ProxySamples {
    proxies
        .iter()
        .map(|(pod, text)| {
            let parsed = parse(text, |n| n.starts_with("istio_") || keep(n));
            ((pod.to_string(), "default".to_owned()), parsed.samples)
        })
        .collect()
}

fn run(before: &[(&str, String)], after: &[(&str, String)], listed: &[&str]) -> Traffic {
    let listed: Vec<(String, String)> =
        listed.iter().map(|p| (p.to_string(), "default".to_owned())).collect();
    let (before, after) = (samples(before), samples(after));
    let (previous, current) = translate(Some(&before), &after, &listed, &Pods::default());
    traffic(previous.as_ref(), &current, 10.0)
}

fn edges(traffic: &Traffic) -> Vec<String> {
    traffic
        .edges
        .iter()
        .map(|e| {
            format!(
                "{} -> {} {:?} {:?}",
                e.from.label("default"),
                e.to.label("default"),
                e.rate,
                e.errors
            )
        })
        .collect()
}

/// Each pod's metrics text.
type Texts = Vec<(&'static str, String)>;

const PAGE: &str = "outbound|9080||productpage.default.svc.cluster.local";
const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const REVIEWS_V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
const INBOUND: &str = "inbound|9080||";

/// An all-Envoy mesh, two scrapes 10 s apart: client calls productpage; productpage calls
/// reviews through subset v1 and through the whole service (which reviews-v2 answered);
/// reviews-v2 calls ratings, whose pod is not in the mesh.
fn mesh() -> (Texts, Texts) {
    let noise = "# TYPE envoy_cluster_upstream_rq counter\nenvoy_server_uptime{} 5\n";
    let before = vec![
        ("client", cluster(PAGE, &[("200", 40)], None)),
        (
            "productpage-v1",
            cluster(INBOUND, &[("200", 20)], Some([0, 10, 20, 20]))
                + &cluster(REVIEWS_V1, &[("200", 10)], None)
                + &cluster("xds-grpc", &[("200", 1)], Some([1, 1, 1, 1]))
                + noise,
        ),
        ("reviews-v1", cluster(INBOUND, &[("200", 10)], None)),
        ("reviews-v2", String::new()),
    ];
    let after = vec![
        ("client", cluster(PAGE, &[("200", 94), ("503", 6)], None)),
        (
            "productpage-v1",
            cluster(INBOUND, &[("200", 74), ("503", 6)], Some([6, 40, 80, 80]))
                + &cluster(REVIEWS_V1, &[("200", 30)], None)
                + &cluster(REVIEWS, &[("200", 25), ("500", 5)], None)
                + &cluster("xds-grpc", &[("200", 9)], Some([9, 9, 9, 9]))
                + noise,
        ),
        ("reviews-v1", cluster(INBOUND, &[("200", 30)], None)),
        (
            "reviews-v2",
            cluster(INBOUND, &[("200", 25), ("500", 5)], None)
                + &cluster(RATINGS, &[("200", 8)], None),
        ),
    ];
    (before, after)
}

#[test]
fn rows_come_from_the_servers_inbound_clusters() {
    let (before, after) = mesh();
    let traffic = run(&before, &after, &["client", "productpage-v1", "reviews-v1", "reviews-v2"]);
    let rows: Vec<String> = traffic
        .services
        .iter()
        .map(|r| {
            format!(
                "{} {} {:?} {:?} {:?}",
                r.service.display(),
                r.version,
                r.rps,
                r.success,
                r.mtls
            )
        })
        .collect();
    // productpage: inbound 200s 20 -> 74 and 503s 0 -> 6: 60 requests in 10 s, 54 of
    // them good; client's 60 are the same requests (not added: the server reports).
    // ratings has no proxy: reviews-v2's 8 calls are the only report. reviews: each
    // version's own inbound cluster; the 5 500s of v2 are 5 of its 30.
    // xds-grpc is not the mesh's. No series says mTLS.
    assert_eq!(
        rows,
        [
            "productpage.default v1 Some(6.0) Some(0.9) None",
            "ratings.default unknown Some(0.8) Some(1.0) None",
            "reviews.default v1 Some(2.0) Some(1.0) None",
            "reviews.default v2 Some(3.0) Some(0.8333333333333334) None",
        ]
    );
    // productpage's bucket deltas, cumulative: le=1: 6, le=5: 30, le=10: 60, +Inf: 60.
    // p50: rank 30 is reached at le=5: 1 + 4 * (30-6)/(30-6) = 5.
    // p90: rank 54 in (5,10]: 5 + 5 * (54-30)/(60-30) = 9.
    // p99: rank 59.4 in (5,10]: 5 + 5 * (59.4-30)/30 = 9.9.
    let [p50, p90, p99] = traffic.services[0].latency.map(Option::unwrap);
    assert_eq!((p50, p90), (5.0, 9.0));
    assert!((p99 - 9.9).abs() < 1e-9, "{p99}");
    // No histogram (or one with no observation in the window): no percentiles.
    assert_eq!(traffic.services[2].latency, [None; 3]);
    assert_eq!(
        traffic.services[0].workloads,
        [("productpage-v1".to_owned(), "default".to_owned())]
    );
}

#[test]
fn edges_come_from_the_callers_and_the_last_hop_from_the_server() {
    let (before, after) = mesh();
    let traffic = run(&before, &after, &["client", "productpage-v1", "reviews-v1", "reviews-v2"]);
    // client -> productpage-v1: productpage has one workload; 60 calls, 6 of them 503s.
    // productpage-v1 -> reviews-v1: subset v1 is reviews-v1's version; 20 calls.
    // productpage-v1 -> reviews: no subset, two workloads: the service; 30 calls, 5 500s.
    // reviews -> reviews-v2: reviews-v2's own 30, through the service callers named;
    // reviews-v1's own are productpage-v1's direct edge already.
    // reviews-v2 -> ratings: a service with no known workload.
    assert_eq!(
        edges(&traffic),
        [
            "client -> productpage-v1 Some(6.0) Some(0.1)",
            "productpage-v1 -> reviews Some(3.0) Some(0.16666666666666666)",
            "productpage-v1 -> reviews-v1 Some(2.0) Some(0.0)",
            "reviews -> reviews-v2 Some(3.0) Some(0.16666666666666666)",
            "reviews-v2 -> ratings Some(0.8) Some(0.0)",
        ]
    );
    let own: Vec<String> =
        traffic.proxy_workloads.iter().map(|((pod, _), (w, _))| format!("{pod}={w}")).collect();
    assert_eq!(
        own,
        [
            "client=client",
            "productpage-v1=productpage-v1",
            "reviews-v1=reviews-v1",
            "reviews-v2=reviews-v2"
        ]
    );
}

#[test]
fn a_server_no_caller_reports_is_called_by_unknown() {
    // reviews-v1 served 20 requests in 10 s and no scraped proxy says it called it.
    let before = [("reviews-v1", cluster(INBOUND, &[("200", 10)], None))];
    let after = [("reviews-v1", cluster(INBOUND, &[("200", 30)], None))];
    assert_eq!(
        edges(&run(&before, &after, &["reviews-v1"])),
        ["unknown -> reviews-v1 Some(2.0) Some(0.0)"]
    );
}

#[test]
fn an_envoy_that_restarted_counts_from_zero() {
    // 500 requests before, 40 after a restart: 40 new ones, not -460.
    let before = [("reviews-v1", cluster(INBOUND, &[("200", 500)], None))];
    let after = [("reviews-v1", cluster(INBOUND, &[("200", 40)], None))];
    assert_eq!(run(&before, &after, &[]).services[0].rps, Some(4.0));
}

/// mesh-proxy's series as its Istio stats write them.
fn istio(reporter: &str, from: &str, service: &str, to: &str, code: &str, n: u32) -> String {
    format!(
        "istio_requests_total{{reporter=\"{reporter}\",source_workload=\"{from}\",\
         source_workload_namespace=\"default\",destination_service_name=\"{service}\",\
         destination_service_namespace=\"default\",destination_workload=\"{to}\",\
         destination_workload_namespace=\"default\",destination_version=\"v1\",\
         response_code=\"{code}\",connection_security_policy=\"mutual_tls\"}} {n}\n"
    )
}

#[test]
fn a_mixed_mesh_counts_each_request_once() {
    // productpage-v1 runs mesh-proxy; reviews-v1 and details-v1 run Envoy.
    // productpage -> reviews: mesh-proxy's caller report (no peer metadata from Envoy:
    // the workload is unknown) and Envoy's inbound both say 20.
    // details -> productpage: Envoy's caller report and mesh-proxy's server report
    // (which cannot name an Envoy caller) both say 10.
    let before = [
        (
            "productpage-v1",
            istio("source", "productpage-v1", "reviews", "unknown", "200", 100)
                + &istio("destination", "unknown", "productpage", "productpage-v1", "200", 50)
                // Envoy families in a mesh-proxy's scrape are not read.
                + &cluster(INBOUND, &[("200", 7)], None),
        ),
        ("reviews-v1", cluster(INBOUND, &[("200", 100)], None)),
        ("details-v1", cluster(PAGE, &[("200", 50)], None)),
    ];
    let after = [
        (
            "productpage-v1",
            istio("source", "productpage-v1", "reviews", "unknown", "200", 120)
                + &istio("destination", "unknown", "productpage", "productpage-v1", "200", 60)
                + &cluster(INBOUND, &[("200", 1000)], None),
        ),
        ("reviews-v1", cluster(INBOUND, &[("200", 120)], None)),
        ("details-v1", cluster(PAGE, &[("200", 60)], None)),
    ];
    let traffic = run(&before, &after, &["productpage-v1", "reviews-v1", "details-v1"]);
    let rows: Vec<String> = traffic
        .services
        .iter()
        .map(|r| format!("{} {} {:?} {:?}", r.service.display(), r.version, r.rps, r.mtls))
        .collect();
    // Each row from its server alone: mesh-proxy's says mTLS, Envoy's cannot.
    assert_eq!(
        rows,
        ["productpage.default v1 Some(1.0) Some(1.0)", "reviews.default v1 Some(2.0) None"]
    );
    // reviews: the caller's edge (Envoy's report does not name callers) to the service,
    // and Envoy's last hop from it. productpage: mesh-proxy's server report counts, its
    // caller unknown, and details-v1's report is not added to it.
    assert_eq!(
        edges(&traffic),
        [
            "productpage-v1 -> reviews Some(2.0) Some(0.0)",
            "reviews -> reviews-v1 Some(2.0) Some(0.0)",
            "unknown -> productpage-v1 Some(1.0) Some(0.0)",
        ]
    );
}

#[test]
fn the_configs_labels_name_a_pod_its_name_does_not() {
    // The local mesh's WorkloadEntry of pod `rev-two`: reviews v2 by its labels.
    let config = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                  metadata: {name: rev-two, namespace: default}\n\
                  spec: {address: 10.77.0.13, labels: {app: reviews, version: v2}}\n";
    let pods = Pods::read(&Ok(vec![("we.yaml".into(), config.into())]));
    let before = samples(&[("rev-two", cluster(INBOUND, &[("200", 10)], None))]);
    let after = samples(&[("rev-two", cluster(INBOUND, &[("200", 40)], None))]);
    let (previous, current) = translate(Some(&before), &after, &[], &pods);
    let traffic = traffic(previous.as_ref(), &current, 10.0);
    let row = &traffic.services[0];
    // 30 requests in 10 s.
    assert_eq!(
        (row.service.display(), row.version.as_str(), row.rps),
        ("reviews.default".to_owned(), "v2", Some(3.0))
    );
    assert_eq!(row.workloads, [("rev-two".to_owned(), "default".to_owned())]);
}
