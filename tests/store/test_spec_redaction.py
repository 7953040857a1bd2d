"""Secrets written into a spec (env, engine args, command flags) are never stored in plain text."""

from __future__ import annotations

import json

from benchflow.redact import redact_command, redact_spec
from benchflow.spec import load_spec
from benchflow.store import rows

SECRET = "hf_sekret_value_123"


def _spec():
    return load_spec({
        "name": "s", "allow_simulated": True, "model": "m",
        "backends": [
            {"name": "v", "kind": "vllm", "env": {"HF_TOKEN": SECRET, "VLLM_LOGGING_LEVEL": "DEBUG"},
             "engine_args": {"api-key": SECRET, "max-num-seqs": 8}},
            {"name": "p", "kind": "sim", "command": ["serve", "--api-key", SECRET, "--port", "{port}"]},
        ],
        "workload": {"dataset": "D(8,8)", "load_points": [{"concurrency": 1}], "max_requests": 1},
    })


def test_stored_campaign_and_backend_rows_hide_secret_values():
    spec = _spec()
    campaign = rows.campaign_fields_from_spec(spec)
    backends = rows.backend_rows_from_spec(spec)
    text = json.dumps(campaign, default=str) + json.dumps(backends, default=str)
    assert SECRET not in text
    assert campaign["spec"]["backends"][0]["env"] == {"HF_TOKEN": "***", "VLLM_LOGGING_LEVEL": "DEBUG"}
    assert backends[0]["engine_args"]["max-num-seqs"] == 8, "ordinary values are kept"
    assert campaign["spec_hash"] == spec.content_hash(), "the hash still identifies the real spec"


def test_redaction_keeps_flag_shapes():
    assert redact_command(["--api-key", "x", "--api-key=y", "--engine-arg", "api-key=z", "--port", "1"]) == [
        "--api-key", "***", "--api-key=***", "--engine-arg", "api-key=***", "--port", "1"]
    assert redact_spec({"name": "n"}) == {"name": "n"}
