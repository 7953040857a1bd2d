"""The campaign spec: models, backends, types, limits, cross-field checks, error messages, loader.

Modules, lowest first (no module imports one above it): ``types`` and ``limits``; ``backends``;
``checks`` (rules over several fields, on the typed model); ``models`` (the campaign and its
parts, expansion into cells); ``errors`` (pydantic errors as ``"path: message"`` lines);
``reader`` (bounded YAML/JSON reading); ``loader`` (``load_spec``, ``check``).
"""

from benchflow.spec.backends import (
    BACKEND_CLASSES, BACKEND_KINDS, DEFAULT_LAUNCHER, DOCKER_ONLY_FIELDS, LAUNCHED_ONLY_FIELDS, Backend,
    BackendSpec, OpenAIBackend, SglangBackend, SimBackend, VllmBackend, render_engine_args,
)
from benchflow.spec.checks import cross_field_problems
from benchflow.spec.errors import format_loc, format_validation_error
from benchflow.spec.loader import check, load_spec
from benchflow.spec.models import (
    SLO_METRICS, SLO_STATS, SUMMARY_DISTRIBUTIONS, SUMMARY_SCALARS, SUMMARY_STATS, CampaignSpec, Cell,
    CompareSpec, ConcurrencyLoad, HealthPolicy, JsonlSource, LimitsSpec, LoadPoint, ModelSpec, RateLoad,
    RegressionSpec, SummaryMetric, WorkloadSpec,
)
from benchflow.spec.reader import raw_problems, read_spec_file
from benchflow.spec.types import Seconds, SloSeconds, StrictModel, canonical_json, sha256_hex

__all__ = [
    "CampaignSpec", "ModelSpec", "WorkloadSpec", "JsonlSource", "LimitsSpec", "CompareSpec", "HealthPolicy",
    "RegressionSpec", "ConcurrencyLoad", "RateLoad", "LoadPoint", "Cell",
    "BackendSpec", "VllmBackend", "SglangBackend", "SimBackend", "OpenAIBackend", "Backend", "render_engine_args",
    "BACKEND_KINDS", "BACKEND_CLASSES", "DEFAULT_LAUNCHER", "DOCKER_ONLY_FIELDS", "LAUNCHED_ONLY_FIELDS",
    "SUMMARY_DISTRIBUTIONS", "SUMMARY_STATS", "SUMMARY_SCALARS", "SLO_METRICS", "SLO_STATS", "SummaryMetric",
    "StrictModel", "Seconds", "SloSeconds", "canonical_json", "sha256_hex",
    "load_spec", "check", "cross_field_problems", "format_loc", "format_validation_error", "raw_problems",
    "read_spec_file",
]
