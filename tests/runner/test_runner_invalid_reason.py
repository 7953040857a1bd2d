"""An error-rate invalid reason names the dominant server error (issue 11.8)."""

from benchflow.runner import with_dominant_error


def test_error_rate_reason_names_the_dominant_error():
    reason = with_dominant_error("error rate 50.0% exceeds the limit 5.0%",
                                 {"message": "500 simulated internal error", "count": 6, "failed": 6})
    assert reason == "error rate 50.0% exceeds the limit 5.0% (mostly '500 simulated internal error' ×6)"


def test_other_reasons_and_valid_cells_are_unchanged():
    dominant = {"message": "x", "count": 1, "failed": 1}
    assert with_dominant_error(None, dominant) is None
    assert with_dominant_error("client lag p99 80.0 ms exceeds 50 ms", dominant) == \
        "client lag p99 80.0 ms exceeds 50 ms"
    assert with_dominant_error("error rate 9.0% exceeds the limit 5.0%", None) == \
        "error rate 9.0% exceeds the limit 5.0%"
