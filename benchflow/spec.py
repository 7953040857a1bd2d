"""Campaign spec models (pydantic v2, strict). STUB: being written; load point models are final."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConcurrencyLoad(_Strict):
    """Closed loop: ``concurrency`` workers, each sends its next request when the previous ends."""

    concurrency: int = Field(..., gt=0, description="number of concurrent closed-loop workers")

    @property
    def mode(self) -> str:
        return "closed"

    @property
    def label(self) -> str:
        return f"c{self.concurrency}"


class RateLoad(_Strict):
    """Open loop: requests sent on a pre-computed schedule of ``rate`` requests per second."""

    rate: float = Field(..., gt=0, description="target request rate (requests/s)")
    arrival: Literal["poisson", "gamma", "constant"] = Field(..., description="inter-arrival distribution")
    burstiness: float = Field(1.0, gt=0, description="gamma shape; 1.0 equals poisson, <1 burstier")
    max_concurrency: int | None = Field(None, gt=0, description="optional cap on requests in flight")

    @property
    def mode(self) -> str:
        return "open"

    @property
    def label(self) -> str:
        rate = f"{self.rate:g}"
        return f"r{rate}-{self.arrival}" + (f"-cap{self.max_concurrency}" if self.max_concurrency else "")


LoadPoint = Annotated[Union[ConcurrencyLoad, RateLoad], Field(union_mode="left_to_right")]
