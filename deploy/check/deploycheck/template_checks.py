"""Small tests per template: what each rendered object must look like for the merged values of
a variant (derived from the values, never hard-coded per variant). One function per template;
`TEMPLATE_TESTS` lists them in the order they run."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import tomllib

from .common import NAMESPACE, R, Variant, containers_of, dig, labels_match, pod_specs, sessionkeeper_containers


def _db(mv: dict[str, Any]) -> bool:
    return bool(dig(mv, "database", "existingSecret"))


def _server(v: Variant) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    d = v.one("Deployment")
    pod = dig(d, "spec", "template", "spec")
    server = pod["containers"][0]
    return pod, server, [str(a) for a in server.get("args") or []]


def _min_pods(mv: dict[str, Any]) -> int:
    replicas = mv.get("replicaCount") if mv.get("replicaCount") is not None else (2 if _db(mv) else 1)
    return dig(mv, "autoscaling", "minReplicas") if dig(mv, "autoscaling", "enabled") else replicas


def test_deployment(v: Variant) -> None:
    mv, name = v.merged, v.name
    if not R.check(len(v.find("Deployment")) == 1, f"{name}: exactly one Deployment"):
        return
    spec = v.one("Deployment")["spec"]
    pod, server, args = _server(v)
    pod_labels = dig(spec, "template", "metadata", "labels")
    R.check(labels_match(dig(spec, "selector", "matchLabels"), pod_labels), f"{name}: Deployment selector matches its pod labels")
    if dig(mv, "autoscaling", "enabled"):
        R.check("replicas" not in spec, f"{name}: no Deployment replicas (the HPA owns them)")
    else:
        want = mv.get("replicaCount") if mv.get("replicaCount") is not None else (2 if _db(mv) else 1)
        R.check(spec.get("replicas") == want, f"{name}: {want} replica(s)", f"got {spec.get('replicas')}")
    if not _db(mv) and dig(mv, "persistence", "enabled"):
        R.check(dig(spec, "strategy", "type") == "Recreate", f"{name}: Recreate strategy (embedded store on a PVC: never two writers)")
    else:
        R.check(dig(spec, "strategy", "type") == "RollingUpdate" and dig(spec, "strategy", "rollingUpdate", "maxUnavailable") == 0,
                f"{name}: rolling update with maxUnavailable 0")
    tsc = pod.get("topologySpreadConstraints") or []
    R.check(any(t.get("topologyKey") == "kubernetes.io/hostname" and labels_match(dig(t, "labelSelector", "matchLabels"), pod_labels)
                for t in tsc), f"{name}: topology spread across nodes selects the pods")
    R.check("checksum/policy" in (dig(spec, "template", "metadata", "annotations") or {}),
            f"{name}: a policy checksum annotation rolls the pods on a policy change")
    host = dig(mv, "server", "listenHost")
    want_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    for flag, port in (("--listen", dig(mv, "server", "grpcPort")), ("--metrics-listen", dig(mv, "server", "metricsPort"))):
        R.check(f"{flag}={want_host}:{port}" in args, f"{name}: {flag}={want_host}:{port} (server.listenHost {host!r})",
                f"args {[a for a in args if a.startswith(flag + '=')]}")


def test_extras(v: Variant) -> None:
    """extraEnv, extraVolumes, extraVolumeMounts, extraInitContainers, extraContainers land where
    they are documented, after the chart's own entries."""
    mv, name = v.merged, v.name
    pod, server, _ = _server(v)
    env_names = [e["name"] for e in server.get("env") or []]
    for e in dig(mv, "server", "extraEnv") or []:
        R.check(e["name"] in env_names, f"{name}: server.extraEnv {e['name']} is in the server's env")
    vols = [x["name"] for x in pod.get("volumes") or []]
    jobs = v.find("Job")
    for x in mv.get("extraVolumes") or []:
        R.check(x["name"] in vols, f"{name}: extraVolumes {x['name']} is a volume of the pod")
        for job in jobs:
            R.check(x["name"] in [y["name"] for y in dig(job, "spec", "template", "spec", "volumes") or []],
                    f"{name}: extraVolumes {x['name']} is a volume of Job/{job['metadata']['name']} too")
    sk = sessionkeeper_containers(v)
    for m in mv.get("extraVolumeMounts") or []:
        for where, c, _spec in sk:
            R.check(any(y["name"] == m["name"] and y["mountPath"] == m["mountPath"] for y in c.get("volumeMounts") or []),
                    f"{name}: extraVolumeMounts {m['name']} at {m['mountPath']} in {where}")
    inits = [c["name"] for c in pod.get("initContainers") or []]
    for c in mv.get("extraInitContainers") or []:
        R.check(c["name"] in inits and (inits.index(c["name"]) > inits.index("migrate") if "migrate" in inits else True),
                f"{name}: extraInitContainers {c['name']} runs (after the migration init container, if any)", f"{inits}")
    containers = [c["name"] for c in pod.get("containers") or []]
    for c in mv.get("extraContainers") or []:
        R.check(c["name"] in containers[1:], f"{name}: extraContainers {c['name']} runs next to the server", f"{containers}")
    want = len(mv.get("extraObjects") or [])
    got = [o for o in v.objects if o.get("__source", "").endswith("extra-objects.yaml")]
    R.check(len(got) == want, f"{name}: {want} extraObjects rendered", f"got {len(got)}")
    for o in got:
        text = json.dumps(o)
        R.check("{{" not in text and dig(o, "metadata", "namespace") == NAMESPACE,
                f"{name}: extraObjects {o.get('kind')}/{dig(o, 'metadata', 'name')} went through tpl (no '{{{{' left)")


