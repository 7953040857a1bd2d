"""benchflow: LLM-inference benchmark campaigns and engine-flag autotuning.

The library never imports Prefect; orchestration lives in ``tasks/`` and ``flows/``.
"""

__version__ = "0.1.0"

#: Version of every stored result's shape (summaries, rows, artifacts).
SCHEMA_VERSION = 1
