"""One version number: Cargo.toml's package version (scripts/version prints it) against every other
place that names sessionkeeper's version — the Dockerfile's VERSION default, the chart's
appVersion and any image tag a values file names, the Python and TypeScript clients' package
versions and the Python `__version__`, image tags in the docs, the binary's `--version` and its
`sessionkeeper_build_info{version=…}` — each read with its own format's parser; the image's OCI
labels (version, revision, created, source from the build args), parsed with BuildKit's
parser; the Dockerfile's guard that refuses a VERSION that is not the binary's, run against the
release binary; and scripts/build-image run against a stand-in `docker`.

Self-tests prove each comparison can fail: every place found is bumped alone in a scratch copy
and must be the one reported; so must a broken label or a wrong VERSION."""

from __future__ import annotations

import ast
import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import yaml

from . import monitoring_check
from .common import ROOT, R, dig
from .dockerfile_check import stages_of

BUMPED = "99.98.97"
OCI = "org.opencontainers.image."
# The build args scripts/build-image passes, and the label each must fill.
LABEL_ARGS = {"version": "VERSION", "revision": "REVISION", "created": "CREATED", "source": "SOURCE"}
# Where a sessionkeeper image tag may appear in prose and examples.
DOCS = ["README.md", "helm/sessionkeeper/README.md", "Dockerfile", "CONTRIBUTING.md"]
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass
class Found:
    """One place that names a version: its value (None: names none, follows another) and how to
    bump it alone in the file's text (the self-test's drift)."""
    where: str
    file: str
    value: str | None
    bump: Callable[[str], str]


def cargo_version(root: Path) -> str:
    return tomllib.loads((root / "Cargo.toml").read_text())["package"]["version"]


def _sub_one(pattern: str, repl: str) -> Callable[[str], str]:
    def bump(text: str) -> str:
        new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
        if n != 1:
            raise AssertionError(f"self-test bump found no {pattern!r}")
        return new
    return bump


def _yaml_set(path: tuple[str, ...]) -> Callable[[str], str]:
    def bump(text: str) -> str:
        doc = yaml.safe_load(text)
        node = doc
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = BUMPED
        return yaml.safe_dump(doc, sort_keys=False)
    return bump


def _json_set(path: tuple[str, ...]) -> Callable[[str], str]:
    def bump(text: str) -> str:
        doc = json.loads(text)
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = BUMPED
        return json.dumps(doc, indent=2) + "\n"
    return bump


def unquote(word: str) -> str:
    """A Dockerfile word as BuildKit's parser returns it (quotes kept): one pair of double or
    single quotes removed. Anything fancier than that is refused by the label check."""
    return word[1:-1] if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'" else word


def dockerfile_args(text: str) -> tuple[list[tuple[int, str, str | None]], list[dict[str, Any]]]:
    """Every ARG (stage index, -1 for global; name; default or None) and the stages."""
    import dockerfile  # noqa: PLC0415

    commands = dockerfile.parse_string(text)
    found: list[tuple[int, str, str | None]] = []
    stage = -1
    for cmd in commands:
        if cmd.cmd == "FROM":
            stage += 1
        elif cmd.cmd == "ARG":
            for word in cmd.value:
                name, eq, default = word.partition("=")
                found.append((stage, name, unquote(default) if eq else None))
    return found, stages_of(commands)[1]


def _at(line: int, col: int, old: str) -> Callable[[str], str]:
    """Bumps the version `old` at 1-based line `line`, 0-based column `col`, only there."""
    def bump(text: str) -> str:
        lines = text.split("\n")
        s = lines[line - 1]
        if s[col:col + len(old)] != old:
            raise AssertionError(f"self-test bump found no {old!r} at {line}:{col}")
        lines[line - 1] = s[:col] + BUMPED + s[col + len(old):]
        return "\n".join(lines)
    return bump


def values_files(root: Path) -> list[str]:
    return ["helm/sessionkeeper/values.yaml", "deploy/values-production.yaml",
            *sorted(str(p.relative_to(root)) for p in (root / "helm/sessionkeeper/ci").glob("*-values.yaml"))]


