//! Wrong inputs users write, each with the exact field path and reason the mesh reports.

#![allow(clippy::unwrap_used)] // Test helpers: a panic is the failure report.

use mesh_api::load;
use mesh_api::validate::Code;

/// Loads one object and returns its validation errors as `(path, reason)`.
fn errors(yaml: &str) -> Vec<(String, String)> {
    let objects = match load::load_str("case.yaml", yaml).into_result() {
        Ok(objects) => objects,
        Err(errors) => panic!("case does not load: {}", errors[0]),
    };
    assert_eq!(objects.len(), 1);
    mesh_api::validate::resource(&objects[0].resource)
        .into_iter()
        .map(|e| (e.path, e.reason))
        .collect()
}

fn vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: hello\n  namespace: default\nspec:\n{spec}"
    )
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: hello\n  namespace: default\nspec:\n{spec}"
    )
}

fn kind(kind: &str, group: &str, spec: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: {kind}\nmetadata:\n  name: x\n  namespace: default\nspec:\n{spec}"
    )
}

#[track_caller]
fn expect(yaml: &str, expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> =
        expected.iter().map(|(p, r)| ((*p).to_owned(), (*r).to_owned())).collect();
    pretty_assertions::assert_eq!(errors(yaml), expected);
}

const ROUTE: &str = "    route:\n    - destination:\n        host: hello\n";
const ROUTE_ITEM: &str = "  - route:\n    - destination:\n        host: hello\n";

#[test]
fn weight_out_of_range() {
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - route:\n    - destination: {host: hello, subset: a}\n      weight: 120\n    - destination: {host: hello, subset: b}\n      weight: -20\n",
        ),
        &[
            ("spec.http[0].route[0].weight", "weight 120 is out of range: must be 0 to 100"),
            ("spec.http[0].route[1].weight", "weight -20 is out of range: must be 0 to 100"),
        ],
    );
}

#[test]
fn weights_not_summing_to_100() {
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - route:\n    - destination: {host: hello, subset: a}\n      weight: 70\n    - destination: {host: hello, subset: b}\n      weight: 20\n",
        ),
        &[("spec.http[0].route", "weights add up to 90: they must sum to 100")],
    );
}

#[test]
fn lone_destination_takes_all_traffic_whatever_its_weight() {
    // Istio: "If there is only one destination in a rule, it will receive all traffic."
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - route:\n    - destination: {host: hello}\n      weight: 50\n",
        ),
        &[],
    );
}

#[test]
fn duration_that_does_not_parse() {
    expect(
        &vs(&format!("  hosts: [hello]\n  http:\n{}    timeout: 5sec\n", ROUTE_ITEM)),
        &[(
            "spec.http[0].timeout",
            "duration \"5sec\" has unknown unit \"sec\" (use ns, us, ms, s, m or h)",
        )],
    );
}

#[test]
fn duration_without_unit() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    retries:\n      attempts: 3\n      perTryTimeout: \"2\"\n",
            ROUTE_ITEM
        )),
        &[(
            "spec.http[0].retries.perTryTimeout",
            "duration \"2\" has a number without a unit (use ns, us, ms, s, m or h, as in \"10s\")",
        )],
    );
}

#[test]
fn duration_not_positive() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    fault:\n      delay:\n        fixedDelay: 0s\n",
            ROUTE_ITEM
        )),
        &[("spec.http[0].fault.delay.fixedDelay", "duration \"0s\" must be at least 1ms")],
    );
}

#[test]
fn negative_duration() {
    expect(
        &dr("  host: hello\n  trafficPolicy:\n    outlierDetection:\n      interval: -5s\n"),
        &[("spec.trafficPolicy.outlierDetection.interval", "duration \"-5s\" is negative")],
    );
}

#[test]
fn regex_that_does_not_compile() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n  - match:\n    - uri:\n        regex: \"/api/(v1\"\n{ROUTE}"
        )),
        &[(
            "spec.http[0].match[0].uri.regex",
            "regex \"/api/(v1\" does not compile: error: unclosed group",
        )],
    );
}

