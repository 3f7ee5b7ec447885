"""The chart as a package: Chart.yaml (its appVersion is version_check.py's), the .tgz the Helm SDK
packages (every later step lints and renders that archive, not the directory), helm lint, the
values that must be refused (helm/sessionkeeper/ci/invalid), strict Kubernetes schema validation
of every rendered object (kubernetes-validate; CRDs against schemas vendored in schemas/), and the
chart README's drift from what readme-generator-for-helm makes of values.yaml."""

from __future__ import annotations

import filecmp
import functools
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import yaml

from .common import (
    CHART,
    CHECK_DIR,
    CI_VALUES,
    KUBE_VERSIONS,
    LINT_KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    R,
    Variant,
    dig,
    helm,
    rel,
    strip_source,
)

SCHEMAS = CHECK_DIR / "schemas"
# CRDs are not in the Kubernetes schemas: each is validated against a schema vendored here.
VENDORED_CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "monitoring.coreos.com_v1_prometheusrule.json",
}
README_GENERATOR = ROOT / "deploy" / "tools" / "node_modules" / ".bin" / "readme-generator"


def check_chart_metadata() -> dict[str, Any]:
    R.start("Chart.yaml")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    R.check(chart.get("apiVersion") == "v2", "apiVersion v2")
    kv = chart.get("kubeVersion", "")
    floor = re.search(r">=\s*v?(\d+)\.(\d+)", kv)
    for v in KUBE_VERSIONS:
        major, minor = (int(x) for x in v.split(".")[:2])
        R.check(bool(floor) and (major, minor) >= (int(floor.group(1)), int(floor.group(2))),
                f"validated Kubernetes {v} satisfies kubeVersion {kv!r}")
    schema = json.loads((CHART / "values.schema.json").read_text())
    R.check(schema.get("additionalProperties") is False, "values.schema.json rejects unknown top-level keys")
    return yaml.safe_load((CHART / "values.yaml").read_text())


def package_chart(out: Path) -> Path | None:
    """`helm package` with the Helm SDK; the archive is what the rest of the check loads."""
    h = helm()
    R.start(f"helm package (Helm SDK {h.helm_sdk_version()})")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("sessionkeeper-*.tgz"):
        old.unlink()
    try:
        tgz = Path(h.package(str(CHART), destination=str(out)))
    except h.HelmError as e:
        R.fail(f"helm package failed: {e}")
        return None
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
    R.ok(f"packaged {rel(tgz)} ({tgz.stat().st_size} bytes, {len(names)} files)")
    R.check("sessionkeeper/dashboards/sessionkeeper.json" in names and "sessionkeeper/README.md" in names,
            "the archive holds the dashboard JSON and the chart README")
    R.check(not any(n.startswith("sessionkeeper/ci/") for n in names),
            "the archive leaves out ci/ (test values, .helmignore)", f"{[n for n in names if '/ci/' in n][:3]}")
    return tgz


def check_lint(tgz: Path, variants: list[Variant]) -> None:
    h = helm()
    R.start(f"helm lint of {tgz.name} (strict, kubeVersion {LINT_KUBE_VERSION})")
    for v in variants:
        report = h.lint(str(tgz), v.values or None, strict=True, namespace=NAMESPACE, kube_version=LINT_KUBE_VERSION)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        infos = [m["error"] for m in report.get("messages", []) if m.get("severity", 0) < 2]
        R.check(not bad and not report.get("errors"), f"lint {v.name}" + (f" (info: {'; '.join(infos)})" if infos else ""),
                "; ".join(f"{m['path']}: {m['error']}" for m in bad) + "; ".join(report.get("errors") or []))