def test_configmap(v: Variant) -> None:
    mv, name = v.merged, v.name
    pod, server, args = _server(v)
    cms = [c for c in v.find("ConfigMap") if c.get("__source", "").endswith("templates/configmap.yaml")]
    if not R.check(len(cms) == 1, f"{name}: one ConfigMap for the policy"):
        return
    cm = cms[0]
    text = dig(cm, "data", "policy.toml", default="")
    try:
        parsed = tomllib.loads(text)
        pol = dig(mv, "policy")
        want = {"default_ttl": pol["defaultTtl"], "unknown_failure_limit": pol["unknownFailureLimit"],
                "sweep_interval": pol["sweepInterval"], "history_events": pol["historyEvents"],
                "transcript_grace": pol["transcriptGrace"]}
        if pol.get("tombstoneTtl"):
            want["tombstone_ttl"] = pol["tombstoneTtl"]
        if pol.get("agents"):
            want["agents"] = {a: {"ttl": p["ttl"]} for a, p in pol["agents"].items()}
        R.check(parsed == {"policy": want}, f"{name}: policy.toml is valid TOML and equals values.policy", f"{parsed} != {want}")
    except tomllib.TOMLDecodeError as e:
        R.fail(f"{name}: policy.toml is not TOML: {e}")
    vol = next((x for x in pod.get("volumes") or [] if dig(x, "configMap", "name") == cm["metadata"]["name"]), None)
    mount = next((m for m in server.get("volumeMounts") or [] if vol and m["name"] == vol["name"]), None)
    config_arg = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
    R.check(bool(mount) and config_arg == mount["mountPath"].rstrip("/") + "/policy.toml",
            f"{name}: --config={config_arg} is the mounted ConfigMap's policy.toml")


def test_migrations(v: Variant) -> None:
    mv, name = v.merged, v.name
    db = _db(mv)
    mode = dig(mv, "migrations", "mode") if db else None
    pod, _, args = _server(v)
    jobs = v.find("Job")
    inits = [c for c in pod.get("initContainers") or [] if (c.get("args") or [])[:1] == ["migrate"]]
    for where, c, _spec in sessionkeeper_containers(v):
        has_db_env = any(e["name"] == "DATABASE_URL" for e in c.get("env") or [])
        R.check(has_db_env == db, f"{name}: {where} {'gets' if db else 'has no'} DATABASE_URL")
    if not db:
        R.check(not jobs and not inits, f"{name}: no migration Job or init container on the embedded store")
        R.check(any(a.startswith("--data-dir=") for a in args), f"{name}: --data-dir set for the embedded store")
        data = next((x for x in pod.get("volumes") or [] if x["name"] == "data"), {})
        if dig(mv, "persistence", "enabled"):
            claim = dig(data, "persistentVolumeClaim", "claimName")
            pvcs = [p["metadata"]["name"] for p in v.find("PersistentVolumeClaim")]
            R.check(bool(claim) and (claim == dig(mv, "persistence", "existingClaim") or claim in pvcs),
                    f"{name}: data on PersistentVolumeClaim {claim}")
        else:
            R.check("emptyDir" in data, f"{name}: data on an emptyDir")
        return
    R.check(not any(a.startswith("--data-dir") for a in args), f"{name}: no data dir with Postgres")
    mos = next((a.split("=", 1)[1] for a in args if a.startswith("--migrate-on-start")), "true")
    if mode == "hook":
        if R.check(len(jobs) == 1, f"{name}: one migration Job"):
            hooks = set((dig(jobs[0], "metadata", "annotations", "helm.sh/hook") or "").split(","))
            R.check({"pre-install", "pre-upgrade"} <= hooks, f"{name}: the Job is a pre-install,pre-upgrade hook ({sorted(hooks)})")
            R.check((dig(jobs[0], "spec", "template", "spec", "containers", 0, "args") or [])[:1] == ["migrate"],
                    f"{name}: the Job runs `sessionkeeper migrate`")
        R.check(not inits, f"{name}: no migration init container with the hook")
        R.check(mos == "false", f"{name}: servers do not migrate at startup (the hook did)")
    elif mode == "initContainer":
        R.check(not jobs, f"{name}: no hook Job in initContainer mode")
        R.check(len(inits) == 1 and (pod.get("initContainers") or [])[0] is inits[0],
                f"{name}: the first init container runs `sessionkeeper migrate` before the server")
        R.check(mos == "false", f"{name}: servers do not migrate at startup (the init container did)")
    else:
        R.check(not jobs and not inits, f"{name}: no Job or init container in startup mode")
        R.check(mos == "true", f"{name}: servers migrate at startup under the database lock")