#[test]
fn fault_percentage_out_of_range() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    fault:\n      abort:\n        httpStatus: 503\n        percentage:\n          value: 150\n",
            ROUTE_ITEM
        )),
        &[(
            "spec.http[0].fault.abort.percentage.value",
            "percentage 150 is out of range: must be 0 to 100",
        )],
    );
}

#[test]
fn abort_with_invalid_http_status() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    fault:\n      abort:\n        httpStatus: 99\n",
            ROUTE_ITEM
        )),
        &[(
            "spec.http[0].fault.abort.httpStatus",
            "status 99 is not a valid HTTP status: must be 200 to 599",
        )],
    );
}

#[test]
fn abort_with_unknown_grpc_status() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    fault:\n      abort:\n        grpcStatus: UNAVAILBLE\n",
            ROUTE_ITEM
        )),
        &[(
            "spec.http[0].fault.abort.grpcStatus",
            "unknown gRPC status \"UNAVAILBLE\": must be one of OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED",
        )],
    );
}

#[test]
fn invalid_redirect_code() {
    expect(
        &vs("  hosts: [hello]\n  http:\n  - redirect:\n      uri: /new\n      redirectCode: 200\n"),
        &[(
            "spec.http[0].redirect.redirectCode",
            "redirect code 200 is not a redirect: must be 300 to 399",
        )],
    );
}

#[test]
fn direct_response_with_invalid_status() {
    expect(
        &vs("  hosts: [hello]\n  http:\n  - directResponse:\n      status: 700\n"),
        &[(
            "spec.http[0].directResponse.status",
            "status 700 is not a valid HTTP status: must be 200 to 599",
        )],
    );
}

#[test]
fn route_without_destination() {
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - match:\n    - uri:\n        prefix: /\n    timeout: 1s\n",
        ),
        &[(
            "spec.http[0].route",
            "at least one route destination is required (or a redirect, directResponse or delegate)",
        )],
    );
}

#[test]
fn tcp_route_without_destination() {
    expect(
        &vs("  hosts: [hello]\n  tcp:\n  - match:\n    - port: 27017\n"),
        &[("spec.tcp[0].route", "at least one route destination is required")],
    );
}

#[test]
fn redirect_together_with_route() {
    expect(
        &vs(&format!("  hosts: [hello]\n  http:\n  - redirect:\n      uri: /new\n{ROUTE}")),
        &[("spec.http[0].redirect", "redirect cannot be used together with route")],
    );
}

#[test]
fn rewrite_together_with_redirect() {
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - redirect:\n      uri: /new\n    rewrite:\n      uri: /other\n",
        ),
        &[("spec.http[0].rewrite", "rewrite cannot be used together with redirect")],
    );
}

#[test]
fn port_out_of_range() {
    expect(
        &vs(
            "  hosts: [hello]\n  http:\n  - route:\n    - destination:\n        host: hello\n        port:\n          number: 70000\n",
        ),
        &[(
            "spec.http[0].route[0].destination.port.number",
            "port 70000 is out of range: must be 1 to 65535",
        )],
    );
}

#[test]
fn service_entry_port_zero_and_duplicate() {
    expect(
        &kind(
            "ServiceEntry",
            "networking.istio.io",
            "  hosts: [api.example.com]\n  resolution: DNS\n  ports:\n  - number: 0\n    name: http\n    protocol: HTTP\n  - number: 443\n    name: http\n    protocol: HTTPS\n",
        ),
        &[
            ("spec.ports[0].number", "port 0 is out of range: must be 1 to 65535"),
            ("spec.ports[1].name", "port name \"http\" is declared twice"),
        ],
    );
}

