#!/usr/bin/env python3
"""The deployment check behind scripts/test-deploy.

Validates the Dockerfile and the Helm chart in helm/sessionkeeper, offline, with the official
engines, and cross-checks the chart with the release binary. One module per subject in
deploycheck/: the Dockerfile and build context; one version number (Cargo.toml's) in the chart,
the clients, the image's OCI labels and scripts/build-image; the packaged chart (.tgz), helm
lint, the values that must be refused and strict Kubernetes schemas; small tests per template; the rendered
command lines and variables against the binary's own parser; the duration schema against the
binary, sample by sample; the PrometheusRule and the dashboard against promtool and a real
/metrics scrape; the chart README against its generator; and the binary started as each rendered
pod, with the rendered probes run against it.

Run it through scripts/test-deploy (it prepares the venv, the npm tools and the binary). Exit
code: 0 when every check passed, 1 otherwise. Every check prints one line.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploycheck import (  # noqa: E402
    chart_check,
    dockerfile_check,
    durations_check,
    monitoring_check,
    runtime,
    version_check,
    wiring_check,
)
from deploycheck.common import (  # noqa: E402
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    R,
    helm,
    load_variants,
    rel,
    render,
    write_rendered,
)
from deploycheck.template_checks import TEMPLATE_TESTS  # noqa: E402


def guarded(what: str, fn, *args) -> None:  # noqa: ANN001
    """A check that crashes is a failure with its traceback, and the next one still runs."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        R.fail(f"{what}: check crashed: {e!r}\n{traceback.format_exc()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "sessionkeeper")
    parser.add_argument("--out", type=Path, default=ROOT / "target" / "deploy-check")
    parser.add_argument("--smoke-one", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.smoke_one:
        return runtime.smoke_one(opts.smoke_one)

    started = time.monotonic()
    binary, out = opts.binary.resolve(), opts.out
    (out / "rendered").mkdir(parents=True, exist_ok=True)
    h = helm()
    import kubernetes_validate  # noqa: PLC0415
    print(f"tools: Helm Go SDK {h.helm_sdk_version()} (helm-python-sdk {h.__version__}), kubernetes-validate "
          f"{kubernetes_validate.__version__} (Kubernetes {', '.join(KUBE_VERSIONS)}, strict), Python {sys.version.split()[0]}; "
          f"binary {rel(binary)}")

    chart_values = chart_check.check_chart_metadata()
    guarded("Dockerfile", dockerfile_check.check_dockerfile, binary, chart_values)
    guarded("versions", version_check.check_versions, binary)
    tgz = chart_check.package_chart(out / "package")
    if tgz is None:
        return 1
    variants = load_variants()
    chart_check.check_lint(tgz, variants)

    R.start(f"helm template of {tgz.name} (release {RELEASE!r} in namespace {NAMESPACE!r})")
    rendered = []
    with h.Chart.load(str(tgz)) as chart:
        for v in variants:
            try:
                render(chart, v)
            except h.HelmError as e:
                R.fail(f"render {v.name}: {e}")
                continue
            path = write_rendered(v, out / "rendered")
            kinds = ", ".join(f"{o['kind']}/{o['metadata'].get('name')}" for o in v.objects)
            R.ok(f"render {v.name}: {len(v.objects)} objects -> {rel(path)} ({kinds})")
            rendered.append(v)
        chart_check.check_invalid_values(chart)
        guarded("monitoring", monitoring_check.check_monitoring, chart, binary, out)

    R.start(f"Kubernetes schema validation (strict: unknown fields are errors) on {', '.join(KUBE_VERSIONS)}")
    for v in rendered:
        guarded(v.name, chart_check.validate_objects, v)
    for template, test in TEMPLATE_TESTS:
        R.start(f"template: {template}")
        for v in rendered:
            guarded(f"{v.name}: {template}", test, v)

    R.start("chart vs binary: the rendered command lines through the binary's parser, variables, mounts, ports, probes")
    wiring_check.self_test(binary)
    binary_bytes = binary.read_bytes()
    for v in rendered:
        guarded(v.name, wiring_check.check_wiring, v, binary, binary_bytes)
    guarded("durations", durations_check.check_durations, binary)
    guarded("README", chart_check.check_readme, out)
    guarded("runtime", runtime.check_runtime, rendered, binary, out)
    guarded("verify-full", runtime.check_verify_full, rendered, binary, out)

    print(f"\n== summary ({time.monotonic() - started:.1f}s)")
    if R.failed:
        print(f"{len(R.failed)} check(s) FAILED:")
        for f in R.failed:
            print(f"  - {f}")
    print(f"test-deploy: {R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