def test_pdb_and_hpa(v: Variant) -> None:
    mv, name = v.merged, v.name
    pod_labels = dig(v.one("Deployment"), "spec", "template", "metadata", "labels")
    pdbs, min_pods = v.find("PodDisruptionBudget"), _min_pods(mv)
    if min_pods > 1 and dig(mv, "podDisruptionBudget", "enabled"):
        R.check(len(pdbs) == 1 and labels_match(dig(pdbs[0], "spec", "selector", "matchLabels"), pod_labels),
                f"{name}: a PodDisruptionBudget selects the pods (at least {min_pods} pods)")
        if len(pdbs) == 1:
            want_min = dig(mv, "podDisruptionBudget", "minAvailable")
            got = {k: x for k, x in pdbs[0]["spec"].items() if k in ("minAvailable", "maxUnavailable")}
            want = ({"minAvailable": want_min} if want_min is not None
                    else {"maxUnavailable": dig(mv, "podDisruptionBudget", "maxUnavailable")})
            R.check(got == want, f"{name}: the PodDisruptionBudget allows {want}", f"got {got}")
    else:
        R.check(not pdbs, f"{name}: no PodDisruptionBudget for {min_pods} pod(s)")
    hpas = v.find("HorizontalPodAutoscaler")
    if dig(mv, "autoscaling", "enabled"):
        R.check(len(hpas) == 1 and dig(hpas[0], "spec", "scaleTargetRef", "name") == v.one("Deployment")["metadata"]["name"]
                and dig(hpas[0], "spec", "scaleTargetRef", "kind") == "Deployment",
                f"{name}: the HPA scales the Deployment ({dig(mv, 'autoscaling', 'minReplicas')}..{dig(mv, 'autoscaling', 'maxReplicas')})")
    else:
        R.check(not hpas, f"{name}: no HPA")


def test_servicemonitor(v: Variant) -> None:
    mv, name = v.merged, v.name
    sms = v.find("ServiceMonitor")
    if not dig(mv, "metrics", "serviceMonitor", "enabled"):
        R.check(not sms, f"{name}: no ServiceMonitor")
        return
    svc = next((s for s in v.find("Service") if dig(s, "spec", "clusterIP") != "None"), None)
    if R.check(len(sms) == 1 and svc is not None, f"{name}: one ServiceMonitor"):
        sm = sms[0]
        R.check(labels_match(dig(sm, "spec", "selector", "matchLabels"), dig(svc, "metadata", "labels")),
                f"{name}: the ServiceMonitor selects Service/{svc['metadata']['name']}")
        eps = dig(sm, "spec", "endpoints", default=[])
        sports = {p.get("name") for p in dig(svc, "spec", "ports", default=[])}
        R.check(bool(eps) and all(e.get("port") in sports and e.get("path") == "/metrics" for e in eps),
                f"{name}: the ServiceMonitor scrapes /metrics on a named Service port")


def test_prometheusrule(v: Variant) -> None:
    mv, name = v.merged, v.name
    rules = v.find("PrometheusRule")
    if not dig(mv, "metrics", "prometheusRule", "enabled"):
        R.check(not rules, f"{name}: no PrometheusRule")
        return
    if not R.check(len(rules) == 1, f"{name}: one PrometheusRule"):
        return
    labels = dig(rules[0], "metadata", "labels") or {}
    extra = dig(mv, "metrics", "prometheusRule", "labels") or {}
    R.check(all(labels.get(k) == x for k, x in extra.items()), f"{name}: the PrometheusRule carries metrics.prometheusRule.labels {extra}")
    alerts = [r.get("alert") for g in dig(rules[0], "spec", "groups", default=[]) for r in g.get("rules") or []]
    want = {"SessionkeeperTargetDown", "SessionkeeperReadinessFlapping", "SessionkeeperErrorRate",
            "SessionkeeperHighLatency", "SessionkeeperPoolSaturated", "SessionkeeperResumeFailures"}
    R.check(want <= set(alerts), f"{name}: the PrometheusRule has the {len(want)} alerts ({', '.join(sorted(want))})",
            f"missing {sorted(want - set(alerts))}")


