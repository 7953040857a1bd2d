"""Per-request metric definitions (METRICS.md) on hand-built timestamp traces."""

from __future__ import annotations

import pytest

from benchflow.stats import request_metrics
from tests.stats.helpers import MS, failed, incomplete, ok


def test_ttft_e2e_tpot_itl_ntpot_follow_vllm_definitions():
    # sent at 1000 ms; output messages at +100, +120, +150, +200 ms; usage says 4 tokens
    m = request_metrics(ok(1, 1000, [1100, 1120, 1150, 1200], tokens=4, end_ms=1250))
    assert m.ttft_ns == 100 * MS
    assert m.e2e_ns == 200 * MS  # last output message, not stream close (1250)
    assert m.tpot_ns == pytest.approx((200 - 100) / 3 * MS)  # excludes the TTFT
    assert m.itl_ns == (20 * MS, 30 * MS, 50 * MS)
    assert m.ntpot_ns == pytest.approx(200 / 4 * MS)  # guidellm's "TPOT" includes the TTFT
    assert m.output_tokens == 4 and not m.tokens_estimated


def test_itl_is_per_message_when_a_message_carries_several_tokens():
    # 3 messages, the middle one carries 4 tokens: 6 tokens in total but only 2 gaps
    m = request_metrics(ok(1, 0, [50, 60, 90], tokens=6, chunk_tokens=[1, 4, 1]))
    assert m.itl_ns == (10 * MS, 30 * MS)
    assert m.tpot_ns == pytest.approx((90 - 50) / 5 * MS)  # tpot divides by tokens - 1, not messages
    assert m.output_tokens == 6


def test_single_token_request_has_no_tpot_and_no_itl():
    m = request_metrics(ok(1, 0, [40], tokens=1))
    assert m.tpot_ns is None
    assert m.itl_ns == ()
    assert m.ttft_ns == m.e2e_ns == 40 * MS
    assert m.itl_stat_ns("p99") is None


def test_without_usage_output_tokens_is_the_number_of_messages_and_flagged():
    m = request_metrics(ok(1, 0, [10, 20, 30], tokens=None))
    assert m.output_tokens == 3
    assert m.tokens_estimated
    assert m.tpot_ns == pytest.approx(10 * MS)


def test_failed_and_incomplete_requests_have_no_latency():
    assert request_metrics(failed(1, 0, 50)) is None
    assert request_metrics(incomplete(2, 0, [10, 20])) is None
    no_output = ok(3, 0, [], tokens=0)
    assert request_metrics(no_output) is None  # 2xx with no output message is not a success


def test_request_own_itl_percentile_and_mean():
    m = request_metrics(ok(1, 0, [10, 20, 40, 80], tokens=4))  # gaps 10, 20, 40
    assert m.itl_stat_ns("mean") == pytest.approx(70 / 3 * MS)
    assert m.itl_stat_ns("p50") == pytest.approx(20 * MS)
    assert m.itl_stat_ns("p99") == pytest.approx((20 + 0.98 * 20) * MS)  # linear interpolation
