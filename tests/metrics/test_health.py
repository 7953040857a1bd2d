"""Health verdicts on each fake-device case (the fake stands in for NVML: no GPU here)."""

from __future__ import annotations

import pytest

from benchflow.errors import NvmlError
from benchflow.metrics.health import GIB, HealthReport, check_health
from benchflow.testing.fake_nvml import SCENARIOS, FakeDevice, FakeNvml, fake_scenario


def failed(report: HealthReport) -> dict[int, set[str]]:
    """GPU index -> names of its failed checks."""
    return {d.index: {c.name for c in d.checks if not c.ok} for d in report.devices if not d.healthy}


def test_two_healthy_gpus_pass_every_check():
    fake = fake_scenario("healthy-2gpu")
    report = check_health(fake)
    assert report.healthy and report.reasons == []
    assert report.nvml_available and report.fake_nvml
    assert report.driver_version == "550.54.15" and report.cuda_version == "12.4"
    assert [d.uuid for d in report.devices] == ["GPU-fake-0000", "GPU-fake-0001"]
    names = {c.name for c in report.devices[0].checks}
    assert names == {"free_memory", "foreign_processes", "ecc_errors", "retired_pages", "row_remapping",
                     "temperature", "throttle_reasons"}
    assert report.devices[0].memory_total_bytes == 80 * GIB
    assert report.devices[0].temperature_c == 35
    assert not fake.initialized and fake.shutdown_calls == fake.init_calls == 1


@pytest.mark.parametrize(
    ("scenario", "gpu", "check"),
    [
        ("ecc", 1, "ecc_errors"),
        ("foreign", 1, "foreign_processes"),
        ("throttle", 1, "throttle_reasons"),
        ("hot", 1, "temperature"),
        ("lowmem", 0, "free_memory"),
        ("retired", 1, "retired_pages"),
        ("remap", 1, "row_remapping"),
        ("lost", 1, "device"),
    ],
)
def test_each_fault_fails_exactly_its_check_and_names_the_gpu(scenario, gpu, check):
    report = check_health(fake_scenario(scenario))
    assert not report.healthy
    assert failed(report) == {gpu: {check}}
    uuid = f"GPU-fake-000{gpu}"
    assert len(report.reasons) == 1
    reason = report.reasons[0]
    assert f"GPU {gpu}" in reason and check in reason
    if scenario != "lost":  # a lost GPU cannot tell its uuid
        assert uuid in reason


def test_reason_details_say_what_is_wrong():
    assert "3 volatile uncorrected ECC" in check_health(fake_scenario("ecc")).reasons[0]
    assert "pid 4242" in check_health(fake_scenario("foreign")).reasons[0]
    throttle = check_health(fake_scenario("throttle")).reasons[0]
    assert "hw_slowdown" in throttle and "hw_thermal_slowdown" in throttle
    remap = check_health(fake_scenario("remap")).reasons[0]
    assert "failed" in remap and "pending" in remap
    assert "92 C" in check_health(fake_scenario("hot")).reasons[0]


def test_no_driver_gives_an_nvml_unavailable_report_not_an_exception():
    report = check_health(fake_scenario("nodriver"))
    assert not report.healthy and not report.nvml_available
    assert report.error.startswith("NVML unavailable: ") and "Driver Not Loaded" in report.error
    assert report.reasons == [report.error]
    assert HealthReport.model_validate_json(report.to_json()) == report
    assert report.to_dict()["nvml_available"] is False


def test_unsupported_queries_are_notes_not_failures():
    report = check_health(fake_scenario("unsupported"))
    assert report.healthy, report.reasons
    notes = {c.name for c in report.devices[0].checks if not c.supported}
    assert notes == {"ecc_errors", "retired_pages", "row_remapping", "throttle_reasons"}
    assert all(c.detail == "not supported" for c in report.devices[0].checks if not c.supported)
    temp = next(c for c in report.devices[0].checks if c.name == "temperature")
    assert temp.ok and "threshold not supported" in temp.detail


def test_thresholds_and_policy_are_respected():
    assert check_health(fake_scenario("lowmem"), min_free_memory_bytes=0).healthy
    assert not check_health(fake_scenario("healthy-2gpu"), min_free_memory_bytes=100 * GIB).healthy
    assert check_health(fake_scenario("foreign"), allow_foreign_processes=True).healthy
    assert check_health(fake_scenario("foreign"), allowed_pids=[4242]).healthy
    assert not check_health(fake_scenario("foreign"), allowed_pids=[1]).healthy


def test_too_few_devices_is_unhealthy():
    report = check_health(fake_scenario("healthy-2gpu"), min_devices=3)
    assert not report.healthy
    assert report.reasons == ["found 2 usable GPU(s), need at least 3"]
    empty = check_health(FakeNvml([]))
    assert not empty.healthy and "need at least 1" in empty.reasons[0]


def test_devices_selects_which_gpus_are_checked():
    assert check_health(fake_scenario("ecc"), devices=[0]).healthy
    report = check_health(fake_scenario("ecc"), devices=[0, 5])
    assert not report.healthy and report.reasons == ["GPU 5 not present (2 GPU(s) found)"]
    assert [d.index for d in report.devices] == [0]


def test_transient_errors_raise_for_retry_and_nvml_is_released():
    fake = FakeNvml([FakeDevice()])
    fake.devices[0].errors["volatile_uncorrected_ecc_errors"] = NvmlError("Timeout", transient=True)
    with pytest.raises(NvmlError) as info:
        check_health(fake)
    assert info.value.transient
    assert not fake.initialized

    flaky_init = FakeNvml([FakeDevice()], init_error=NvmlError("Unknown Error", transient=True))
    with pytest.raises(NvmlError) as info:
        check_health(flaky_init)
    assert info.value.transient


def test_a_non_transient_query_error_is_a_failed_check():
    fake = FakeNvml([FakeDevice()])
    fake.devices[0].errors["compute_processes"] = NvmlError("Insufficient Permissions")
    report = check_health(fake)
    assert not report.healthy
    assert failed(report) == {0: {"foreign_processes"}}
    assert "Insufficient Permissions" in report.reasons[0]


def test_render_labels_the_fake_and_lists_reasons():
    text = check_health(fake_scenario("ecc")).render()
    first, *rest = text.splitlines()
    assert "FAKE NVML" in first
    assert "UNHEALTHY" in text and "[FAIL] ecc_errors" in text
    assert text.rstrip().endswith("GPU 1 (GPU-fake-0001): ecc_errors: 3 volatile uncorrected ECC error(s)")


def test_every_named_scenario_builds_and_is_labelled_fake():
    for name in SCENARIOS:
        fake = fake_scenario(name)
        assert fake.is_fake and "FAKE NVML" in fake.description
    with pytest.raises(ValueError, match="unknown fake NVML scenario"):
        fake_scenario("nope")