#[test]
fn hosts_empty_and_malformed() {
    expect(
        &vs(&format!("  gateways: [public]\n  http:\n{}", ROUTE_ITEM)),
        &[(
            "spec.hosts",
            "at least one host is required (only a delegate VirtualService has none, and a delegate cannot set gateways)",
        )],
    );
    expect(
        &vs(&format!("  hosts: [Hello_World, \"foo.*.com\"]\n  http:\n{}", ROUTE_ITEM)),
        &[
            (
                "spec.hosts[0]",
                "host \"Hello_World\" is not a valid DNS name: label \"Hello_World\" must be 1 to 63 letters, digits or '-', not starting or ending with '-'",
            ),
            (
                "spec.hosts[1]",
                "host \"foo.*.com\" is not a valid wildcard: only a leading '*' or '*.' is allowed",
            ),
        ],
    );
}

#[test]
fn wildcard_host_on_the_mesh_gateway() {
    expect(
        &vs(&format!("  hosts: [\"*\"]\n  http:\n{}", ROUTE_ITEM)),
        &[(
            "spec.hosts[0]",
            "'*' cannot be used for the mesh gateway (sidecars): it would capture every host",
        )],
    );
}

#[test]
fn duplicate_subset_names() {
    expect(
        &dr(
            "  host: hello\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v1\n    labels: {version: v2}\n",
        ),
        &[("spec.subsets[1].name", "subset name \"v1\" is already used by an earlier subset")],
    );
}

#[test]
fn unknown_load_balancer_and_tls_modes() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    loadBalancer:\n      simple: ROUNDROBIN\n    tls:\n      mode: ISTIO_MUTAL\n",
        ),
        &[
            (
                "spec.trafficPolicy.loadBalancer.simple",
                "unknown value \"ROUNDROBIN\": must be one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST",
            ),
            (
                "spec.trafficPolicy.tls.mode",
                "unknown value \"ISTIO_MUTAL\": must be one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL",
            ),
        ],
    );
}

#[test]
fn simple_and_consistent_hash_together() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n      consistentHash:\n        httpHeaderName: x-user\n",
        ),
        &[(
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "set simple or consistentHash, not both",
        )],
    );
}

#[test]
fn consistent_hash_with_two_keys() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n        useSourceIp: true\n",
        ),
        &[(
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "set only one hash key of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName",
        )],
    );
}

#[test]
fn negative_connection_pool_limit() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    connectionPool:\n      http:\n        http1MaxPendingRequests: -1\n",
        ),
        &[(
            "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests",
            "-1 must not be negative",
        )],
    );
}

#[test]
fn ejection_percent_over_100() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 101\n",
        ),
        &[(
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 101 is out of range: must be 0 to 100",
        )],
    );
}

#[test]
fn istio_mutual_with_certificates() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      clientCertificate: /etc/certs/cert.pem\n",
        ),
        &[(
            "spec.trafficPolicy.tls.clientCertificate",
            "clientCertificate cannot be set with ISTIO_MUTUAL: the mesh's own workload certificates are used",
        )],
    );
}

#[test]
fn duplicate_port_level_settings() {
    expect(
        &dr(
            "  host: hello\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n      tls: {mode: SIMPLE}\n    - port: {number: 80}\n      tls: {mode: DISABLE}\n",
        ),
        &[(
            "spec.trafficPolicy.portLevelSettings[1].port.number",
            "port 80 already has settings in an earlier entry",
        )],
    );
}

#[test]
fn unknown_retry_condition() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    retries:\n      attempts: 2\n      retryOn: 5xx,gateway-eror\n",
            ROUTE_ITEM
        )),
        &[(
            "spec.http[0].retries.retryOn",
            "unknown retry condition \"gateway-eror\": must be an HTTP status code or one of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable",
        )],
    );
}

#[test]
fn string_match_with_two_kinds() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n  - match:\n    - headers:\n        version:\n          exact: v1\n          prefix: v\n{ROUTE}"
        )),
        &[("spec.http[0].match[0].headers[version]", "set only one of exact, prefix or regex")],
    );
}

#[test]
fn header_manipulation_of_host_and_pseudo_headers() {
    // Setting the host is allowed (as in Istio); removing it, or touching other pseudo-headers,
    // is not.
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    headers:\n      request:\n        set:\n          host: other\n          \":path\": /x\n        remove: [host]\n",
            ROUTE_ITEM
        )),
        &[
            (
                "spec.http[0].headers.request.set[:path]",
                "pseudo-header \":path\" cannot be changed",
            ),
            (
                "spec.http[0].headers.request.remove[0]",
                "header \"host\" cannot be removed: every request has a host",
            ),
        ],
    );
}

