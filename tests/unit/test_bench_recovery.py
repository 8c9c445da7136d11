"""`sluice bench recovery`'s verdict: refusals after the overload's end count against the 2 s bound, refusals
during it do not, and queued (slow but served) requests are not refusals."""

from __future__ import annotations

from services.bench.recovery import Sent, summarize


def test_refusals_during_the_overload_do_not_count_and_late_ones_break_the_bound() -> None:
    sent = [Sent("overload", 1.0, 503), Sent("overload", 2.0, 200, 900.0),
            Sent("after", 10.1, 503), Sent("after", 10.2, 200, 1500.0), Sent("after", 11.0, 200, 40.0)]
    report = summarize(sent, ended=10.0)
    assert report["overload"]["statuses"] == {"503": 1, "200": 1}
    assert report["after_refused"] == 1 and report["last_refusal_after_overload_end_s"] == 0.1
    assert report["meets_2s_bound"]
    late = summarize([*sent, Sent("after", 12.5, 429)], ended=10.0)
    assert late["after_refused"] == 2 and late["last_refusal_after_overload_end_s"] == 2.5
    assert not late["meets_2s_bound"]


def test_no_refusal_after_the_overload() -> None:
    report = summarize([Sent("after", 10.3, 200, 120.0)], ended=10.0)
    assert report["after_refused"] == 0 and report["last_refusal_after_overload_end_s"] is None
    assert report["meets_2s_bound"] and report["after"]["ttft_ms_p50"] == 120.0