def check_invalid_values(chart: Any) -> None:
    h = helm()
    R.start(f"values that must be refused ({rel(CI_VALUES / 'invalid')}/*.yaml)")
    files = sorted((CI_VALUES / "invalid").glob("*.yaml"))
    R.check(bool(files), f"{len(files)} invalid values files")
    for path in files:
        text = path.read_text()
        expect = re.search(r"^# expect-(schema|fail): (.+)$", text, re.M)
        if not expect:
            R.fail(f"{path.name}: no '# expect-schema:' or '# expect-fail:' line")
            continue
        kind, needle = expect.group(1), expect.group(2).strip()
        try:
            chart.render(values=yaml.safe_load(text) or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except h.HelmValuesError as e:
            R.check(kind == "schema" and needle in str(e), f"{path.name}: refused by values.schema.json ({needle})",
                    str(e).replace("\n", " "))
            continue
        except h.HelmError as e:
            R.check(kind == "fail" and needle in str(e), f"{path.name}: refused by the chart ({needle})",
                    str(e).replace("\n", " "))
            continue
        R.fail(f"{path.name}: helm template SUCCEEDED but must fail ({kind}: {needle})")


_schema_cache: dict[Path, Any] = {}

def validate_objects(variant: Variant) -> None:
    import jsonschema  # noqa: PLC0415
    import kubernetes_validate  # noqa: PLC0415
    from kubernetes_validate import utils as kv_utils  # noqa: PLC0415

    if not getattr(kv_utils.schema_contents, "cache_info", None):
        kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    seen = set()
    for obj in variant.objects:
        clean = strip_source(obj)
        kind, api, name = clean.get("kind"), clean.get("apiVersion"), dig(clean, "metadata", "name")
        key = (kind, name)
        if key in seen:
            R.fail(f"{variant.name}: {kind}/{name} rendered twice")
        seen.add(key)
        R.check(dig(clean, "metadata", "namespace") == NAMESPACE, f"{variant.name}: {kind}/{name} is in the release namespace",
                f"namespace {dig(clean, 'metadata', 'namespace')!r}")
        vendored = VENDORED_CRD_SCHEMAS.get((api, kind))
        for version in KUBE_VERSIONS:
            try:
                if vendored:
                    if vendored not in _schema_cache:
                        _schema_cache[vendored] = json.loads(vendored.read_text())
                    jsonschema.Draft202012Validator(_schema_cache[vendored]).validate(clean)
                    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": clean["metadata"]},
                                                 version, strict=True)
                else:
                    kubernetes_validate.validate(clean, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                R.fail(f"{variant.name}: {kind}/{name} ({api}): no Kubernetes {version} schema and none vendored")
                break
            except jsonschema.ValidationError as e:
                where = ".".join(str(p) for p in e.absolute_path)
                R.fail(f"{variant.name}: {kind}/{name} invalid for Kubernetes {version}"
                       f"{' (vendored CRD schema)' if vendored else ''}: {where}: {e.message}")
                break
        else:
            R.ok(f"{variant.name}: {kind}/{name} ({api}) valid, strict, on Kubernetes {' and '.join(KUBE_VERSIONS)}"
                 + (f" [CRD: vendored schema {vendored.name}]" if vendored else ""))



def check_readme(out: Path) -> None:
    """Regenerates helm/sessionkeeper/README.md from values.yaml in a scratch copy: any difference
    fails. Once, a values.yaml with one description changed must give a different README (the
    comparison can fail)."""
    R.start("chart README (readme-generator-for-helm, deploy/tools) against values.yaml")
    work = out / "readme"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def generate(values_text: str, tag: str) -> tuple[Path, str]:
        values, readme = work / f"values-{tag}.yaml", work / f"README-{tag}.md"
        values.write_text(values_text)
        shutil.copyfile(CHART / "README.md", readme)
        proc = subprocess.run([str(README_GENERATOR), "--values", str(values), "--readme", str(readme)],
                              capture_output=True, text=True, timeout=120)
        return readme, "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()[-600:]

    text = (CHART / "values.yaml").read_text()
    readme, err = generate(text, "current")
    if not R.check(not err, "readme-generator accepts values.yaml (every key has an @param)", err):
        return
    same = filecmp.cmp(readme, CHART / "README.md", shallow=False)
    R.check(same, "helm/sessionkeeper/README.md is what the generator makes of values.yaml",
            f"regenerate it: deploy/tools/node_modules/.bin/readme-generator --values helm/sessionkeeper/values.yaml "
            f"--readme helm/sessionkeeper/README.md (diff against {rel(readme)})")
    mutated = text.replace("## @param replicaCount ", "## @param replicaCount (changed) ", 1)
    readme2, err = generate(mutated, "mutated")
    R.check(not err and not filecmp.cmp(readme2, CHART / "README.md", shallow=False),
            "self-test: a changed @param description changes the generated README (the drift check can fail)", err)
