#!/usr/bin/env python3
"""Checks that docker/k8s/ stays valid and keeps the invariants docs/deploy.md relies on.

Run: .venv/bin/python tests/deploy/validate_manifests.py  (CTest: deploy.manifests)

1. Every YAML file parses (PyYAML).
2. The invariants: flintd's args are flags flintd knows (read from
   server/flintd_options.cpp), the grace period exceeds preStop sleep + --drain-timeout,
   every probe is grpc on the gRPC port, liveness outlasts flintd's 60 s stall window
   and the grace period, non-root uid 10001 on a read-only root, one GPU, the headless
   Service has clusterIP None, Services/PDB select the pods, the HPA targets the
   Deployment on flint_queue_depth and the adapter sample serves it, --metrics-port is the
   pod's "metrics" port and its prometheus.io annotations and the PodMonitor sample scrape it, Envoy's clusters
   use HTTP/2 (gRPC) and gRPC/HTTP health checks on the headless Service with
   least_request, its routes have no timeout, and kustomization.yaml names files that exist.
3. Every Kubernetes object against the 1.30 OpenAPI schemas, strictly (unknown fields
   are errors), with kubernetes-validate.
4. envoy.yaml parsed strictly into Envoy's v3 Bootstrap proto (xds-protos), typed
   configs included: a misspelt or misplaced field is an error.
(3) and (4) say SKIP when their package is not installed; tests/e2e/requirements.txt pins both.
Exit status 0 when everything holds, 1 otherwise, with one line per failure.
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
KUBERNETES_VERSION = "1.30.0"
STALL_TIMEOUT_S = 60  # server/daemon.cpp kStallTimeout
# Files that are not Kubernetes objects.
NOT_OBJECTS = {"envoy.yaml", "kustomization.yaml", "prometheus-adapter-values.yaml"}
# Objects of CRDs (the Prometheus Operator's): no schema in kubernetes-validate; checked below.
CRD_OBJECTS = {"flintd-podmonitor.yaml"}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def load_all():
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        try:
            docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            check(False, f"{path.name}: not valid YAML: {e}")
    return docs


def objects(docs):
    for name, items in docs.items():
        if name in NOT_OBJECTS or name in CRD_OBJECTS:
            continue
        for obj in items:
            yield name, obj


def find(docs, kind, name):
    for _, obj in objects(docs):
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    check(False, f"no {kind} named {name} in docker/k8s")
    return None


def known_flintd_flags():
    source = (ROOT / "server" / "flintd_options.cpp").read_text()
    return set(re.findall(r'flag == "(-[^"]+)"', source))


def parse_args(args):
    """flintd's args as {flag: value}; a flag without a value maps to None."""
    flags, i = {}, 0
    while i < len(args):
        flag = str(args[i])
        if "=" in flag and flag.startswith("--"):
            key, value = flag.split("=", 1)
            flags[key] = value
        elif i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
            flags[flag] = str(args[i + 1])
            i += 1
        else:
            flags[flag] = None
        i += 1
    return flags


def prestop_seconds(container):
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    match = re.search(r"sleep\s+(\d+)", " ".join(map(str, command)))
    return int(match.group(1)) if match else 0


def named_port(container, name):
    for p in container.get("ports", []):
        if p.get("name") == name:
            return p["containerPort"]
    check(False, f"container {container.get('name')}: no port named {name}")
    return None


