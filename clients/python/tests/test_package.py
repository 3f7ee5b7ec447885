"""The package itself: its stubs come from the pinned (oldest supported) generator and carry the
contract, its declared grpcio/protobuf floors are no older than that generator's versions (protobuf's
is exactly it) and are what CI tests as the oldest end, the runtime under test is inside the ranges, and a wheel built from a clean copy (no stubs, the proto shipped beside it as
in an sdist) contains the stubs and declares exactly those ranges."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import requires, version
from pathlib import Path

import google.protobuf
import grpc
import pytest

import sessionkeeper_client
from harness import REPO_ROOT

PROJECT = Path(__file__).resolve().parents[1]
GEN_V1 = Path(sessionkeeper_client.__file__).resolve().parent / "_gen" / "sessionkeeper" / "v1"


def release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def declared_ranges(lines: list[str]) -> dict[str, tuple[str, str]]:
    """{name: (floor, cap)} of `grpcio<2,>=1.66.2`-style requirements."""
    ranges = {}
    for line in lines:
        found = re.fullmatch(r"\s*(grpcio|protobuf)\s*([<>=!,.\d\s]+)", line)
        if found:
            floor = re.search(r">=\s*([\d.]+)", found.group(2))
            cap = re.search(r"<\s*([\d.]+)", found.group(2))
            assert floor and cap, f"{line}: a floor and a cap"
            ranges[found.group(1)] = (floor.group(1), cap.group(1))
    return ranges


def generator_versions() -> dict[str, str]:
    """The grpcio and protobuf versions that the generator of the installed stubs wrote for."""
    pb = re.search(r"# Protobuf Python Version: ([\d.]+)", (GEN_V1 / "session_pb2.py").read_text())
    rpc = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (GEN_V1 / "session_pb2_grpc.py").read_text())
    assert pb and rpc, "the stubs name their generator's versions"
    return {"protobuf": pb.group(1), "grpcio": rpc.group(1)}


def pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^(grpcio|protobuf)==([\d.]+)$", path.read_text(), re.M))


def test_the_stubs_carry_every_rpc_of_the_contract() -> None:
    from sessionkeeper_client._gen.sessionkeeper.v1 import session_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["SessionService"]
    assert {m.name for m in service.methods} >= {"Get", "ReportResult", "Sweep", "Forget"}
    assert pb.DESCRIPTOR.name == "sessionkeeper/v1/session.proto", "the canonical file name, not a rewritten one"
    proto_text = (REPO_ROOT / "proto/sessionkeeper/v1/session.proto").read_text()
    for field in pb.AgentResult.DESCRIPTOR.fields:
        assert re.search(rf"\b{field.name} = {field.number};", proto_text)


def test_the_transcript_stubs_carry_the_transcript_service() -> None:
    from sessionkeeper_client._gen.sessionkeeper.v1 import transcript_pb2 as tpb
    from sessionkeeper_client._gen.sessionkeeper.v1 import transcript_pb2_grpc as tpb_grpc

    service = tpb.DESCRIPTOR.services_by_name["TranscriptService"]
    assert {m.name for m in service.methods} == {
        "AppendEntries", "LoadTranscript", "ListTranscriptSessions", "ListSubkeys", "DeleteTranscript"}
    assert tpb.DESCRIPTOR.name == "sessionkeeper/v1/transcript.proto"
    assert tpb.DESCRIPTOR.package == "sessionkeeper.v1"
    assert hasattr(tpb_grpc, "TranscriptServiceStub")
    proto_text = (REPO_ROOT / "proto/sessionkeeper/v1/transcript.proto").read_text()
    for message in (tpb.AppendEntriesRequest, tpb.AppendEntriesResponse, tpb.SummaryWrite, tpb.Summary):
        for field in message.DESCRIPTOR.fields:
            assert re.search(rf"\b{field.name} = {field.number};", proto_text), (message, field.name)


def test_the_declared_floors_hold_the_pinned_generators_code() -> None:
    pinned = re.search(r'"grpcio-tools==([\d.]+)"', (PROJECT / "pyproject.toml").read_text())
    assert pinned, "pyproject.toml pins the generator exactly"
    written_for = generator_versions()
    assert written_for["grpcio"] == pinned.group(1), "the installed stubs come from the pinned generator"
    floors = {name: floor for name, (floor, _) in declared_ranges(requires("sessionkeeper-client") or []).items()}
    assert floors["protobuf"] == written_for["protobuf"], "protobuf's floor is the gencode's version"
    assert release(floors["grpcio"]) >= release(written_for["grpcio"]), "the stubs run on grpcio's floor"
    assert pins(PROJECT / "constraints-oldest.txt") == floors, "CI's oldest end is the floors"


def test_the_runtime_under_test_is_inside_the_declared_ranges() -> None:
    ranges = declared_ranges(requires("sessionkeeper-client") or [])
    for name, installed in (("grpcio", grpc.__version__), ("protobuf", google.protobuf.__version__)):
        floor, cap = ranges[name]
        assert release(floor) <= release(installed) < release(cap), f"{name} {installed} outside >={floor},<{cap}"
    newest = pins(PROJECT / "requirements-dev.txt")
    for name, pinned in newest.items():
        floor, cap = ranges[name]
        assert release(floor) <= release(pinned) < release(cap), f"CI's newest {name} {pinned} is inside the range"


@pytest.mark.slow
def test_a_wheel_builds_from_a_clean_copy(tmp_path: Path) -> None:
    src = tmp_path / "project"
    shutil.copytree(PROJECT, src, ignore=shutil.ignore_patterns(
        "_gen", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache", "tests"))
    shutil.copytree(REPO_ROOT / "proto", src / "proto")
    # With build isolation, as `pip install` does: the build gets the pinned generator itself.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
         "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (wheel,) = (tmp_path / "dist").glob("sessionkeeper_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        grpc_stub = zf.read("sessionkeeper_client/_gen/sessionkeeper/v1/session_pb2_grpc.py").decode()
    for stub in ("session_pb2.py", "session_pb2.pyi", "session_pb2_grpc.py",
                 "transcript_pb2.py", "transcript_pb2.pyi", "transcript_pb2_grpc.py"):
        assert f"sessionkeeper_client/_gen/sessionkeeper/v1/{stub}" in names
    assert "sessionkeeper_client/py.typed" in names
    assert not any(n.startswith("sessionkeeper/") for n in names), "no top-level 'sessionkeeper' package"
    built = declared_ranges(re.findall(r"^Requires-Dist: (.*)$", metadata, re.M))
    assert built == declared_ranges(requires("sessionkeeper-client") or []), "the wheel declares the same ranges"
    assert f"GRPC_GENERATED_VERSION = '{generator_versions()['grpcio']}'" in grpc_stub
    assert sessionkeeper_client.__version__ in wheel.name


def test_the_package_and_its_session_store_import_without_the_agent_sdk() -> None:
    """claude_agent_sdk is optional: importing the package, building the store and an empty append
    never import it (only a fold, in a non-empty append, does)."""
    code = """
import asyncio, importlib.abc, sys

class NoSdk(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "claude_agent_sdk" or name.startswith("claude_agent_sdk."):
            raise ImportError("claude_agent_sdk is not installed here")
        return None

sys.meta_path.insert(0, NoSdk())
import sessionkeeper_client
store = sessionkeeper_client.SessionKeeperSessionStore("127.0.0.1:1", namespace="n")
asyncio.run(store.append({"project_key": "p", "session_id": "s"}, []))
assert "claude_agent_sdk" not in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
