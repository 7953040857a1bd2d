"""Fakes for the parts that cannot exist on development and CI machines (the GPU and NVML).

Each fake implements the same interface as the real thing and says it is a fake.
"""

from benchflow.testing.fake_nvml import SCENARIOS, FakeDevice, FakeNvml, fake_scenario

__all__ = ["SCENARIOS", "FakeDevice", "FakeNvml", "fake_scenario"]