def test_dashboard(v: Variant) -> None:
    mv, name = v.merged, v.name
    cms = [c for c in v.find("ConfigMap") if c.get("__source", "").endswith("dashboard.yaml")]
    if not dig(mv, "metrics", "dashboard", "enabled"):
        R.check(not cms, f"{name}: no dashboard ConfigMap")
        return
    if not R.check(len(cms) == 1, f"{name}: one dashboard ConfigMap"):
        return
    cm = cms[0]
    R.check(dig(cm, "metadata", "labels", "grafana_dashboard") == "1",
            f"{name}: the dashboard ConfigMap has the sidecar label grafana_dashboard: \"1\"")
    for key, text in (cm.get("data") or {}).items():
        try:
            dash = json.loads(text)
            R.check(key.endswith(".json") and bool(dash.get("panels")), f"{name}: {key} is a dashboard JSON with {len(dash['panels'])} panels")
        except json.JSONDecodeError as e:
            R.fail(f"{name}: {key} is not JSON: {e}")


def test_networkpolicy(v: Variant) -> None:
    mv, name = v.merged, v.name
    nps = v.find("NetworkPolicy")
    if not dig(mv, "networkPolicy", "enabled"):
        R.check(not nps, f"{name}: no NetworkPolicy")
        return
    _, server, _ = _server(v)
    pod_labels = dig(v.one("Deployment"), "spec", "template", "metadata", "labels")
    if R.check(len(nps) == 1 and labels_match(dig(nps[0], "spec", "podSelector", "matchLabels"), pod_labels),
               f"{name}: a NetworkPolicy selects the pods"):
        cports = {p["name"] for p in server.get("ports") or []}
        named = [p.get("port") for rule in dig(nps[0], "spec", "ingress", default=[]) for p in rule.get("ports") or []]
        R.check(all((p in cports) if isinstance(p, str) else True for p in named) and {"grpc", "metrics"} <= set(named),
                f"{name}: the NetworkPolicy admits the grpc and metrics container ports ({named})")
        if dig(mv, "networkPolicy", "egress", "enabled"):
            eports = {p.get("port") for rule in dig(nps[0], "spec", "egress", default=[]) for p in rule.get("ports") or []}
            want = {53} | ({dig(mv, "networkPolicy", "egress", "databasePort")} if _db(mv) else set())
            R.check(want <= eports, f"{name}: egress allows DNS{' and Postgres' if _db(mv) else ''} ({sorted(map(str, eports))})")


