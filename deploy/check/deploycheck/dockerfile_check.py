"""The Dockerfile (parsed with BuildKit's own parser, the `dockerfile` package) and its build
context (.dockerignore matched with docker-py's PatternMatcher, Docker's semantics): the image
runs the binary as a non-root user with the chart's uid, and the context holds every file the
build reads (rustc's dep-info of the binary)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomllib

from . import binary as cli
from .common import ROOT, R, dig, port_of


def context_matcher() -> Any:
    from docker.utils.build import PatternMatcher  # noqa: PLC0415

    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return PatternMatcher([s for s in (line.strip() for line in lines) if s and not s.startswith("#")])

def build_inputs(binary: Path) -> set[str]:
    """Every repository file `cargo build` reads for the binary: rustc's dep-info of the binary,
    the manifest, the lock file, build.rs and the paths build.rs names."""
    inputs = {"Cargo.toml", "Cargo.lock"}
    dep_info = binary.with_suffix(".d")
    text = dep_info.read_text().replace("\\ ", "\0")
    for token in text.split(":", 1)[1].split():
        p = Path(token.replace("\0", " "))
        try:
            rel = p.resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] == "target":
            continue
        inputs.add(str(rel))
    build_rs = ROOT / "build.rs"
    if build_rs.exists():
        inputs.add("build.rs")
        for literal in re.findall(r'"([^"\\]+)"', build_rs.read_text()):
            if (ROOT / literal).exists() and not literal.startswith("/"):
                inputs.add(literal)
    files: set[str] = set()
    for rel in inputs:
        p = ROOT / rel
        if p.is_dir():
            files.update(str(f.relative_to(ROOT)) for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.add(rel)
    return files


def stages_of(commands: list[Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The global ARGs (name -> default, "" when none) and the stages (FROM image with the global
    ARGs substituted, alias, instructions) of a Dockerfile parsed by `dockerfile`."""
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for cmd in commands:
        if cmd.cmd == "ARG" and not stages:
            name, _, value = cmd.value[0].partition("=")
            args[name] = value
        elif cmd.cmd == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), cmd.value[0])
            alias = cmd.value[2] if len(cmd.value) >= 3 and cmd.value[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "cmds": []})
        elif stages:
            stages[-1]["cmds"].append(cmd)
    return args, stages