#[test]
fn mirror_percentage_without_mirror() {
    expect(
        &vs(&format!(
            "  hosts: [hello]\n  http:\n{}    mirrorPercentage:\n      value: 10\n",
            ROUTE_ITEM
        )),
        &[("spec.http[0].mirrorPercentage", "a mirror percentage needs a mirror destination")],
    );
}

#[test]
fn tls_route_sni_outside_hosts() {
    expect(
        &vs(
            "  hosts: [\"*.example.com\"]\n  tls:\n  - match:\n    - sniHosts: [api.example.org]\n    route:\n    - destination: {host: api}\n",
        ),
        &[(
            "spec.tls[0].match[0].sniHosts[0]",
            "SNI host \"api.example.org\" is not covered by any of the VirtualService's hosts",
        )],
    );
}

#[test]
fn gateway_without_servers_and_bad_hosts() {
    expect(
        &kind("Gateway", "networking.istio.io", "  selector: {istio: ingressgateway}\n"),
        &[("spec.servers", "at least one server is required")],
    );
    expect(
        &kind(
            "Gateway",
            "networking.istio.io",
            "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"bad ns/foo.com\"]\n",
        ),
        &[
            (
                "spec.servers[0].hosts[0]",
                "\"bad ns\" in host \"bad ns/foo.com\" is not a namespace, '.', '~' or '*'",
            ),
            ("spec.servers[0].tls", "a HTTPS server needs tls settings"),
        ],
    );
}

#[test]
fn gateway_protocol_unknown() {
    expect(
        &kind(
            "Gateway",
            "networking.istio.io",
            "  servers:\n  - port: {number: 80, name: http, protocol: HTPP}\n    hosts: [\"*\"]\n",
        ),
        &[(
            "spec.servers[0].port.protocol",
            "unknown protocol \"HTPP\": must be one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, HTTP_PROXY, MONGO, MYSQL, REDIS, TCP, TLS, UDP, THRIFT",
        )],
    );
}

#[test]
fn service_entry_unknown_location_and_wildcard_dns() {
    expect(
        &kind(
            "ServiceEntry",
            "networking.istio.io",
            "  hosts: [\"*.db.internal\"]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n  location: MESH_OUTSIDE\n",
        ),
        &[
            (
                "spec.location",
                "unknown value \"MESH_OUTSIDE\": must be one of MESH_EXTERNAL, MESH_INTERNAL",
            ),
            (
                "spec.hosts[0]",
                "wildcard host \"*.db.internal\" cannot be resolved with DNS: add endpoints or use resolution NONE or DYNAMIC_DNS",
            ),
        ],
    );
}

#[test]
fn workload_entry_without_address() {
    expect(
        &kind(
            "WorkloadEntry",
            "networking.istio.io",
            "  ports: {http: 0}\n  serviceAccount: Bad_SA\n",
        ),
        &[
            ("spec.address", "address is required"),
            ("spec.ports[http]", "port 0 is out of range: must be 1 to 65535"),
            ("spec.serviceAccount", "\"Bad_SA\" is not a valid service account name"),
        ],
    );
}

#[test]
fn sidecar_egress_host_without_namespace() {
    expect(
        &kind(
            "Sidecar",
            "networking.istio.io",
            "  egress:\n  - hosts: [reviews.default.svc.cluster.local]\n  outboundTrafficPolicy:\n    mode: DENY_ALL\n",
        ),
        &[
            (
                "spec.egress[0].hosts[0]",
                "host \"reviews.default.svc.cluster.local\" must be namespace/dnsName, as in \"./*\" or \"istio-system/*\"",
            ),
            (
                "spec.outboundTrafficPolicy.mode",
                "unknown value \"DENY_ALL\": must be one of REGISTRY_ONLY, ALLOW_ANY",
            ),
        ],
    );
}