def test_tls_tokens_otel(v: Variant) -> None:
    mv, name = v.merged, v.name
    pod, server, args = _server(v)
    tls = dig(mv, "tls", "enabled")
    has_tls_args = any(a.startswith("--tls-cert=") for a in args) and any(a.startswith("--tls-key=") for a in args)
    R.check(has_tls_args == bool(tls), f"{name}: TLS {'on, from Secret ' + str(dig(mv, 'tls', 'existingSecret')) if tls else 'off'}")
    if tls:
        vol = next((x for x in pod.get("volumes") or [] if dig(x, "secret", "secretName") == dig(mv, "tls", "existingSecret")), None)
        R.check(vol is not None, f"{name}: the TLS Secret is mounted")
        R.check(("--tls-client-ca" in " ".join(args)) == bool(dig(mv, "tls", "clientCA", "enabled")),
                f"{name}: client CA (mutual TLS) {'on' if dig(mv, 'tls', 'clientCA', 'enabled') else 'off'}")
    tokens = dig(mv, "auth", "existingSecret")
    envs = {e["name"]: e for e in server.get("env") or []}
    if tokens:
        path = dig(envs, "SESSIONKEEPER_AUTH_TOKENS", "value")
        vol = next((x for x in pod.get("volumes") or [] if dig(x, "secret", "secretName") == tokens), None)
        mount = next((m for m in server.get("volumeMounts") or [] if vol and m["name"] == vol["name"]), None)
        keys = [i["path"] for i in dig(vol, "secret", "items", default=[])] if vol else []
        R.check(bool(path and mount) and path in [mount["mountPath"].rstrip("/") + "/" + k for k in keys],
                f"{name}: SESSIONKEEPER_AUTH_TOKENS={path} is the mounted Secret {tokens}'s {dig(mv, 'auth', 'key')}")
    else:
        R.check("SESSIONKEEPER_AUTH_TOKENS" not in envs, f"{name}: no tokens file")
    endpoint = dig(mv, "otel", "endpoint")
    R.check((dig(envs, "OTEL_EXPORTER_OTLP_ENDPOINT", "value") or "") == (endpoint or ""),
            f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT {'= ' + endpoint if endpoint else 'unset'} (otel.endpoint)")


def test_notes(v: Variant) -> None:
    mv, name = v.merged, v.name
    svc_name = next((s["metadata"]["name"] for s in v.find("Service") if dig(s, "spec", "clusterIP") != "None"), "?")
    R.check(re.search(r"grpcurl .*sessionkeeper\.v1\.SessionService/Get", v.notes, re.S) is not None
            and f"svc/{svc_name}" in v.notes, f"{name}: NOTES.txt has the port-forward and grpcurl lines")
    if not _db(mv):
        R.check("NO DATABASE CONFIGURED" in v.notes, f"{name}: NOTES.txt warns that no database is configured")
    default_image = dig(mv, "image", "repository") == "sessionkeeper" and not dig(mv, "image", "digest")
    says = "build the image" in v.notes and "docker push" in v.notes
    R.check(says == default_image, f"{name}: NOTES.txt {'tells' if default_image else 'does not tell'} the user to build and "
            f"push the image (image.repository {dig(mv, 'image', 'repository')!r})")


def test_security(v: Variant) -> None:
    """Every container of every pod, the user's extra ones included."""
    image = dig(v.one("Deployment"), "spec", "template", "spec", "containers", 0, "image")
    for owner, spec in pod_specs(v):
        psc = spec.get("securityContext") or {}
        R.check(spec.get("automountServiceAccountToken") is False, f"{v.name}: {owner} mounts no API token")
        R.check(spec.get("enableServiceLinks") is False,
                f"{v.name}: {owner} has enableServiceLinks false (a Service named sessionkeeper would inject "
                "SESSIONKEEPER_PORT, SESSIONKEEPER_SERVICE_HOST, ... into the binary's variable prefix)")
        vols = {x["name"]: x for x in spec.get("volumes") or []}
        for cname, c in containers_of(spec):
            where = f"{v.name}: {owner} {cname}"
            sc = c.get("securityContext") or {}
            merged = {**psc, **sc}
            problems = [what for what, bad in (
                ("runAsNonRoot", merged.get("runAsNonRoot") is not True), ("runAsUser 0", merged.get("runAsUser") == 0),
                ("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is not True),
                ("allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is not False),
                ("privileged", bool(sc.get("privileged"))),
                ("capabilities drop ALL, add none", "ALL" not in (dig(sc, "capabilities", "drop") or []) or bool(dig(sc, "capabilities", "add"))),
                ("seccompProfile RuntimeDefault", dig(merged, "seccompProfile", "type") != "RuntimeDefault")) if bad]
            R.check(not problems, f"{where}: runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, "
                    "capabilities drop ALL, seccomp RuntimeDefault", "missing: " + ", ".join(problems))
            res = c.get("resources") or {}
            missing = [f"{k}.{r}" for k in ("requests", "limits") for r in ("cpu", "memory") if r not in (res.get(k) or {})]
            R.check(not missing, f"{where}: cpu and memory requests and limits", f"missing {missing}")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols:
                    R.fail(f"{where}: volumeMount {m['name']} has no volume")
            if c.get("image") == image:
                tmp = next((m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/tmp"), None)
                R.check(bool(tmp) and "emptyDir" in vols.get(tmp["name"], {}) and not tmp.get("readOnly"),
                        f"{where}: read-only root with a writable /tmp emptyDir")


TEMPLATE_TESTS: list[tuple[str, Callable[[Variant], None]]] = [
    ("deployment.yaml", test_deployment), ("deployment.yaml extras, extra-objects.yaml", test_extras),
    ("configmap.yaml", test_configmap), ("migrate-job.yaml, pvc.yaml", test_migrations),
    ("pdb.yaml, hpa.yaml", test_pdb_and_hpa), ("servicemonitor.yaml", test_servicemonitor),
    ("prometheusrule.yaml", test_prometheusrule), ("dashboard.yaml", test_dashboard),
    ("networkpolicy.yaml", test_networkpolicy), ("TLS, tokens, OTel", test_tls_tokens_otel),
    ("NOTES.txt", test_notes), ("pod security and resources", test_security),
]