def check_flintd(docs, namespace):
    deployment = find(docs, "Deployment", "flintd")
    if not deployment:
        return
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in deployment["spec"]["selector"]["matchLabels"].items()),
          "flintd Deployment: selector does not match the pod labels")
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    if not check("flintd" in containers, "flintd Deployment: no container named flintd"):
        return
    c = containers["flintd"]
    flags = parse_args(c.get("args", []))
    unknown = set(flags) - known_flintd_flags()
    check(not unknown, f"flintd args: flags flintd does not know (it would exit): {sorted(unknown)}")
    check(flags.get("--host") == "0.0.0.0", "flintd args: --host must be 0.0.0.0 in a pod")
    grpc_port, http_port = named_port(c, "grpc"), named_port(c, "http")
    check(flags.get("--port") == str(grpc_port), f"flintd args: --port {flags.get('--port')} is not the grpc port {grpc_port}")
    check(flags.get("--http-port") == str(http_port),
          f"flintd args: --http-port {flags.get('--http-port')} is not the http port {http_port}")
    metrics_port = named_port(c, "metrics")
    check(flags.get("--metrics-port") == str(metrics_port),
          f"flintd args: --metrics-port {flags.get('--metrics-port')} is not the metrics port {metrics_port}")
    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(metrics_port)
          and annotations.get("prometheus.io/path", "/metrics") == "/metrics",
          f"flintd pod: prometheus.io annotations {annotations} do not scrape /metrics on port {metrics_port}")
    monitor = docs.get("flintd-podmonitor.yaml", [None])[0]
    if check(monitor is not None and monitor.get("kind") == "PodMonitor", "flintd-podmonitor.yaml: no PodMonitor"):
        sel = monitor["spec"]["selector"]["matchLabels"]
        check(sel and all(labels.get(k) == v for k, v in sel.items()), "PodMonitor flintd: selector does not match the pods")
        endpoints = monitor["spec"].get("podMetricsEndpoints", [])
        check(any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in endpoints),
              "PodMonitor flintd: no endpoint on the port named metrics at /metrics")
        check(monitor["metadata"].get("namespace") == namespace,
              f"PodMonitor flintd: namespace {monitor['metadata'].get('namespace')} is not {namespace}")
    drain = float(flags.get("--drain-timeout", 30))  # flintd's default
    sleep = prestop_seconds(c)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(sleep > 0, "flintd: no preStop sleep (endpoints need time to drop the pod before SIGTERM)")
    check(grace > sleep + drain,
          f"flintd: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} s + --drain-timeout {drain:g} s")
    model = flags.get("--model")
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    check(model is not None and any(model.startswith(p.rstrip("/") + "/") for p in mounts),
          f"flintd args: --model {model} is not under a mounted volume")

    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not check(probe is not None, f"flintd: no {kind}"):
            continue
        grpc = probe.get("grpc")
        if check(grpc is not None, f"flintd {kind}: not a grpc probe"):
            check(grpc.get("port") == grpc_port, f"flintd {kind}: port {grpc.get('port')} is not the gRPC port {grpc_port}")
            check(grpc.get("service", "") == "", f"flintd {kind}: service must be \"\" (the server as a whole)")
    live = c.get("livenessProbe", {})
    window = live.get("periodSeconds", 10) * live.get("failureThreshold", 3)
    check(window > STALL_TIMEOUT_S, f"flintd livenessProbe: {window} s to a restart is within flintd's own {STALL_TIMEOUT_S} s stall window")
    check(window > grace, f"flintd livenessProbe: {window} s to a restart could cut a {grace} s drain short")
    start = c.get("startupProbe", {})
    check(start.get("periodSeconds", 10) * start.get("failureThreshold", 3) >= 120,
          "flintd startupProbe: under 2 minutes for the model to load")

    pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
    check(pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser") == 10001,
          "flintd pod: must run as non-root uid 10001")
    check(sc.get("readOnlyRootFilesystem") is True, "flintd container: readOnlyRootFilesystem must be true")
    check(sc.get("allowPrivilegeEscalation") is False, "flintd container: allowPrivilegeEscalation must be false")
    resources = c.get("resources", {})
    check(str(resources.get("limits", {}).get("nvidia.com/gpu")) == "1", "flintd: limits must ask for nvidia.com/gpu: 1")
    check("memory" in resources.get("requests", {}) and "memory" in resources.get("limits", {}),
          "flintd: memory request and limit")

    headless = find(docs, "Service", "flintd-headless")
    if headless:
        check(headless["spec"].get("clusterIP") == "None", "flintd-headless: clusterIP must be None")
        check(not headless["spec"].get("publishNotReadyAddresses", False),
              "flintd-headless: publishNotReadyAddresses would send traffic to draining pods")
        ports = {p["port"]: p for p in headless["spec"]["ports"]}
        check(grpc_port in ports, f"flintd-headless: no port {grpc_port}")
    for service in (headless, find(docs, "Service", "flintd")):
        if service:
            sel = service["spec"].get("selector", {})
            check(sel and all(labels.get(k) == v for k, v in sel.items()),
                  f"Service {service['metadata']['name']}: selector does not match the flintd pods")
    http_service = find(docs, "Service", "flintd")
    if http_service:
        check(any(p.get("targetPort") in ("http", http_port) for p in http_service["spec"]["ports"]),
              "Service flintd: does not reach the HTTP port")

    pdb = find(docs, "PodDisruptionBudget", "flintd")
    if pdb:
        sel = pdb["spec"]["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in sel.items()), "PodDisruptionBudget flintd: selector does not match the pods")

    hpa = find(docs, "HorizontalPodAutoscaler", "flintd")
    if hpa:
        check(hpa["apiVersion"] == "autoscaling/v2", "HPA: must be autoscaling/v2")
        target = hpa["spec"]["scaleTargetRef"]
        check((target.get("apiVersion"), target.get("kind"), target.get("name")) == ("apps/v1", "Deployment", "flintd"),
              f"HPA: scaleTargetRef {target} is not the flintd Deployment")
        names = [m.get("pods", m.get("external", {})).get("metric", {}).get("name") for m in hpa["spec"]["metrics"]]
        check("flint_queue_depth" in names, f"HPA: no flint_queue_depth metric (has {names})")
        adapter = docs.get("prometheus-adapter-values.yaml", [{}])[0]
        served = [r.get("name", {}).get("as") for r in adapter.get("rules", {}).get("custom", [])]
        check("flint_queue_depth" in served, "prometheus-adapter-values.yaml: no rule serving flint_queue_depth")


def check_envoy(docs, namespace):
    config = docs.get("envoy.yaml", [None])[0]
    if not check(config is not None, "envoy.yaml: missing"):
        return
    headless_host = f"flintd-headless.{namespace}.svc.cluster.local"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    expected = {"flintd_grpc": (50051, "grpc_health_check"), "flintd_http": (8000, "http_health_check")}
    for name, (port, health_kind) in expected.items():
        cluster = clusters.get(name)
        if not check(cluster is not None, f"envoy.yaml: no cluster {name}"):
            continue
        check(cluster.get("type") in ("STRICT_DNS", "EDS"), f"envoy {name}: type must be STRICT_DNS (headless Service) or EDS")
        check(cluster.get("lb_policy") == "LEAST_REQUEST", f"envoy {name}: lb_policy must be LEAST_REQUEST")
        addresses = [e["endpoint"]["address"]["socket_address"]
                     for group in cluster.get("load_assignment", {}).get("endpoints", [])
                     for e in group["lb_endpoints"]]
        check(addresses and all(a["address"] == headless_host and a["port_value"] == port for a in addresses),
              f"envoy {name}: endpoints must be {headless_host}:{port}, not {addresses}")
        checks = cluster.get("health_checks", [])
        check(any(health_kind in h for h in checks), f"envoy {name}: no {health_kind}")
        if health_kind == "grpc_health_check":
            options = cluster.get("typed_extension_protocol_options", {}).get(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
            check("http2_protocol_options" in options.get("explicit_http_config", {}),
                  f"envoy {name}: the upstream must be HTTP/2 (explicit_http_config.http2_protocol_options)")
            check(all(h[health_kind].get("service_name", "") == "" for h in checks if health_kind in h),
                  f"envoy {name}: the gRPC health check must ask for service \"\"")
    routed = set()
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f.get("typed_config", {})
                for vhost in hcm.get("route_config", {}).get("virtual_hosts", []):
                    for route in vhost["routes"]:
                        r = route.get("route", {})
                        routed.add(r.get("cluster"))
                        check(r.get("timeout") == "0s",
                              f"envoy listener {listener['name']}: route to {r.get('cluster')} needs timeout: 0s (streams)")
    check(set(expected) <= routed, f"envoy.yaml: clusters not routed to: {sorted(set(expected) - routed)}")

    deployment = find(docs, "Deployment", "flintd-envoy")
    if deployment:
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        args = container.get("args", [])
        config_path = args[args.index("-c") + 1] if "-c" in args else ""
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        ok = False
        for m in container.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            if v.get("configMap", {}).get("name") == "flintd-envoy" and config_path == m["mountPath"].rstrip("/") + "/envoy.yaml":
                ok = True
        check(ok, f"flintd-envoy: -c {config_path!r} is not envoy.yaml from the ConfigMap flintd-envoy")


def check_kustomization(docs):
    k = docs.get("kustomization.yaml", [None])[0]
    if not check(k is not None, "kustomization.yaml: missing"):
        return "flint"
    for name in k.get("resources", []):
        check((K8S / name).is_file(), f"kustomization.yaml: resource {name} does not exist")
    for gen in k.get("configMapGenerator", []):
        for name in gen.get("files", []):
            check((K8S / name.split("=")[-1]).is_file(), f"kustomization.yaml: configMapGenerator file {name} does not exist")
    check(any(g.get("name") == "flintd-envoy" for g in k.get("configMapGenerator", [])),
          "kustomization.yaml: no ConfigMap flintd-envoy for envoy.yaml")
    namespaces = [obj["metadata"]["name"] for _, obj in objects(docs) if obj.get("kind") == "Namespace"]
    check(namespaces == [k.get("namespace")], f"kustomization.yaml: namespace {k.get('namespace')} vs Namespace objects {namespaces}")
    return k.get("namespace", "default")


def validate_schemas(docs):
    try:
        import kubernetes_validate
    except ImportError:
        print("SKIP: kubernetes-validate is not installed: no schema check")
        return
    count = 0
    for name, obj in objects(docs):
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            count += 1
        except kubernetes_validate.ValidationError as e:
            check(False, f"{name}: {obj['kind']}/{obj['metadata']['name']} fails the {KUBERNETES_VERSION} schema: "
                         f"{'.'.join(map(str, e.path))}: {e.message}")
        except Exception as e:  # an unknown kind or version
            check(False, f"{name}: {obj.get('kind')}: {e}")
    print(f"kubernetes-validate: {count} objects valid against Kubernetes {KUBERNETES_VERSION} (strict)")


def type_urls(node):
    """Every "@type" in a parsed YAML tree."""
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def validate_envoy_proto(docs):
    try:
        import importlib
        import pkgutil
        from google.protobuf import json_format
        from envoy.config.bootstrap.v3 import bootstrap_pb2
    except ImportError:
        print("SKIP: xds-protos is not installed: envoy.yaml not checked against Envoy's protos")
        return
    config = docs["envoy.yaml"][0]
    # Register the message types the typed_configs name (for Any): import every module of
    # each one's proto package, e.g. envoy.extensions.filters.http.router.v3.
    for url in sorted(set(type_urls(config))):
        package = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        try:
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(module.__path__):
                if info.name.endswith("_pb2"):
                    importlib.import_module(f"{package}.{info.name}")
        except ImportError as e:
            check(False, f"envoy.yaml: no proto package for {url}: {e}")
    try:
        json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
        print("envoy.yaml: a valid envoy.config.bootstrap.v3.Bootstrap (fields and types; not Envoy's own --mode validate)")
    except json_format.ParseError as e:
        check(False, f"envoy.yaml: not a valid Envoy v3 Bootstrap: {e}")


def main():
    docs = load_all()
    namespace = check_kustomization(docs)
    check_flintd(docs, namespace)
    check_envoy(docs, namespace)
    validate_schemas(docs)
    validate_envoy_proto(docs)
    for f in failures:
        print("FAIL:", f)
    print(f"{len(docs)} files in docker/k8s: {'OK' if not failures else f'{len(failures)} failures'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
