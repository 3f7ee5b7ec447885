"""What every part of the deployment check shares: paths, the report (one line per check), the
Helm engine, the values variants and their renders. No checks live here."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "sessionkeeper"
CI_VALUES = CHART / "ci"
DEPLOY = ROOT / "deploy"
CHECK_DIR = DEPLOY / "check"
RELEASE = "sessionkeeper"
NAMESPACE = "sessionkeeper"

# Kubernetes versions every rendered object is validated against (strict schemas): the oldest the
# chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate 1.37.0 ships.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
LINT_KUBE_VERSION = "v1.29.0"

LIVENESS_SERVICE = ""
READINESS_SERVICE = "sessionkeeper.v1.SessionService"


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"\n== {title}", flush=True)

    def ok(self, msg: str) -> None:
        self.passed += 1
        print(f"  ok    {msg}", flush=True)

    def fail(self, msg: str) -> None:
        self.failed.append(f"[{self.section}] {msg}")
        print(f"  FAIL  {msg}", flush=True)

    def note(self, msg: str) -> None:
        print(f"  note  {msg}", flush=True)

    def check(self, cond: bool, msg: str, detail: str = "") -> bool:
        if cond:
            self.ok(msg)
        else:
            self.fail(f"{msg}{': ' + detail if detail else ''}")
        return bool(cond)


R = Report()


def dig(obj: Any, *path: Any, default: Any = None) -> Any:
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def labels_match(selector: dict[str, str] | None, labels: dict[str, str] | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def clean_env() -> dict[str, str]:
    """The environment without anything the binary reads (so it sees only what a check passes)."""
    return {k: v for k, v in os.environ.items()
            if not (k.startswith("SESSIONKEEPER_") or k.startswith("OTEL_") or k in ("DATABASE_URL", "RUST_LOG"))}


def run_binary(binary: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "",
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], input=stdin, capture_output=True, text=True,
                          env={**clean_env(), **(env or {})}, timeout=timeout)


def helm():
    import helm_python  # noqa: PLC0415  (only inside the venv)
    return helm_python


@dataclass
class Variant:
    """One values file (or the defaults) and what the chart renders from it."""
    name: str
    values: dict[str, Any]
    merged: dict[str, Any] = field(default_factory=dict)
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""

    def find(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any] | None:
        found = self.find(kind)
        return found[0] if len(found) == 1 else None


def load_variants() -> list[Variant]:
    """The defaults, deploy/values-production.yaml and helm/sessionkeeper/ci/*-values.yaml."""
    variants = [Variant("default values", {})]
    for path in [DEPLOY / "values-production.yaml", *sorted(CI_VALUES.glob("*-values.yaml"))]:
        variants.append(Variant(rel(path), yaml.safe_load(path.read_text()) or {}))
    return variants


def render(chart: Any, variant: Variant) -> None:
    """helm template with the Helm SDK: release RELEASE in NAMESPACE, as an install."""
    variant.merged = chart.merge_values(variant.values)
    rendered = chart.render(values=variant.values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            variant.notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                doc["__source"] = path
                variant.objects.append(doc)


def strip_source(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__source"}


def write_rendered(variant: Variant, out_dir: Path) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", variant.name)
    path = out_dir / f"{slug}.yaml"
    docs = [yaml.safe_dump(strip_source(o), sort_keys=False) for o in variant.objects]
    path.write_text("---\n".join(docs) + ("\n# NOTES.txt\n" + "\n".join("# " + line for line in variant.notes.splitlines())))
    return path


def pod_specs(variant: Variant) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{kind}/{obj['metadata']['name']}", dig(obj, "spec", "template", "spec"))
            for kind in ("Deployment", "Job") for obj in variant.find(kind)]


def containers_of(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return ([("initContainer " + c["name"], c) for c in spec.get("initContainers") or []]
            + [("container " + c["name"], c) for c in spec.get("containers") or []])


def chart_image(variant: Variant) -> str:
    """The image the chart runs sessionkeeper from (the Deployment's first container's)."""
    return dig(variant.one("Deployment"), "spec", "template", "spec", "containers", 0, "image", default="")


def sessionkeeper_containers(variant: Variant) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(owner + name, container, pod spec) of every container running the sessionkeeper image;
    extraInitContainers/extraContainers run other images and are the user's business."""
    image = chart_image(variant)
    return [(f"{owner} {cname}", c, spec) for owner, spec in pod_specs(variant)
            for cname, c in containers_of(spec) if c.get("image") == image]