#[test]
fn peer_authentication_mode_and_ports() {
    expect(
        &kind(
            "PeerAuthentication",
            "security.istio.io",
            "  mtls:\n    mode: STRICKT\n  portLevelMtls:\n    \"http\":\n      mode: DISABLE\n",
        ),
        &[
            (
                "spec.mtls.mode",
                "unknown value \"STRICKT\": must be one of UNSET, DISABLE, PERMISSIVE, STRICT",
            ),
            (
                "spec.portLevelMtls",
                "portLevelMtls needs a selector: port numbers only mean something for specific workloads",
            ),
            ("spec.portLevelMtls[http]", "\"http\" is not a port number"),
        ],
    );
}

#[test]
fn authorization_policy_mistakes() {
    expect(
        &kind(
            "AuthorizationPolicy",
            "security.istio.io",
            "  action: CUSTOM\n  rules:\n  - from:\n    - source:\n        ipBlocks: [10.0.0.0/40]\n    to:\n    - operation: {}\n    when:\n    - key: request.header[x]\n",
        ),
        &[
            ("spec.provider", "action CUSTOM needs a provider"),
            (
                "spec.rules[0].from[0].source.ipBlocks[0]",
                "\"10.0.0.0/40\" is not an IP address or CIDR block",
            ),
            (
                "spec.rules[0].to[0].operation",
                "an operation needs at least one field (hosts, ports, methods, paths, ...)",
            ),
            (
                "spec.rules[0].when[0].key",
                "unknown condition key \"request.header[x]\": use request.headers[name], source.ip, remote.ip, source.namespace, source.principal, request.auth.*, destination.ip, destination.port or connection.sni",
            ),
            ("spec.rules[0].when[0]", "a condition needs values or notValues"),
        ],
    );
}

#[test]
fn authorization_action_unknown_with_provider() {
    expect(
        &kind(
            "AuthorizationPolicy",
            "security.istio.io",
            "  action: ALOW\n  rules:\n  - to:\n    - operation:\n        ports: [\"http\"]\n",
        ),
        &[
            ("spec.action", "unknown value \"ALOW\": must be one of ALLOW, DENY, AUDIT, CUSTOM"),
            ("spec.rules[0].to[0].operation.ports[0]", "\"http\" is not a port number"),
        ],
    );
}

#[test]
fn every_error_of_a_document_is_reported() {
    // Five independent mistakes in one VirtualService: all of them come back, in field order.
    let yaml = vs(
        "  hosts: [hello]\n  http:\n  - route:\n    - destination: {host: hello, subset: a}\n      weight: 60\n    - destination: {host: hello, subset: b}\n      weight: 60\n    timeout: 3x\n    fault:\n      abort:\n        httpStatus: 1000\n  - redirect:\n      uri: /x\n      redirectCode: 404\n    route:\n    - destination: {host: hello}\n",
    );
    expect(
        &yaml,
        &[
            ("spec.http[0].route", "weights add up to 120: they must sum to 100"),
            (
                "spec.http[0].timeout",
                "duration \"3x\" has unknown unit \"x\" (use ns, us, ms, s, m or h)",
            ),
            (
                "spec.http[0].fault.abort.httpStatus",
                "status 1000 is not a valid HTTP status: must be 200 to 599",
            ),
            ("spec.http[1].redirect", "redirect cannot be used together with route"),
            (
                "spec.http[1].redirect.redirectCode",
                "redirect code 404 is not a redirect: must be 300 to 399",
            ),
        ],
    );
}

#[test]
fn errors_name_the_object() {
    let objects = load::load_str("case.yaml", &dr("  host: \"\"\n")).into_result().unwrap();
    let errors = mesh_api::validate::resource(&objects[0].resource);
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["DestinationRule default/hello: spec.host: host is required"]);
}