def check_dockerfile(binary: Path, chart_values: dict[str, Any]) -> None:
    import dockerfile  # noqa: PLC0415

    R.start("Dockerfile (parsed with BuildKit's parser) and .dockerignore")
    path = ROOT / "Dockerfile"
    if not R.check(path.exists(), "Dockerfile exists at the repository root"):
        return
    commands = dockerfile.parse_file(str(path))
    R.ok(f"Dockerfile parses ({len(commands)} instructions)")
    _, stages = stages_of(commands)
    R.check(len(stages) >= 2, "multi-stage build", f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]
    R.check(builder["image"].startswith("rust:"), f"build stage is a Rust image ({builder['image']})")

    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rust_version = cargo.get("package", {}).get("rust-version")
    m = re.match(r"rust:(\d+)\.(\d+)", builder["image"])
    if rust_version and m:
        want = tuple(int(x) for x in rust_version.split(".")[:2])
        R.check((int(m.group(1)), int(m.group(2))) >= want,
                f"builder Rust {m.group(1)}.{m.group(2)} >= Cargo.toml rust-version {rust_version}")

    small = ("gcr.io/distroless/cc-debian", "gcr.io/distroless/static", "debian:", "cgr.dev/chainguard")
    R.check(runtime["image"].startswith(small), f"runtime stage is a small image ({runtime['image']})")
    codename = {"bookworm": "12", "trixie": "13", "bullseye": "11"}
    bm = re.search(r"(bookworm|trixie|bullseye)", builder["image"])
    rm = re.search(r"debian(\d+)|(bookworm|trixie|bullseye)", runtime["image"])
    if bm and rm:
        runtime_release = rm.group(1) or codename[rm.group(2)]
        R.check(codename[bm.group(1)] == runtime_release,
                f"builder and runtime are the same Debian release ({bm.group(1)} / debian{runtime_release}): same glibc")
    else:
        R.fail(f"cannot tell the Debian releases of {builder['image']} and {runtime['image']} (glibc compatibility)")

    rcmds = runtime["cmds"]
    R.check(not any(c.cmd == "RUN" for c in rcmds), "no RUN in the runtime stage (no shell needed at run time)")
    users = [c.value[0] for c in rcmds if c.cmd == "USER"]
    user = users[-1] if users else ""
    uid = user.split(":")[0]
    R.check(bool(user) and uid not in ("0", "root") and uid.isdigit(),
            f"runtime USER is a numeric non-root uid ({user or 'none'})")
    pod_uid = dig(chart_values, "podSecurityContext", "runAsUser")
    R.check(str(pod_uid) == uid, f"chart podSecurityContext.runAsUser ({pod_uid}) is the image's USER ({uid})")

    entry = [c for c in rcmds if c.cmd == "ENTRYPOINT"]
    cmd = [c for c in rcmds if c.cmd == "CMD"]
    R.check(bool(entry) and entry[-1].json, "ENTRYPOINT in exec (JSON) form")
    R.check(not cmd or cmd[-1].json, "CMD in exec (JSON) form")
    argv = (list(entry[-1].value) if entry else []) + (list(cmd[-1].value) if cmd else [])
    copies_from_builder = [c for c in rcmds if c.cmd == "COPY"
                           and any(f in (f"--from={builder['alias']}", "--from=0") for f in c.flags)]
    bin_dests = {c.value[-1] for c in copies_from_builder}
    R.check(bool(argv) and argv[0] in bin_dests, f"ENTRYPOINT runs the binary copied from the build stage ({argv[:1]})")
    R.check(argv[1:2] == ["serve"], f"the default command is `serve` ({argv})")
    subcommands = cli.subcommands(binary)
    R.check("serve" in subcommands and "migrate" in subcommands,
            f"the binary has the serve and migrate subcommands ({', '.join(subcommands)})")

    exposed = {int(p.split("/")[0]) for c in rcmds if c.cmd == "EXPOSE" for p in c.value}
    for flag, what in (("listen", "gRPC"), ("metrics-listen", "metrics")):
        default = cli.default_of(binary, "serve", flag)
        R.check(bool(default) and port_of(default) in exposed, f"EXPOSE has the binary's default {what} port ({default})",
                f"EXPOSE {sorted(exposed)}")
    envs = {}
    for c in rcmds:
        if c.cmd == "ENV":
            vals = list(c.value)
            for k, v in zip(vals[0::2], vals[1::2], strict=False):
                envs[k] = v
    for k in envs:
        if k.startswith("SESSIONKEEPER_") or k == "DATABASE_URL":
            R.check(k in cli.env_vars(binary, "serve"), f"ENV {k} is a variable `sessionkeeper serve --help` lists")
    data_dir = envs.get("SESSIONKEEPER_DATA_DIR")
    if data_dir:
        owned = [c for c in rcmds if c.cmd == "COPY" and c.value[-1].rstrip("/") == data_dir.rstrip("/")
                 and any(f.startswith("--chown=") and f.split("=", 1)[1].split(":")[0] == uid for f in c.flags)]
        R.check(bool(owned), f"the embedded store's directory {data_dir} is created owned by uid {uid}")
    else:
        R.fail("no ENV SESSIONKEEPER_DATA_DIR: the embedded store would write to ./data under WORKDIR")

    # The build context.
    matcher = context_matcher()
    if not R.check(bool(matcher.patterns), ".dockerignore exists and has patterns"):
        return
    for rel in ("target/debug/sessionkeeper", "target/release/sessionkeeper", ".git/HEAD", "data/sessionkeeper.sqlite3"):
        R.check(matcher.matches(rel), f".dockerignore keeps {rel} out of the build context")
    inputs = build_inputs(binary)
    builder_copies = [c for c in builder["cmds"] if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags)]
    sources = [s.rstrip("/") for c in builder_copies for s in c.value[:-1]]
    missing_ctx = sorted(f for f in inputs if matcher.matches(f))
    missing_copy = sorted(f for f in inputs if not any(s in (".", f) or f.startswith(s + "/") for s in sources))
    R.check(not missing_ctx, f"every file the build reads ({len(inputs)}, from rustc's dep-info) is in the build context",
            f"excluded by .dockerignore: {missing_ctx[:8]}")
    R.check(not missing_copy, "the build stage COPYs every file the build reads", f"not copied: {missing_copy[:8]}")


