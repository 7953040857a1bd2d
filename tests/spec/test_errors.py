"""Bad input: one clear "path: message" line per problem, every problem at once, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchflow.cli import main
from benchflow.errors import SpecError
from benchflow.spec import CampaignSpec, load_spec


def problems_of(source) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(source)
    return info.value.problems


def only_problem(source) -> str:
    problems = problems_of(source)
    assert len(problems) == 1, problems
    return problems[0]


def test_unknown_key_names_its_path_and_suggests(minimal):
    minimal["workload"]["max_request"] = 5
    assert only_problem(minimal) == "workload.max_request: unknown key (did you mean 'max_requests'?)"


def test_wrong_type(minimal):
    minimal["backends"][1]["engine_args"]["max-num-seqs"] = None
    line = only_problem(minimal)
    assert line.startswith("backends[1].engine_args.max-num-seqs: must be a boolean, number")


def test_wrong_scalar_type_shows_the_input(minimal):
    minimal["workload"]["temperature"] = "hot"
    line = only_problem(minimal)
    assert line.startswith("workload.temperature: ") and "'hot'" in line


@pytest.mark.parametrize("concurrency", [0, -4])
def test_non_positive_concurrency(minimal, concurrency):
    minimal["workload"]["load_points"][0] = {"concurrency": concurrency}
    assert only_problem(minimal) == f"workload.load_points[0].concurrency: must be > 0 (got {concurrency})"


def test_empty_load_points(minimal):
    minimal["workload"]["load_points"] = []
    assert only_problem(minimal).startswith("workload.load_points: must not be empty")


@pytest.mark.parametrize("dataset", ["D(100)", "N(1,2)", "U(5,1)/(1,2)", "X(1,2)", "D(1.5,2)"])
def test_malformed_distribution(minimal, dataset):
    minimal["workload"]["dataset"] = dataset
    line = only_problem(minimal)
    assert line.startswith("workload.dataset: ") and dataset in line


def test_rate_without_arrival(minimal):
    minimal["workload"]["load_points"][2] = {"rate": 5}
    line = only_problem(minimal)
    assert line.startswith("workload.load_points[2].arrival: required key is missing")
    assert "poisson, gamma or constant" in line


def test_load_point_that_is_not_a_mapping(minimal):
    minimal["workload"]["load_points"].append(16)
    assert only_problem(minimal).startswith("workload.load_points[3]: a load point is {concurrency: N}")


def test_duplicate_load_points(minimal):
    minimal["workload"]["load_points"].append({"concurrency": 8})
    assert "repeats load_points[1]" in only_problem(minimal)


def test_duplicate_backend_names(minimal):
    minimal["backends"][1]["name"] = "a"
    assert only_problem(minimal) == "backends[1].name: duplicate backend name 'a' (also backends[0])"


def test_yaml_syntax_error_gives_its_line(write_spec):
    path = write_spec("name: x\nworkload:\n  seed: 1\n   bad: [\n")
    line = only_problem(path)
    assert "line 4" in line and "YAML syntax error" in line


def test_yaml_duplicate_key_is_an_error(write_spec):
    line = only_problem(write_spec("name: x\nrepetitions: 1\nrepetitions: 3\n"))
    assert "duplicate key 'repetitions'" in line and "line 3" in line


def test_missing_file(tmp_path):
    assert only_problem(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"


def test_sim_needs_allow_simulated(minimal):
    minimal["backends"].append({"name": "sim", "kind": "sim"})
    assert only_problem(minimal) == (
        "backends[2].kind: sim backends are refused unless the spec sets allow_simulated: true")
    minimal["allow_simulated"] = True
    assert load_spec(minimal).backends[2].kind == "sim"


def test_slo_needs_units(minimal):
    minimal["slo"] = {"ttft": {"p99": 500}}
    line = only_problem(minimal)
    assert line.startswith("slo.ttft.p99: a unit is required")
    minimal["slo"] = {"ttft": {"p99": "500ms"}, "itl": {"p50": "0.02s"}}
    assert load_spec(minimal).slo == {"ttft": {"p99": 0.5}, "itl": {"p50": 0.02}}


def test_stop_condition_required(minimal):
    del minimal["workload"]["max_requests"]
    assert only_problem(minimal).startswith("workload: set max_requests and/or max_duration_s")


def test_unknown_backend_kind_and_missing_kind(minimal):
    minimal["backends"][0]["kind"] = "tgi"
    del minimal["backends"][1]["kind"]
    problems = problems_of(minimal)
    assert problems[0].startswith("backends[0].kind: unknown kind 'tgi'")
    assert problems[1].startswith("backends[1].kind: required key is missing")


def test_launcher_specific_fields(minimal):
    minimal["allow_simulated"] = True
    minimal["backends"] = [
        {"name": "sim", "kind": "sim", "shm_size": "16g"},
        {"name": "ext", "kind": "openai", "url": "http://127.0.0.1:9", "engine_args": {"x": 1}},
        {"name": "v", "kind": "vllm", "url": "http://127.0.0.1:9"},
        {"name": "noturl", "kind": "openai"},
    ]
    problems = problems_of(minimal)
    assert "backends[0].shm_size: only used with launcher docker (this backend's launcher is process)" in problems
    assert "backends[1].engine_args: not used by kind openai (the endpoint is already running)" in problems
    assert any(p.startswith("backends[2].url: only kind openai takes a url") for p in problems)
    assert "backends[3].url: required key is missing" in problems


def test_compare_checks(minimal):
    minimal["compare"] = {"baseline": "zzz", "metrics": ["ttft_ms.p99", "goodput", "ttft.p99"]}
    problems = problems_of(minimal)
    assert any(p.startswith("compare.metrics[2]: unknown summary metric 'ttft.p99'") for p in problems)
    assert "compare.baseline: no backend named 'zzz' (backends: a, b)" in problems
    assert "compare.metrics[1]: goodput needs an slo section" in problems


def test_every_problem_is_reported_at_once(minimal):
    minimal["colour"] = "red"
    minimal["backends"][1]["name"] = "a"
    minimal["backends"].append({"name": "s", "kind": "sim"})
    minimal["workload"]["load_points"][0] = {"concurrency": 0}
    minimal["workload"]["dataset"] = "N(1,2)"
    del minimal["workload"]["max_requests"]
    paths = {p.split(":")[0] for p in problems_of(minimal)}
    assert paths == {"colour", "backends[1].name", "backends[2].kind", "workload.load_points[0].concurrency",
                     "workload.dataset", "workload"}


def test_top_level_must_be_a_mapping(write_spec):
    assert only_problem(write_spec("- 1\n- 2\n")).startswith("(top level): expected a mapping")


def test_direct_construction_enforces_cross_field_rules(minimal):
    minimal["backends"][1]["name"] = "a"
    with pytest.raises(ValueError, match="duplicate backend name"):
        CampaignSpec.model_validate(minimal)


def test_validate_cli_exit_codes(write_spec, minimal, capsys):
    good = write_spec(minimal, "good.yaml")
    assert main(["validate", str(good)]) == 0
    assert "12 cells" in capsys.readouterr().out
    minimal["workload"]["load_points"][0] = {"concurrency": 0}
    bad = write_spec(minimal, "bad.yaml")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "workload.load_points[0].concurrency: must be > 0" in err and "Traceback" not in err


def test_validate_cli_lists_cells(write_spec, minimal, capsys):
    assert main(["validate", str(write_spec(minimal)), "--cells"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 + 12 and out[2].split()[2:4] == ["a", "c1"]


def test_validate_as_a_subprocess_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchflow", "validate", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_key_inside_a_backend(minimal):
    minimal["backends"][0]["engine_arg"] = {"max-num-seqs": 1}
    assert only_problem(minimal) == "backends[0].engine_arg: unknown key (did you mean 'engine_args'?)"


def test_validate_cli_json_output(write_spec, minimal, capsys):
    import json

    assert main(["validate", str(write_spec(minimal)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["content_hash"] == load_spec(minimal).content_hash()
    assert [c["id"] for c in out["cells"]] == [c.id for c in load_spec(minimal).cells()]


def test_relative_spec_path_names_the_directory_it_was_resolved_against(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "nope.yaml"]) == 2
    assert f"nope.yaml: file not found (relative to the current directory, {tmp_path})" in capsys.readouterr().err


@pytest.mark.parametrize("mutate", [
    lambda s: s["workload"]["load_points"].__setitem__(2, {"rate": 5, "arrival": "poisson", "burstiness": 2}),
    lambda s: s["workload"].__setitem__("dataset", "D(8"),
    lambda s: s["workload"].__setitem__("dataset", {"jsonl": 5}),
    lambda s: s["backends"].__setitem__(1, {"name": "b", "kind": "vllm", "gpus": 0}),
    lambda s: s["backends"].__setitem__(1, {"name": "a", "kind": "vllm"}),
    lambda s: s.__setitem__("compare", {"metrics": ["x.p99"]}),
    lambda s: s.__setitem__("model", 5),
    lambda s: s["workload"].__setitem__("max_requests", "many"),
])
def test_problems_name_the_specs_own_fields_never_pydantic_internals(minimal, mutate):
    mutate(minimal)
    for line in problems_of(minimal):
        path = line.split(": ", 1)[0]
        assert "function-" not in line and "CampaignSpec" not in line and "tagged-union" not in line, line
        assert "<class" not in line and "instance of" not in line, line
        assert all(part.isidentifier() or part.replace("-", "_").isidentifier() or part.strip("[]0123456789") == ""
                   for part in path.replace("[", ".[").split(".") if part), line


def test_dataset_notation_error_names_the_dataset_field(minimal):
    minimal["workload"]["dataset"] = "D(8"
    assert only_problem(minimal).startswith("workload.dataset: malformed distribution 'D(8'")


def test_validate_json_hides_secret_looking_values(write_spec, minimal, capsys):
    import json

    minimal["backends"][0].update(env={"HF_TOKEN": "hf_s3cret_env", "OMP_NUM_THREADS": "4"},
                                  engine_args={"api-key": "sk-s3cret-arg", "max-num-seqs": 64},
                                  command=["vllm", "serve", "m", "--api-key", "sk-s3cret-flag"])
    assert main(["validate", str(write_spec(minimal)), "--json"]) == 0
    text = capsys.readouterr().out
    assert "s3cret" not in text
    backend = json.loads(text)["spec"]["backends"][0]
    assert backend["env"]["OMP_NUM_THREADS"] == "4" and backend["engine_args"]["max-num-seqs"] == 64


def test_validate_json_hides_url_passwords(write_spec, minimal, capsys):
    minimal["backends"][0] = {"name": "a", "kind": "openai", "url": "http://user:s3cret@127.0.0.1:9"}
    assert main(["validate", str(write_spec(minimal)), "--json"]) == 0
    assert "s3cret" not in capsys.readouterr().out


def test_type_errors_in_plain_words(minimal):
    minimal["model"] = 5
    minimal["workload"]["dataset"] = {"jsonl": 5}
    assert problems_of(minimal) == ["model: expected a mapping of keys (got 5)",
                                    "workload.dataset.jsonl: expected a file path (got 5)"]


def test_validate_counts_the_cells_a_sweep_and_a_search_derive_at_run_time(capsys):
    """The summary line's arithmetic holds for dynamic load points (it used to print 10 cells as the
    product 1 x 4 x 3)."""
    from pathlib import Path

    spec = Path(__file__).resolve().parents[2] / "deployments" / "campaigns" / "sweep.yaml"
    assert main(["validate", str(spec)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    # 2 fixed load points x 3 repetitions + (4 points + 2) x 3 repetitions + 24 probes = 48
    assert "up to 48 cells" in line and "sweep4 up to 18" in line and "slocap up to 24" in line, line