/// Checks the `(path, code)` of every validation error of one object.
#[track_caller]
fn expect_codes(yaml: &str, expected: &[(&str, Code)]) {
    let objects = load::load_str("case.yaml", yaml).into_result().unwrap();
    let codes: Vec<(String, Code)> = mesh_api::validate::resource(&objects[0].resource)
        .into_iter()
        .map(|e| (e.path, e.code))
        .collect();
    let expected: Vec<(String, Code)> =
        expected.iter().map(|(p, c)| ((*p).to_owned(), *c)).collect();
    pretty_assertions::assert_eq!(codes, expected);
}

#[test]
fn findings_carry_their_code() {
    expect_codes(
        &vs(
            "  hosts: [hello]\n  http:\n  - match:\n    - uri:\n        regex: \"(\"\n    route:\n    - destination: {host: hello, subset: a, port: {number: 0}}\n      weight: 60\n    - destination: {host: hello, subset: b}\n      weight: 60\n    timeout: 3x\n    mirrorPercent: 101\n",
        ),
        &[
            ("spec.http[0].match[0].uri.regex", Code::InvalidRegex),
            ("spec.http[0].route[0].destination.port.number", Code::PortOutOfRange),
            ("spec.http[0].route", Code::WeightsNot100),
            ("spec.http[0].timeout", Code::InvalidDuration),
            ("spec.http[0].mirrorPercent", Code::PercentOutOfRange),
            ("spec.http[0].mirrorPercentage", Code::Required),
        ],
    );
    // One check gives one code in every kind: locality weights, ServiceEntry ports.
    expect_codes(
        &dr(
            "  host: hello\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: a/*\n          to: {b/*: 70}\n",
        ),
        &[(
            "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
            Code::WeightsNot100,
        )],
    );
    expect_codes(
        &kind(
            "ServiceEntry",
            "networking.istio.io",
            "  hosts: [api.example.com]\n  ports:\n  - {number: 70000, name: http}\n  - {number: 70000, name: http}\n",
        ),
        &[
            ("spec.ports[0].number", Code::PortOutOfRange),
            ("spec.ports[1].number", Code::PortOutOfRange),
            ("spec.ports[1].number", Code::Duplicate),
            ("spec.ports[1].name", Code::Duplicate),
        ],
    );
    expect_codes(
        &kind(
            "AuthorizationPolicy",
            "security.istio.io",
            "  action: DENY\n  provider: {name: ext}\n  rules:\n  - to:\n    - operation:\n        ports: [\"\"]\n",
        ),
        &[
            ("spec.provider", Code::ConflictingFields),
            ("spec.rules[0].to[0].operation.ports[0]", Code::Required),
        ],
    );
}

#[test]
fn request_authentication_rules() {
    let ra = |spec: &str| kind("RequestAuthentication", "security.istio.io", spec);
    expect(
        &ra(
            "  jwtRules:\n  - issuer: https://a.example.com\n    jwksUri: https://a.example.com/keys\n    outputClaimToHeaders: [{header: x-sub, claim: sub}]\n",
        ),
        &[],
    );
    expect(
        &ra(
            "  jwtRules:\n  - jwks: '{\"keys\": []}'\n  - issuer: i\n    jwksUri: ftp://keys\n  - issuer: i\n  - issuer: j\n    jwks: '{\"keys\": [{\"kty\": \"RSA\"}]}'\n    jwksUri: https://j/keys\n    fromHeaders: [{name: \"bad header\"}]\n",
        ),
        &[
            ("spec.jwtRules[0].issuer", "the issuer whose tokens are accepted is required"),
            ("spec.jwtRules[0].jwks", "not a JWKS: a JSON object with a non-empty \"keys\" list"),
            ("spec.jwtRules[1].jwksUri", "\"ftp://keys\" is not an http(s) URL"),
            ("spec.jwtRules[2].issuer", "issuer \"i\" has an earlier rule"),
            ("spec.jwtRules[2]", "jwks or jwksUri: the keys tokens are checked with"),
            ("spec.jwtRules[3]", "set jwks or jwksUri, not both"),
            (
                "spec.jwtRules[3].fromHeaders[0].name",
                "\"bad header\" is not a valid HTTP header name",
            ),
        ],
    );
}
