#!/usr/bin/env bash
# `make kind-e2e`: the mesh on a kind cluster, checked with the routing scenarios of the local
# end-to-end suite (e2e/tests/local_mesh.rs). Step by step, one printed line each: check for
# docker, kind and kubectl; create the cluster (e2e/kind/cluster.yaml); build the images (make
# images) and load them into it; `meshctl install`; label a namespace mesh-injection=enabled;
# deploy Bookinfo (e2e/kind/bookinfo.yaml) and a client pod (e2e/kind/client.yaml); wait for the
# rollouts; check every pod got the sidecar; then apply e2e/bookinfo/*.yaml with kubectl and
# count which reviews version answered over N page loads sent from the client pod. One PASS or
# FAIL line per check; the exit status is non-zero if any failed. The cluster is deleted at the
# end unless KEEP_CLUSTER=1.
#
# It needs a Docker engine, kind and kubectl (e2e/kind/README.md: versions and variables). It
# cannot run on machines without Docker, such as the project's development machines and CI.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true # bash 4.4+; macOS's bash 3.2 runs without it

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

KIND_CLUSTER_NAME=${KIND_CLUSTER_NAME:-mesh-e2e}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
KIND_CONFIG=${KIND_CONFIG:-e2e/kind/cluster.yaml}
# Not `latest`: for a `latest` tag Kubernetes pulls by default (imagePullPolicy Always), and the
# injected containers would come from the registry instead of the images loaded here.
HUB=${HUB:-ghcr.io/mesh}
TAG=${TAG:-kind}
SKIP_IMAGES=${SKIP_IMAGES:-0}
MESHCTL=${MESHCTL:-}
PROFILE=${PROFILE:-minimal}
NAMESPACE=${NAMESPACE:-bookinfo}
CLIENT_IMAGE=${CLIENT_IMAGE:-curlimages/curl:8.11.1}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-60}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-300s}
REQUESTS=${REQUESTS:-200}

MESH_IMAGES="mesh-proxy mesh-pilot mesh-ca mesh-init mesh-agent meshctl bookinfo"
DEPLOYMENTS="details-v1 ratings-v1 reviews-v1 reviews-v2 reviews-v3 productpage-v1 client"
CONTEXT="kind-$KIND_CLUSTER_NAME"
TAB=$(printf '\t')

STEP=0
step() {
  STEP=$((STEP + 1))
  printf '\n[%d] %s\n' "$STEP" "$*"
}
info() { printf '    %s\n' "$*"; }
die() {
  printf 'kind-e2e: %s\n' "$*" >&2
  exit 1
}
# kubectl on this cluster, and in the test namespace.
kc() { kubectl --context "$CONTEXT" "$@"; }
kn() { kubectl --context "$CONTEXT" -n "$NAMESPACE" "$@"; }

# What the cluster shows, after a failure.
diagnostics() {
  printf '\n--- what the cluster shows\n'
  kc get pods -A -o wide 2>&1
  printf '\n--- recent events in %s\n' "$NAMESPACE"
  kn get events --sort-by=.lastTimestamp 2>&1 | tail -n 20
  printf '\n--- mesh-pilot log (end)\n'
  kc -n mesh-system logs deployment/mesh-pilot --tail=40 2>&1
  for deployment in productpage-v1 client; do
    printf '\n--- %s sidecar log (end)\n' "$deployment"
    kn logs "deployment/$deployment" -c mesh-proxy --tail=20 2>&1
  done
}