def inputs(root: Path) -> set[str]:
    """Every file versions() reads."""
    return {"Cargo.toml", "helm/sessionkeeper/Chart.yaml", "Dockerfile", "clients/python/pyproject.toml",
            "clients/python/src/sessionkeeper_client/__init__.py", "clients/typescript/package.json",
            "clients/typescript/package-lock.json", *values_files(root), *DOCS}


def versions(root: Path) -> list[Found]:
    """Every place other than Cargo.toml that names (or may name) sessionkeeper's version."""
    out: list[Found] = []
    chart = yaml.safe_load((root / "helm/sessionkeeper/Chart.yaml").read_text())
    out.append(Found("helm/sessionkeeper/Chart.yaml appVersion", "helm/sessionkeeper/Chart.yaml",
                     str(chart.get("appVersion")), _sub_one(r'^appVersion:.*$', f'appVersion: "{BUMPED}"')))
    for f in values_files(root):
        tag = dig(yaml.safe_load((root / f).read_text()) or {}, "image", "tag")
        # An empty tag means the chart's appVersion; other values files name none at all.
        if tag or f.endswith("/values.yaml"):
            out.append(Found(f"{f} image.tag", f, str(tag) if tag else None, _yaml_set(("image", "tag"))))
    args, _ = dockerfile_args((root / "Dockerfile").read_text())
    for stage, name, default in args:
        if name == "VERSION" and default is not None:
            where = "global" if stage < 0 else f"stage {stage}"
            out.append(Found(f"Dockerfile ARG VERSION default ({where})", "Dockerfile", default,
                             _sub_one(r"^ARG VERSION=\S+$", f"ARG VERSION={BUMPED}")))
    py = "clients/python/pyproject.toml"
    out.append(Found(f"{py} project.version", py, tomllib.loads((root / py).read_text())["project"]["version"],
                     _sub_one(r'^version = "[^"]*"$', f'version = "{BUMPED}"')))
    init = "clients/python/src/sessionkeeper_client/__init__.py"
    assigned = [n.value.value for n in ast.parse((root / init).read_text()).body
                if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in n.targets)
                and isinstance(n.value, ast.Constant)]
    out.append(Found(f"{init} __version__", init, assigned[0] if len(assigned) == 1 else None,
                     _sub_one(r'^__version__ = "[^"]*"$', f'__version__ = "{BUMPED}"')))
    pkg, lock = "clients/typescript/package.json", "clients/typescript/package-lock.json"
    out.append(Found(f"{pkg} version", pkg, json.loads((root / pkg).read_text())["version"], _json_set(("version",))))
    lock_doc = json.loads((root / lock).read_text())
    out.append(Found(f"{lock} version", lock, lock_doc["version"], _json_set(("version",))))
    out.append(Found(f'{lock} packages[""].version', lock, dig(lock_doc, "packages", "", "version"),
                     _json_set(("packages", "", "version"))))
    for f in DOCS:
        for n, line in enumerate((root / f).read_text().splitlines(), 1):
            for m in re.finditer(r"sessionkeeper:(\d+\.\d+\.\d+[\w.+-]*)", line):
                out.append(Found(f"{f}:{n}:{m.start(1) + 1} image tag", f, m.group(1), _at(n, m.start(1), m.group(1))))
    return out


def drift(root: Path) -> list[str]:
    """The places whose version is not Cargo.toml's (empty when all agree)."""
    want = cargo_version(root)
    return [f.where for f in versions(root) if f.value is not None and f.value != want]


def _scratch_copy(files: set[str], into: Path) -> None:
    for f in files:
        (into / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f, into / f)


