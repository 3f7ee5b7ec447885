"""The chart's duration schema against the binary's own duration parser, both ways: every sample
is given to the binary in the form the chart passes that value (a flag, or a key of the policy
file), and values.schema.json must accept exactly the samples the binary accepts. One documented
difference: policy.sweepInterval must be at least 1s, which the schema approximates by refusing
sub-second units and "0.x s" (so it refuses "1500ms", which the binary takes)."""

from __future__ import annotations

import copy
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from .common import CHART, R, run_binary

SAMPLES = [
    "1s", "500ms", "1.5s", "0.5s", "24h", "7days", "1h30m", "1h 30m", "1 h", "1  h", " 1h", "1h ", "2hr", "3mins",
    "1M", "1y", "1d", "1w", "1µs", "1us", "1nsec", "10msec", "2millis", "2nanos", "1500ms",
    "0s", "00s", "0h 0m", "0.0s",
    "5 parsecs", "1H", "1x", "-1s", "s", "1s5", "1h,30m", "1e3s", "1_000s", "1.s", ".5s", "1m30", "", "1msecs",
    "2nsecs", "2micros", "5", "30days",
]
SUB_SECOND = {"500ms", "1µs", "1us", "1nsec", "10msec", "2millis", "2nanos", "1500ms"}
# A grace period of more than 30 days: the binary refuses it (a grace is for a late retry, not an
# archive); the schema's duration pattern cannot count days, so the chart lets it through to the pod.
OVER_30_DAYS = {"1M", "1y"}


def _oracle(binary: Path, field: str, value: str, scratch: Path) -> tuple[bool, str]:
    """(accepted, the binary's error) for `value` in `field`, the way the chart hands it over."""
    if field == "policy.tombstoneTtl" and value == "":
        return True, ""  # empty: the chart writes no tombstone_ttl (each agent's TTL)
    if field.startswith("policy."):
        key = {"policy.defaultTtl": ("policy", "default_ttl"), "policy.sweepInterval": ("policy", "sweep_interval"),
               "policy.tombstoneTtl": ("policy", "tombstone_ttl"),
               "policy.transcriptGrace": ("policy", "transcript_grace"),
               "policy.agents.*.ttl": ("policy.agents.reviewer", "ttl")}[field]
        with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=scratch, delete=False) as f:
            f.write(f"[{key[0]}]\n{key[1]} = {json.dumps(value)}\n")
        proc = run_binary(binary, "classify", "--config", f.name, stdin="{}")
        return proc.returncode == 0, proc.stderr.strip()
    flag = {"database.acquireTimeout": "db-acquire-timeout", "database.lockTimeout": "db-lock-timeout",
            "database.statementTimeout": "db-statement-timeout", "server.maxConnectionAge": "max-connection-age"}[field]
    if field == "server.maxConnectionAge":  # a `serve` setting: the parser decides (serve takes any parsed value)
        proc = run_binary(binary, "serve", f"--{flag}={value}", "--help")
    else:  # `migrate` validates the database settings (on a scratch embedded store)
        data = Path(tempfile.mkdtemp(dir=scratch))  # one embedded store per run: one process per data dir
        proc = run_binary(binary, "migrate", f"--data-dir={data}", f"--{flag}={value}")
        if proc.returncode != 0 and (proc.stderr.startswith("error: store error") or "panicked" in proc.stderr):
            # Validation passed; opening the store failed (see CRASHES in check_durations).
            return True, "STORE: " + proc.stderr.strip()
    return proc.returncode == 0, proc.stderr.strip()


def _values_with(defaults: dict[str, Any], field: str, value: str) -> dict[str, Any]:
    values = copy.deepcopy(defaults)
    if field == "policy.agents.*.ttl":
        values["policy"]["agents"] = {"reviewer": {"ttl": value}}
    else:
        section, key = field.split(".")
        values[section][key] = value
    return values


def check_durations(binary: Path) -> None:
    import jsonschema  # noqa: PLC0415

    R.start("duration values: values.schema.json against the binary's parser (each sample, both ways)")
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    R.check(not list(validator.iter_errors(defaults)), "the default values pass the schema")
    fields = ["database.acquireTimeout", "database.lockTimeout", "database.statementTimeout", "server.maxConnectionAge",
              "policy.defaultTtl", "policy.sweepInterval", "policy.tombstoneTtl", "policy.transcriptGrace",
              "policy.agents.*.ttl"]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        jobs = [(f, s) for f in fields for s in SAMPLES if not (f == "server.maxConnectionAge" and s == "")]
        with ThreadPoolExecutor(max_workers=4) as pool:
            verdicts = list(pool.map(lambda fs: _oracle(binary, fs[0], fs[1], scratch), jobs))
    for field in fields:
        agree, known, wrong, store = 0, [], [], []
        for (f, sample), (binary_ok, err) in zip(jobs, verdicts, strict=True):
            if f != field:
                continue
            if err.startswith("STORE: "):
                store.append(sample)
            schema_ok = not list(validator.iter_errors(_values_with(defaults, field, sample)))
            if schema_ok == binary_ok:
                agree += 1
            elif field == "policy.sweepInterval" and sample in SUB_SECOND and binary_ok and not schema_ok:
                known.append(sample)
            elif field == "policy.transcriptGrace" and sample in OVER_30_DAYS and not binary_ok and schema_ok:
                known.append(sample)
            else:
                wrong.append(f"{sample!r}: binary {'accepts' if binary_ok else 'refuses (' + err[-120:] + ')'}, "
                             f"schema {'accepts' if schema_ok else 'refuses'}")
        R.check(not wrong, f"{field}: the schema agrees with the binary on {agree} samples"
                + (f" (differ by design, documented: {', '.join(known)})" if known else ""), "; ".join(wrong))
        if store:
            R.note(f"{field}: the binary's validation takes {', '.join(store)}, then the embedded store fails to open "
                   "(sqlx: a busy timeout of 2^31 ms or more panics; a microsecond one times out): a bug of the "
                   "binary's validation, reported; the schema follows the validation")
    bad = _values_with(defaults, "database.acquireTimeout", "5 parsecs")
    R.check(bool(list(validator.iter_errors(bad))), "values.schema.json refuses database.acquireTimeout \"5 parsecs\"")
