//! Validation of DestinationRule: subsets and the traffic policy (load balancing, connection
//! pools, outlier detection, TLS), whole or per port.

use std::collections::BTreeSet;

use super::labels;
use crate::ObjectRef;
use crate::networking::*;
use crate::validate::{Checker, Code, Path, ValidationError, is_host_label};

/// Validates a DestinationRule.
pub fn destination_rule(dr: &DestinationRule) -> Vec<ValidationError> {
    let mut c = Checker::new(ObjectRef::of(dr));
    let spec = &dr.spec;
    let root = Path::root("spec");
    if spec.host.is_empty() {
        c.required(&root.field("host"), "host");
    } else {
        c.host(&root.field("host"), &spec.host);
    }
    if let Some(policy) = &spec.traffic_policy {
        traffic_policy(&mut c, &root.field("trafficPolicy"), policy);
    }
    let mut names = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let path = root.field("subsets").index(i);
        if subset.name.is_empty() {
            c.required(&path.field("name"), "subset name");
        } else if !is_host_label(&subset.name) {
            c.error(
                &path.field("name"),
                Code::InvalidName,
                format!(
                    "subset name {:?} must be a DNS label (letters, digits and '-')",
                    subset.name
                ),
            );
        } else if !names.insert(subset.name.as_str()) {
            c.error(
                &path.field("name"),
                Code::Duplicate,
                format!("subset name {:?} is already used by an earlier subset", subset.name),
            );
        }
        labels(&mut c, &path.field("labels"), &subset.labels);
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(&mut c, &path.field("trafficPolicy"), policy);
        }
    }
    c.export_to(&root.field("exportTo"), &spec.export_to);
    if let Some(selector) = &spec.workload_selector {
        labels(
            &mut c,
            &root.field("workloadSelector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    c.finish()
}

fn traffic_policy(c: &mut Checker, path: &Path, policy: &TrafficPolicy) {
    port_policy(
        c,
        path,
        policy.load_balancer.as_ref(),
        policy.connection_pool.as_ref(),
        policy.outlier_detection.as_ref(),
        policy.tls.as_ref(),
    );
    let mut ports = BTreeSet::new();
    for (i, port_policy_entry) in policy.port_level_settings.iter().enumerate() {
        let ppath = path.field("portLevelSettings").index(i);
        match &port_policy_entry.port {
            None => c.required(&ppath.field("port"), "port"),
            Some(port) => {
                c.port(&ppath.field("port").field("number"), port.number);
                if !ports.insert(port.number) {
                    c.error(
                        &ppath.field("port").field("number"),
                        Code::Duplicate,
                        format!("port {} already has settings in an earlier entry", port.number),
                    );
                }
            }
        }
        port_policy(
            c,
            &ppath,
            port_policy_entry.load_balancer.as_ref(),
            port_policy_entry.connection_pool.as_ref(),
            port_policy_entry.outlier_detection.as_ref(),
            port_policy_entry.tls.as_ref(),
        );
    }
    if let Some(tunnel) = &policy.tunnel {
        let tpath = path.field("tunnel");
        if let Some(protocol) = &tunnel.protocol {
            c.one_of(&tpath.field("protocol"), protocol, &["CONNECT", "POST"]);
        }
        if tunnel.target_host.is_empty() {
            c.required(&tpath.field("targetHost"), "targetHost");
        }
        c.port(&tpath.field("targetPort"), tunnel.target_port);
    }
    if let Some(proxy_protocol) = &policy.proxy_protocol
        && let Some(version) = &proxy_protocol.version
    {
        c.known(&path.field("proxyProtocol").field("version"), version);
    }
    if let Some(budget) = &policy.retry_budget
        && let Some(percent) = &budget.percent
    {
        c.percent(&path.field("retryBudget").field("percent"), percent);
    }
}

/// The settings a traffic policy holds both for all ports and for one port.
fn port_policy(
    c: &mut Checker,
    path: &Path,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
) {
    if let Some(lb) = lb {
        load_balancer(c, &path.field("loadBalancer"), lb);
    }
    if let Some(pool) = pool {
        connection_pool(c, &path.field("connectionPool"), pool);
    }
    if let Some(outlier) = outlier {
        outlier_detection(c, &path.field("outlierDetection"), outlier);
    }
    if let Some(tls) = tls {
        client_tls(c, &path.field("tls"), tls);
    }
}

fn load_balancer(c: &mut Checker, path: &Path, lb: &LoadBalancerSettings) {
    if let Some(simple) = &lb.simple {
        c.known(&path.field("simple"), simple);
        if lb.consistent_hash.is_some() {
            c.not_both(&path.field("consistentHash"), "simple", "consistentHash");
        }
    }
    if let Some(hash) = &lb.consistent_hash {
        consistent_hash(c, &path.field("consistentHash"), hash);
    }
    if let Some(locality) = &lb.locality_lb_setting {
        locality_lb(c, &path.field("localityLbSetting"), locality);
    }
    c.opt_duration(&path.field("warmupDurationSecs"), lb.warmup_duration_secs.as_ref());
    if let Some(warmup) = &lb.warmup {
        let wpath = path.field("warmup");
        c.opt_duration(&wpath.field("duration"), warmup.duration.as_ref());
        if let Some(min) = warmup.minimum_percent {
            c.percentage(&wpath.field("minimumPercent"), min);
        }
        if let Some(aggression) = warmup.aggression
            && aggression < 1.0
        {
            c.error(
                &wpath.field("aggression"),
                Code::NumberTooSmall,
                format!("aggression {aggression} must be at least 1"),
            );
        }
    }
}

fn consistent_hash(c: &mut Checker, path: &Path, hash: &ConsistentHashLb) {
    let keys = [
        hash.http_header_name.is_some(),
        hash.http_cookie.is_some(),
        hash.use_source_ip == Some(true),
        hash.http_query_parameter_name.is_some(),
    ];
    if keys.iter().filter(|k| **k).count() > 1 {
        c.error(
            path,
            Code::ConflictingFields,
            "set only one hash key of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName",
        );
    }
    if let Some(name) = &hash.http_header_name {
        c.header_syntax(&path.field("httpHeaderName"), name);
    }
    if let Some(cookie) = &hash.http_cookie {
        if cookie.name.is_empty() {
            c.required(&path.field("httpCookie").field("name"), "cookie name");
        }
        c.opt_duration(&path.field("httpCookie").field("ttl"), cookie.ttl.as_ref());
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        c.not_both(&path.field("maglev"), "ringHash", "maglev");
    }
    if hash.minimum_ring_size.is_some() && hash.maglev.is_some() {
        c.error(
            &path.field("minimumRingSize"),
            Code::ConflictingFields,
            "minimumRingSize applies to ringHash, not maglev",
        );
    }
}

fn locality_lb(c: &mut Checker, path: &Path, locality: &LocalityLbSetting) {
    if !locality.distribute.is_empty() && !locality.failover.is_empty() {
        c.not_both(&path.field("failover"), "distribute", "failover");
    }
    for (i, rule) in locality.distribute.iter().enumerate() {
        let total: u64 = rule.to.values().map(|w| u64::from(*w)).sum();
        c.weights_total(&path.field("distribute").index(i).field("to"), i128::from(total));
    }
    for (i, rule) in locality.failover.iter().enumerate() {
        if rule.from.is_empty() || rule.to.is_empty() {
            c.error(
                &path.field("failover").index(i),
                Code::Required,
                "failover needs both from and to regions",
            );
        } else if rule.from == rule.to {
            c.error(
                &path.field("failover").index(i),
                Code::FailoverToSelf,
                format!("region {:?} cannot fail over to itself", rule.from),
            );
        }
    }
}

/// Connection limits and timeouts, of a DestinationRule or of a Sidecar's listeners.
pub(super) fn connection_pool(c: &mut Checker, path: &Path, pool: &ConnectionPoolSettings) {
    if pool.tcp.is_none() && pool.http.is_none() {
        c.error(path, Code::Required, "set tcp or http settings");
    }
    if let Some(tcp) = &pool.tcp {
        let tpath = path.field("tcp");
        c.non_negative(&tpath.field("maxConnections"), tcp.max_connections);
        c.opt_duration(&tpath.field("connectTimeout"), tcp.connect_timeout.as_ref());
        c.opt_duration(&tpath.field("maxConnectionDuration"), tcp.max_connection_duration.as_ref());
        c.opt_timeout(&tpath.field("idleTimeout"), tcp.idle_timeout.as_ref());
        if let Some(keepalive) = &tcp.tcp_keepalive {
            let kpath = tpath.field("tcpKeepalive");
            c.opt_duration(&kpath.field("time"), keepalive.time.as_ref());
            c.opt_duration(&kpath.field("interval"), keepalive.interval.as_ref());
        }
    }
    if let Some(http) = &pool.http {
        let hpath = path.field("http");
        for (field, value) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ] {
            c.non_negative(&hpath.field(field), value);
        }
        c.opt_timeout(&hpath.field("idleTimeout"), http.idle_timeout.as_ref());
        if let Some(policy) = &http.h2_upgrade_policy {
            c.known(&hpath.field("h2UpgradePolicy"), policy);
        }
    }
}

fn outlier_detection(c: &mut Checker, path: &Path, outlier: &OutlierDetection) {
    for (field, value) in [
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ] {
        if let Some(v) = value {
            c.percentage(&path.field(field), f64::from(v));
        }
    }
    c.non_negative(&path.field("consecutiveErrors"), outlier.consecutive_errors);
    c.opt_duration(&path.field("interval"), outlier.interval.as_ref());
    c.opt_duration(&path.field("baseEjectionTime"), outlier.base_ejection_time.as_ref());
}

fn client_tls(c: &mut Checker, path: &Path, tls: &ClientTlsSettings) {
    let Some(mode) = &tls.mode else {
        return;
    };
    c.known(&path.field("mode"), mode);
    match mode {
        ClientTlsMode::Mutual => {
            let has_files = tls.client_certificate.is_some() && tls.private_key.is_some();
            if !has_files && tls.credential_name.is_none() {
                c.error(
                    path,
                    Code::MissingTlsCredentials,
                    "MUTUAL needs credentialName, or clientCertificate and privateKey",
                );
            }
        }
        ClientTlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    c.error(&path.field(field), Code::ConflictingFields, format!("{field} cannot be set with ISTIO_MUTUAL: the mesh's own workload certificates are used"));
                }
            }
        }
        _ => {}
    }
}