def check_drift(binary: Path) -> None:
    version = cargo_version(ROOT)
    found = versions(ROOT)
    for f in found:
        if f.value is None:
            R.ok(f"{f.where} names no version (follows the chart's appVersion)")
        else:
            R.check(f.value == version, f"{f.where} is Cargo.toml's version {version}", f"it is {f.value}")
    out = subprocess.run([str(ROOT / "scripts/version")], capture_output=True, text=True, check=False).stdout
    R.check(out == f"{version}\n", f"scripts/version prints {version}", repr(out))
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False).stdout
    R.check(out.strip() == f"sessionkeeper {version}", f"`sessionkeeper --version` is `sessionkeeper {version}`", out.strip())
    info = re.findall(r"^sessionkeeper_build_info\{([^}]*)\} 1$", monitoring_check.scrape(binary), re.M)
    R.check(info == [f'version="{version}"'], f'a real scrape has sessionkeeper_build_info{{version="{version}"}} 1',
            str(info))

    # Self-test: each place bumped alone is the one reported; Cargo.toml bumped alone, all of them.
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        files = inputs(ROOT)
        _scratch_copy(files, scratch)
        baseline = set(drift(scratch))  # empty unless the checks above failed
        for f in found:
            _scratch_copy(files, scratch)
            (scratch / f.file).write_text(f.bump((scratch / f.file).read_text()))
            moved = [g for g in versions(scratch) if g.where == f.where and g.value == BUMPED]
            got = set(drift(scratch))
            R.check(bool(moved) and f.where in got and got - {f.where} == baseline - {f.where},
                    f"self-test: {f.where} bumped alone is reported, alone", f"reported {sorted(got)}")
        for doc in DOCS:
            _scratch_copy(files, scratch)
            (scratch / doc).write_text((scratch / doc).read_text() + f"\n    docker pull sessionkeeper:{BUMPED}\n")
            got = set(drift(scratch)) - baseline
            R.check(len(got) == 1 and next(iter(got)).startswith(f"{doc}:"),
                    f"self-test: an image tag sessionkeeper:{BUMPED} added to {doc} is reported", f"reported {sorted(got)}")
        _scratch_copy(files, scratch)
        cargo = scratch / "Cargo.toml"
        cargo.write_text(_sub_one(r'^version = "[^"]*"$', f'version = "{BUMPED}"')(cargo.read_text()))
        want = sorted(f.where for f in found if f.value is not None)
        R.check(sorted(drift(scratch)) == want, f"self-test: Cargo.toml bumped alone leaves all {len(want)} places behind",
                f"reported {sorted(drift(scratch))}")


def label_problems(text: str) -> list[str]:
    """Why the final stage's OCI labels do not come from the build args (empty when they do)."""
    args, stages = dockerfile_args(text)
    final = len(stages) - 1
    problems = []
    for _, name, default in args:
        if name in ("REVISION", "CREATED", "SOURCE") and default:
            problems.append(f"ARG {name} has the default {default!r}: only the build knows it")
    declared: set[str] = set()
    labels: dict[str, str] = {}
    for cmd in stages[final]["cmds"] if stages else []:
        if cmd.cmd == "ARG":
            declared.update(w.partition("=")[0] for w in cmd.value)
        elif cmd.cmd == "LABEL":
            for key, value in zip(cmd.value[0::2], cmd.value[1::2], strict=True):
                labels[unquote(key)] = unquote(value)
    for label, arg in LABEL_ARGS.items():
        value = labels.get(OCI + label)
        if value not in (f"${{{arg}}}", f"${arg}"):
            problems.append(f"label {OCI}{label} is {value!r}, not ${{{arg}}}")
        elif arg not in declared:
            problems.append(f"ARG {arg} is not declared in the final stage: {OCI}{label} would be empty")
    return problems


