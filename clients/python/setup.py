"""Build hook: generate the gRPC stubs from the proto before packaging (see generate_stubs.py).

Everything else is declared in pyproject.toml. The runtime dependencies are computed here because
generated code requires a grpcio / protobuf runtime at least as new as the generator that wrote it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import generate_stubs  # noqa: E402


def ensure_stubs() -> None:
    """Regenerate when the proto is at hand; an sdist without it keeps the stubs it ships."""
    try:
        generate_stubs.proto_root()
    except FileNotFoundError:
        if not (generate_stubs.GEN_DIR / "sessionkeeper" / "v1" / "session_pb2.py").is_file():
            raise
        return
    if generate_stubs.GEN_DIR.exists():
        import shutil

        shutil.rmtree(generate_stubs.GEN_DIR)
    generate_stubs.generate(generate_stubs.GEN_DIR)


def runtime_requirements() -> list[str]:
    ensure_stubs()
    v1 = generate_stubs.GEN_DIR / "sessionkeeper" / "v1"
    grpc_text = (v1 / "session_pb2_grpc.py").read_text()
    pb_text = (v1 / "session_pb2.py").read_text()
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", grpc_text)
    pb_version = re.search(r"# Protobuf Python Version: ([0-9]+)\.([0-9]+)\.([0-9]+)", pb_text)
    if not grpc_version or not pb_version:
        raise RuntimeError("cannot read the generator versions from the generated stubs")
    major, minor, patch = pb_version.groups()
    return [
        f"grpcio>={grpc_version.group(1)}",
        f"protobuf>={major}.{minor}.{patch},<{int(major) + 1}",
    ]


class BuildPy(build_py):
    def run(self) -> None:
        ensure_stubs()
        super().run()


class SDist(sdist):
    def run(self) -> None:
        ensure_stubs()
        super().run()


setup(install_requires=runtime_requirements(), cmdclass={"build_py": BuildPy, "sdist": SDist})