# CLUSTER_MADE: there is a cluster to delete (or keep); CLUSTER_UP: it answers, so a failure
# shows what it holds.
CLUSTER_MADE=0
CLUSTER_UP=0
on_exit() {
  local rc=$?
  set +e
  if [ "$CLUSTER_MADE" = 1 ]; then
    if [ "$rc" -ne 0 ] && [ "$CLUSTER_UP" = 1 ]; then diagnostics; fi
    if [ "$KEEP_CLUSTER" = 1 ]; then
      printf '\nThe cluster is kept (KEEP_CLUSTER=1). To look around:\n'
      info "kubectl --context $CONTEXT -n $NAMESPACE get pods"
      info "kubectl --context $CONTEXT -n $NAMESPACE exec deploy/client -c client -- curl -s 'http://productpage:9080/api/v1/products/0?user=jason'"
      info "kubectl --context $CONTEXT -n $NAMESPACE logs deploy/productpage-v1 -c mesh-proxy"
      info "kubectl --context $CONTEXT -n $NAMESPACE port-forward deploy/productpage-v1 15000  # then: curl localhost:15000/config_dump"
      info "kubectl --context $CONTEXT -n mesh-system logs deploy/mesh-pilot"
      info "kind delete cluster --name $KIND_CLUSTER_NAME  # to remove it"
    else
      step "deleting the cluster $KIND_CLUSTER_NAME (KEEP_CLUSTER=1 keeps it)"
      kind delete cluster --name "$KIND_CLUSTER_NAME"
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Traffic: page loads from the client pod, and what each showed, as e2e::bookinfo::summary
# says it: `v1`, `v2 black stars`, `v3 red stars`, `v2 ratings unavailable`,
# `reviews unavailable`, or `HTTP <status>` for an answer other than 200.

# N page loads (productpage's JSON view), one after another, as USER when not empty: one line
# each, "<status> <seconds> <body on one line>", timed by curl inside the client pod.
requests() {
  local user=$1 n=$2 path=/api/v1/products/0
  if [ -n "$user" ]; then path="$path?user=$user"; fi
  # shellcheck disable=SC2016 # $1, $2, $i and $$ belong to the pod's shell
  kn exec deploy/client -c client -- sh -c '
    i=0
    while [ "$i" -lt "$1" ]; do
      curl -s -m 30 -o "/tmp/page.$$" -w "%{http_code} %{time_total} " "http://productpage:9080$2"
      tr -d "\n" < "/tmp/page.$$" 2>/dev/null
      echo
      rm -f "/tmp/page.$$"
      i=$((i + 1))
    done' sh "$n" "$path"
}

# Reads requests' lines, writes "<what the page showed><TAB><seconds>" for each. The JSON is
# read by its fields, whatever their order: reviews' "version", the first rating's "color", and
# Bookinfo's error texts (e2e/src/bookinfo.rs).
classify() {
  awk '
    function field(name,   s) {
      if (!match($0, "\"" name "\": *\"[^\"]*\"")) return ""
      s = substr($0, RSTART, RLENGTH)
      sub("^\"" name "\": *\"", "", s)
      sub("\"$", "", s)
      return s
    }
    {
      status = $1; seconds = $2
      if (status != "200") { print "HTTP " status "\t" seconds; next }
      if (index($0, "Sorry, product reviews are currently unavailable")) {
        print "reviews unavailable\t" seconds; next
      }
      version = field("version"); if (version == "") version = "?"
      if (index($0, "Ratings service is currently unavailable")) {
        print version " ratings unavailable\t" seconds; next
      }
      colour = field("color")
      if (colour != "") { print version " " colour " stars\t" seconds; next }
      print version "\t" seconds
    }'
}

# N page loads as USER, tallied: "<count><TAB><what>" lines, sorted by what.
tally() {
  requests "$1" "$2" | classify |
    awk -F '\t' '{ n[$1]++ } END { for (k in n) printf "%d\t%s\n", n[k], k }' | LC_ALL=C sort -t "$TAB" -k 2
}

# A tally in one line: "v1: 7, v3 red stars: 3".
describe() {
  printf '%s\n' "$1" | awk -F '\t' 'NF { printf "%s%s: %s", sep, $2, $1; sep = ", " } END { print "" }'
}

# How many pages of a tally showed WHAT.
count_of() {
  printf '%s\n' "$1" | awk -F '\t' -v want="$2" '$2 == want { n = $1 } END { print n + 0 }'
}

# Whether every page of a tally showed one of the WHATs (and there was at least one page).
only() {
  local tally=$1
  shift
  printf '%s\n' "$tally" | ALLOWED=$(printf '%s\n' "$@") awk -F '\t' '
    BEGIN { n = split(ENVIRON["ALLOWED"], list, "\n"); for (i = 1; i <= n; i++) ok[list[i]] = 1 }
    NF { pages++; if (!($2 in ok)) bad = 1 }
    END { exit (bad || !pages) }'
}

# One page load as USER: "<what><TAB><seconds>".
page() { requests "$1" 1 | classify; }

# Whether SECONDS lies in [LOW, HIGH).
between() { awk -v t="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(t >= lo && t < hi) }'; }

# Whether COUNT of N lies within five standard deviations of the share P/Q, as
# e2e::traffic::near: (COUNT - N*P/Q)^2 <= 25 * N * P/Q * (1 - P/Q), in integers.
near() {
  local count=$1 n=$2 p=$3 q=$4
  local d=$((count * q - n * p))
  [ $((d * d)) -le $((25 * n * p * (q - p))) ]
}

fail() {
  info "$*"
  return 1
}

# Waits (SETTLE_TIMEOUT) until N page loads in a row as USER show only WANT (a routing change
# reaches the proxies within seconds), then checks N more. Pages before it settles may show
# anything, failures included; the N after must all be WANT.
settles_on() {
  local user=$1 want=$2 n=$3 last=""
  local deadline=$((SECONDS + SETTLE_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    last=$(tally "$user" "$n")
    if only "$last" "$want"; then
      last=$(tally "$user" "$n")
      if only "$last" "$want"; then
        info "${user:-anyone}: $(describe "$last")"
        return 0
      fi
      fail "${user:-anyone}: after settling on '$want': $(describe "$last")"
      return 1
    fi
    sleep 1
  done
  fail "${user:-anyone} never saw only '$want' within ${SETTLE_TIMEOUT}s: last $(describe "$last")"
}

# Waits (SETTLE_TIMEOUT) until batches of N page loads show only A or B, and some B: a weighted
# split is in force.
settles_within() {
  local n=$1 a=$2 b=$3 last=""
  local deadline=$((SECONDS + SETTLE_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    last=$(tally "" "$n")
    if only "$last" "$a" "$b" && [ "$(count_of "$last" "$b")" -gt 0 ]; then return 0; fi
    sleep 1
  done
  fail "the split never took effect within ${SETTLE_TIMEOUT}s: last $(describe "$last")"
}

# Loads pages as USER until one shows WANT or SETTLE_TIMEOUT passes; prints the last
# "<what><TAB><seconds>".
page_until() {
  local user=$1 want=$2 shown=""
  local deadline=$((SECONDS + SETTLE_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    shown=$(page "$user")
    if [ "${shown%%"$TAB"*}" = "$want" ]; then break; fi
  done
  printf '%s\n' "$shown"
}

apply() {
  info "kubectl apply -f e2e/bookinfo/$1"
  kn apply -f "e2e/bookinfo/$1" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# The checks: the scenarios of e2e/tests/local_mesh.rs (routing, shifting, faults, timeouts),
# each setting up the routing it needs.

check_round_robin() {
  # No routing rules yet: round robin over v1, v2 and v3.
  local t
  t=$(tally "" 60)
  info "$(describe "$t")"
  local want seen
  for want in "v1" "v2 black stars" "v3 red stars"; do
    seen=$(count_of "$t" "$want")
    near "$seen" 60 1 3 || fail "round robin: '$want' on $seen of 60 pages, expected 20 +- 5 sd"
  done
}

check_all_v1() {
  apply destination-rule-all.yaml
  # The subsets before the routes that use them, as Istio's docs ask (make before break).
  sleep 2
  apply virtual-service-all-v1.yaml
  settles_on "" "v1" 10
}

check_header_routing() {
  apply destination-rule-all.yaml
  apply virtual-service-all-v1.yaml
  apply virtual-service-reviews-test-v2.yaml
  settles_on jason "v2 black stars" 10
  settles_on "" "v1" 10
  settles_on alice "v1" 5
}

# FILE sends share P/Q of reviews to B and the rest to A.
check_weights() {
  local file=$1 a=$2 b=$3 p=$4 q=$5
  apply destination-rule-all.yaml
  apply "$file"
  settles_within 20 "$a" "$b"
  local t seen
  t=$(tally "" "$REQUESTS")
  info "$(describe "$t")"
  only "$t" "$a" "$b" || fail "$file: pages other than '$a' and '$b'"
  seen=$(count_of "$t" "$b")
  near "$seen" "$REQUESTS" "$p" "$q" ||
    fail "$file: '$b' on $seen of $REQUESTS pages, expected $((REQUESTS * p / q)) +- 5 sd"
}

check_all_v3() {
  apply destination-rule-all.yaml
  apply virtual-service-reviews-v3.yaml
  settles_on "" "v3 red stars" 20
}

check_fault_delay() {
  apply destination-rule-all.yaml
  apply virtual-service-all-v1.yaml
  apply virtual-service-reviews-test-v2.yaml
  settles_on jason "v2 black stars" 5
  # ratings 7 s late for jason: productpage gives up on reviews after 3 s, twice.
  apply virtual-service-ratings-test-delay.yaml
  local shown took
  shown=$(page_until jason "reviews unavailable")
  took=${shown#*"$TAB"}
  info "jason: ${shown%%"$TAB"*} in ${took}s"
  [ "${shown%%"$TAB"*}" = "reviews unavailable" ] || fail "jason with a 7 s delay saw '${shown%%"$TAB"*}'"
  between "$took" 6 7 || fail "jason's page took ${took}s: two 3 s tries, and no waiting for the 7 s delay"
  shown=$(page "")
  took=${shown#*"$TAB"}
  info "anyone: ${shown%%"$TAB"*} in ${took}s"
  if [ "${shown%%"$TAB"*}" != "v1" ] || ! between "$took" 0 2; then
    fail "others saw '${shown%%"$TAB"*}' in ${took}s, not v1 within 2 s"
  fi
}

check_fault_abort() {
  apply destination-rule-all.yaml
  apply virtual-service-all-v1.yaml
  apply virtual-service-reviews-test-v2.yaml
  # ratings fails with 500 at once for jason.
  apply virtual-service-ratings-test-abort.yaml
  settles_on jason "v2 ratings unavailable" 5
  local shown took
  shown=$(page jason)
  took=${shown#*"$TAB"}
  info "jason: ${shown%%"$TAB"*} in ${took}s"
  between "$took" 0 2 || fail "an abort is immediate, but jason's page took ${took}s"
  settles_on "" "v1" 5
}

check_timeout() {
  apply destination-rule-all.yaml
  # reviews v2 with a 0.5 s budget, ratings 2 s late: productpage's two tries cut at 0.5 s.
  apply virtual-service-reviews-v2-timeout.yaml
  local shown took
  shown=$(page_until "" "reviews unavailable")
  took=${shown#*"$TAB"}
  info "anyone: ${shown%%"$TAB"*} in ${took}s"
  [ "${shown%%"$TAB"*}" = "reviews unavailable" ] || fail "with a 0.5 s timeout over a 2 s delay: '${shown%%"$TAB"*}'"
  between "$took" 1.0 1.9 || fail "two tries of 0.5 s took ${took}s"
  apply virtual-service-all-v1.yaml
  settles_on "" "v1" 5
}

# meshctl's day-two commands against the cluster (the pilot and proxies through the API
# server's port-forward).
mc() { "$MESHCTL" "$@" --context "$CONTEXT"; }

check_version() {
  local out
  out=$(mc version)
  info "$(printf '%s' "$out" | tr '\n' ';')"
  printf '%s\n' "$out" | grep -q '^mesh-pilot version: [0-9]' || fail "meshctl version did not reach mesh-pilot"
  printf '%s\n' "$out" | grep -q '^data plane version: mesh-proxy/' || fail "meshctl version counted no mesh-proxy"
}

check_proxy_status() {
  local out deployment line
  out=$(mc proxy-status)
  for deployment in $DEPLOYMENTS; do
    line=$(printf '%s\n' "$out" | grep "^$deployment-[^ ]*\.$NAMESPACE " || true)
    [ -n "$line" ] || fail "proxy-status lists no $deployment pod: $out"
    [ "$(printf '%s' "$line" | grep -o SYNCED | wc -l)" -eq 4 ] || fail "$deployment is not SYNCED on CDS, LDS, EDS and RDS: $line"
  done
}

check_proxy_config() {
  local pod out
  pod=$(kn get pods -l app=productpage -o jsonpath='{.items[0].metadata.name}')
  out=$(mc proxy-config clusters "$pod.$NAMESPACE")
  printf '%s\n' "$out" | grep -q "^reviews\.$NAMESPACE\.svc\.cluster\.local  *9080  *v1  *outbound  *EDS" || fail "no reviews v1 subset cluster in productpage's proxy: $out"
  mc proxy-status "$pod.$NAMESPACE" | grep -q '^Clusters Match' || fail "productpage runs other clusters than the pilot serves it"
}

check_analyze() {
  # The Bookinfo config of the checks above is sound: no error (IST...) at the default threshold.
  mc analyze -k -n "$NAMESPACE" || fail "meshctl analyze -k found errors in $NAMESPACE"
}

PASSED=0
FAILED=0
FAILED_NAMES=""
# Runs a check in a subshell with errexit on (so any failing command fails it) and records it.
check() {
  local name=$1 start=$SECONDS rc
  shift
  printf '  %s\n' "$name"
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1))
    printf '  PASS  %s (%ds)\n' "$name" $((SECONDS - start))
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES="$FAILED_NAMES
  - $name"
    printf '  FAIL  %s (%ds)\n' "$name" $((SECONDS - start))
  fi
}

# ---------------------------------------------------------------------------------------------

step "checking for docker, kind and kubectl"
missing=""
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  die "missing:$missing (e2e/kind/README.md has the versions); this needs a machine with a Docker engine"
fi
docker info >/dev/null 2>&1 || die "docker is installed but no Docker engine answers (docker info failed)"
info "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), $(kind version), kubectl $(kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p')"
if [ "$TAG" = latest ]; then
  info "warning: with TAG=latest Kubernetes pulls images by default (imagePullPolicy Always) instead of using the loaded ones"
fi

step "creating the kind cluster $KIND_CLUSTER_NAME ($KIND_NODE_IMAGE, $KIND_CONFIG)"
REUSED=0
if kind get clusters 2>/dev/null | grep -x -- "$KIND_CLUSTER_NAME" >/dev/null; then
  info "it exists already: using it (namespace $NAMESPACE is made anew)"
  REUSED=1
else
  CLUSTER_MADE=1
  kind create cluster --name "$KIND_CLUSTER_NAME" --image "$KIND_NODE_IMAGE" --config "$KIND_CONFIG" --wait 180s
fi
CLUSTER_MADE=1
CLUSTER_UP=1
kc get nodes

if [ "$SKIP_IMAGES" = 1 ]; then
  step "using the images already built, $HUB/<image>:$TAG (SKIP_IMAGES=1)"
else
  step "building the images, $HUB/<image>:$TAG (make images)"
  "${MAKE:-make}" images HUB="$HUB" TAG="$TAG" IMAGES="$MESH_IMAGES"
fi

step "loading the images into the cluster (kind load docker-image)"
for image in $MESH_IMAGES; do
  docker image inspect "$HUB/$image:$TAG" >/dev/null 2>&1 ||
    die "$HUB/$image:$TAG is not in the local Docker: make images HUB=$HUB TAG=$TAG"
  kind load docker-image --name "$KIND_CLUSTER_NAME" "$HUB/$image:$TAG"
done

step "finding meshctl"
if [ -n "$MESHCTL" ]; then
  info "MESHCTL=$MESHCTL"
elif command -v cargo >/dev/null 2>&1; then
  # meshctl carries the charts it installs, so it is built from the same sources as the images;
  # cargo does nothing when target/release/meshctl is up to date.
  info "cargo build --release --locked -p meshctl --bin meshctl"
  cargo build --release --locked -p meshctl --bin meshctl
  MESHCTL=$ROOT/target/release/meshctl
elif [ -x target/release/meshctl ]; then
  MESHCTL=$ROOT/target/release/meshctl
  info "no cargo: using $MESHCTL as it is (built $(date -r "$MESHCTL" 2>/dev/null || echo 'at some time'))"
else
  die "no meshctl: install Rust 1.89 or newer (https://rustup.rs) so run.sh can build it, or set MESHCTL"
fi
"$MESHCTL" install --help >/dev/null 2>&1 || die "$MESHCTL has no install command: rebuild it"

step "installing the mesh: meshctl install --profile $PROFILE (global.hub=$HUB, global.tag=$TAG)"
"$MESHCTL" install --context "$CONTEXT" -y --profile "$PROFILE" --set "global.hub=$HUB" --set "global.tag=$TAG"
if [ "$REUSED" = 1 ] && [ "$SKIP_IMAGES" != 1 ]; then
  # Same tag, new images: the running control plane would keep the old ones.
  info "restarting the control plane of the reused cluster onto the images just loaded"
  kc -n mesh-system rollout restart deployment
fi
control_plane=$(kc -n mesh-system get deployments -o name)
[ -n "$control_plane" ] || die "meshctl install left no Deployment in mesh-system"
for deployment in $control_plane; do
  kc -n mesh-system rollout status "$deployment" --timeout="$ROLLOUT_TIMEOUT"
done
kc -n mesh-system get pods -o wide

step "namespace $NAMESPACE, labelled mesh-injection=enabled"
if kc get namespace "$NAMESPACE" >/dev/null 2>&1; then
  info "deleting the $NAMESPACE namespace of an earlier run"
  kc delete namespace "$NAMESPACE" --wait --timeout=180s
fi
kc create namespace "$NAMESPACE"
kc label namespace "$NAMESPACE" mesh-injection=enabled
info "waiting for mesh-ca's root certificate (ConfigMap mesh-ca-root-cert) in $NAMESPACE"
deadline=$((SECONDS + 120))
until kn get configmap mesh-ca-root-cert >/dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || die "mesh-ca wrote no ConfigMap mesh-ca-root-cert into $NAMESPACE within 120 s"
  sleep 2
done

step "deploying Bookinfo (e2e/kind/bookinfo.yaml, $HUB/bookinfo:$TAG) and the client pod (e2e/kind/client.yaml, $CLIENT_IMAGE)"
sed "s#image: ghcr.io/mesh/bookinfo:.*#image: $HUB/bookinfo:$TAG#" e2e/kind/bookinfo.yaml | kn apply -f -
sed "s#image: curlimages/curl:.*#image: $CLIENT_IMAGE#" e2e/kind/client.yaml | kn apply -f -

step "waiting for the rollouts ($ROLLOUT_TIMEOUT each)"
for deployment in $DEPLOYMENTS; do
  kn rollout status "deployment/$deployment" --timeout="$ROLLOUT_TIMEOUT"
done

step "checking that every pod has the mesh-proxy sidecar ($HUB/mesh-proxy:$TAG) and mesh-init ($HUB/mesh-init:$TAG)"
no_sidecar=0
pods=$(kn get pods --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[ -n "$pods" ] || die "no running pods in $NAMESPACE"
for pod in $pods; do
  containers=$(kn get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="mesh-proxy")].image}|{.spec.containers[?(@.name=="mesh-proxy")].image}|{.spec.initContainers[?(@.name=="mesh-init")].image}')
  native=${containers%%|*}
  rest=${containers#*|}
  classic=${rest%%|*}
  init=${rest#*|}
  if [ -n "$native" ]; then
    proxy=$native kind_of="native sidecar"
  else
    proxy=$classic kind_of="sidecar container"
  fi
  if [ -z "$proxy" ]; then
    info "$pod: no mesh-proxy (is the injection webhook running, and the namespace labelled?)"
    no_sidecar=1
  elif [ "$proxy" != "$HUB/mesh-proxy:$TAG" ] || [ "$init" != "$HUB/mesh-init:$TAG" ]; then
    info "$pod: mesh-proxy $proxy, mesh-init ${init:-none}: not the images loaded here (global.hub and global.tag did not reach the injector)"
    no_sidecar=1
  else
    info "$pod: mesh-proxy as a $kind_of, mesh-init"
  fi
done
[ "$no_sidecar" = 0 ] || die "not every pod has the mesh's sidecar"

step "waiting for Bookinfo to answer whole through the sidecars"
deadline=$((SECONDS + 120))
while :; do
  t=$(tally "" 6) || t="" # the client pod may not take an exec yet
  if only "$t" "v1" "v2 black stars" "v3 red stars"; then
    info "$(describe "$t")"
    break
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "Bookinfo never answered whole within 120 s: last $(describe "$t")"
  sleep 2
done

step "the routing checks of the local end-to-end suite (e2e/bookinfo/*.yaml, pages from the client pod)"
check "round robin over v1, v2 and v3 without routing rules (60 pages, each within 5 sd of 1/3)" check_round_robin
check "all to v1 (virtual-service-all-v1)" check_all_v1
check "jason to v2, everyone else to v1 (virtual-service-reviews-test-v2)" check_header_routing
check "50/50 between v1 and v3 ($REQUESTS pages, within 5 sd)" check_weights virtual-service-reviews-50-v3.yaml "v1" "v3 red stars" 1 2
check "80/20 between v1 and v2 ($REQUESTS pages, within 5 sd)" check_weights virtual-service-reviews-80-20.yaml "v1" "v2 black stars" 1 5
check "all to v3 (virtual-service-reviews-v3)" check_all_v3
check "fault: ratings 7 s late for jason, reviews unavailable after two 3 s tries" check_fault_delay
check "fault: ratings aborts with 500 for jason, at once" check_fault_abort
check "timeout: reviews 0.5 s over a 2 s ratings delay, two tries in about 1 s" check_timeout

step "meshctl's day-two commands against the cluster"
check "meshctl version: mesh-pilot and the proxies" check_version
check "meshctl proxy-status: every Bookinfo pod SYNCED" check_proxy_status
check "meshctl proxy-config clusters and proxy-status POD on productpage" check_proxy_config
check "meshctl analyze -k: no errors in the Bookinfo namespace" check_analyze

printf '\nkind-e2e: %d passed, %d failed\n' "$PASSED" "$FAILED"
if [ "$FAILED" -ne 0 ]; then
  printf 'failed:%s\n' "$FAILED_NAMES"
  exit 1
fi