def check_labels(binary: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    problems = label_problems(text)
    R.check(not problems, f"the final stage's {', '.join(OCI + k for k in LABEL_ARGS)} come from the build args "
            f"{', '.join(LABEL_ARGS.values())}", "; ".join(problems))
    breakages = {
        "revision fixed": text.replace('revision="${REVISION}"', 'revision="deadbeef"'),
        "created from an undeclared arg": re.sub(r"^ARG CREATED\n", "", text, flags=re.M),
        "source fixed": re.sub(r'(source=)"[^"]*"', r'\1"https://example.org/sk"', text),
        "REVISION with a default": text.replace("ARG REVISION\n", "ARG REVISION=main\n"),
    }
    for what, broken in breakages.items():
        R.check(broken != text and bool(label_problems(broken)), f"self-test: the label check refuses a Dockerfile with {what}")

    # The build stage's guard: run it with the release binary in the place the image installs it.
    _, stages = dockerfile_args(text)
    builder, runtime = stages[0], stages[-1]
    entry = [c for c in runtime["cmds"] if c.cmd == "ENTRYPOINT"][-1].value[0]
    installed = [c.value[0] for c in runtime["cmds"] if c.cmd == "COPY" and c.value[-1] == entry
                 and any(f.startswith("--from=") for f in c.flags)]
    names = [c for c in builder["cmds"] if c.cmd == "ARG" and any(w.partition("=")[0] == "VERSION" for w in c.value)]
    guards = [c for c in builder["cmds"] if c.cmd == "RUN" and installed and installed[0] in c.value[0]
              and re.search(r"\$\{?VERSION\b", c.value[0]) and names and c.start_line > names[0].start_line]
    if not R.check(len(guards) == 1, "the build stage has one RUN that compares VERSION with the built binary's --version",
                   f"{len(guards)} found (binary at {installed[:1]})"):
        return
    script = guards[0].value[0].replace(installed[0], str(binary))
    version = cargo_version(ROOT)

    def guard(value: str) -> int:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VERSION": value}
        return subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=30, check=False).returncode
    R.check(guard(version) == 0, f"the guard passes with VERSION={version} (Cargo.toml's)")
    for wrong in (BUMPED, "", f"{version}-dirty"):
        R.check(guard(wrong) != 0, f"the guard fails the build with VERSION={wrong!r}")


def check_build_image() -> None:
    """scripts/build-image against a stand-in `docker` that records its arguments."""
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "argv"
        fake = Path(tmp) / "docker"
        fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{record}"\n')
        fake.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("REVISION", "SOURCE_DATE_EPOCH", "DOCKER")}
        env["SOURCE"] = "https://git.example.org/platform/sessionkeeper"
        env["PATH"] = f"{tmp}:{env.get('PATH', '/usr/bin:/bin')}"
        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        proc = subprocess.run([str(ROOT / "scripts/build-image"), "registry.example/sk", "--pull"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        after = datetime.datetime.now(datetime.UTC)
        if not R.check(proc.returncode == 0 and record.exists(), "scripts/build-image runs `docker build`",
                       proc.stderr.strip()[-400:]):
            return
        argv = record.read_text().split("\0")[:-1]
    version = cargo_version(ROOT)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    build_args = {argv[i + 1].partition("=")[0]: argv[i + 1].partition("=")[2]
                  for i, a in enumerate(argv) if a == "--build-arg"}
    R.check(argv[:1] == ["build"] and argv[-1] == "." and "--pull" in argv,
            "it runs `docker build … OPTIONS .` with the repository as the context", str(argv))
    R.check("--tag" in argv and argv[argv.index("--tag") + 1] == f"registry.example/sk:{version}",
            f"it tags REPOSITORY:{version}", str(argv))
    R.check(set(build_args) == set(LABEL_ARGS.values()), f"it passes the build args {', '.join(LABEL_ARGS.values())}",
            str(sorted(build_args)))
    R.check(build_args.get("VERSION") == version, f"VERSION={version}, from scripts/version", str(build_args.get("VERSION")))
    R.check(build_args.get("REVISION") == head, f"REVISION is `git rev-parse HEAD` ({head[:12]})", str(build_args.get("REVISION")))
    R.check(build_args.get("SOURCE") == env["SOURCE"], "SOURCE is the SOURCE the caller set", str(build_args.get("SOURCE")))
    created = build_args.get("CREATED", "")
    when = datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC) \
        if RFC3339_UTC.fullmatch(created) else None
    R.check(when is not None and before <= when <= after, f"CREATED is the build time in RFC 3339 UTC ({created})")


def check_versions(binary: Path) -> None:
    R.start(f"one version number: Cargo.toml's {cargo_version(ROOT)} everywhere, and the image's OCI labels")
    check_drift(binary)
    check_labels(binary)
    check_build_image()
