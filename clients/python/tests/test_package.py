"""The package itself: stubs generated from the proto are current, and a wheel built from a clean
copy (no stubs, the proto shipped beside it as in an sdist) contains them and pins its runtime."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import sessionkeeper_client
from harness import REPO_ROOT

PROJECT = Path(__file__).resolve().parents[1]


def test_the_stubs_match_the_proto() -> None:
    out = subprocess.run([sys.executable, str(PROJECT / "generate_stubs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_stubs_carry_every_rpc_of_the_contract() -> None:
    from sessionkeeper_client._gen.sessionkeeper.v1 import session_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["SessionService"]
    assert {m.name for m in service.methods} >= {"Get", "ReportResult", "Sweep", "Forget"}
    assert pb.DESCRIPTOR.name == "sessionkeeper/v1/session.proto", "the canonical file name, not a rewritten one"
    proto_text = (REPO_ROOT / "proto/sessionkeeper/v1/session.proto").read_text()
    for field in pb.AgentResult.DESCRIPTOR.fields:
        assert re.search(rf"\b{field.name} = {field.number};", proto_text)


def test_a_wheel_builds_from_a_clean_copy(tmp_path: Path) -> None:
    src = tmp_path / "project"
    shutil.copytree(PROJECT, src, ignore=shutil.ignore_patterns(
        "_gen", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", "tests"))
    shutil.copytree(REPO_ROOT / "proto", src / "proto")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("sessionkeeper_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    for stub in ("session_pb2.py", "session_pb2.pyi", "session_pb2_grpc.py"):
        assert f"sessionkeeper_client/_gen/sessionkeeper/v1/{stub}" in names
    assert "sessionkeeper_client/py.typed" in names
    assert not any(n.startswith("sessionkeeper/") for n in names), "no top-level 'sessionkeeper' package"
    assert re.search(r"^Requires-Dist: grpcio>=\d", metadata, re.M)
    assert re.search(r"^Requires-Dist: protobuf<\d+,>=\d|^Requires-Dist: protobuf>=\d", metadata, re.M)
    assert sessionkeeper_client.__version__ in wheel.name
