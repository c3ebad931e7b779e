"""The lag sampler on real servers, the latency experiment, and the figures."""
from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from lab import lag, proxy, workload
from lab.errors import LabError

pytestmark = pytest.mark.integration


def test_sampler_records_every_replica_until_stopped(cluster):
    with lag.LagSampler(cluster, every=0.05, duration=30) as s:
        s.phase = "writing"
        workload.Writer(cluster.primary, rate=200, duration=0.6).run()
    df = s.frame()
    assert not s.running and s.error is None
    assert set(df["replica"]) == {"replica1"}
    assert len(df) >= 5
    assert (df["phase"] == "writing").any()
    assert (df["state"] == "streaming").all()
    assert df["behind_bytes"].notna().all() and (df["behind_bytes"] >= 0).all()
    assert df["t"].is_monotonic_increasing


def test_lag_grows_with_added_latency_and_the_cut_is_caught_up(cluster):
    df = lag.lag_under_latency(cluster, "replica1", latencies=(0, 60), seconds=1.2, cut_seconds=0.8,
                               rate=300, live=False, quiet=True)
    s = lag.phase_summary(df).set_index("phase")
    # replay_lag is a round trip: with 60 ms each way it cannot be under 120 ms
    assert s.loc["+60 ms", "replay_lag_ms_median"] >= 120
    assert s.loc["+60 ms", "behind_bytes_median"] > s.loc["+0 ms", "behind_bytes_median"]
    assert s.loc["+60 ms", "added_round_trip_ms"] == 120 and s.loc["+0 ms", "added_round_trip_ms"] == 0
    assert abs(s.loc["+60 ms", "replay_lag_per_round_trip"] - s.loc["+60 ms", "replay_lag_ms_median"] / 120) <= 0.01
    assert pd.isna(s.loc["link cut", "added_round_trip_ms"]) and pd.isna(s.loc["+0 ms", "replay_lag_per_round_trip"])
    assert df.attrs["behind_at_heal"] > 0
    assert df.attrs["catch_up_s"] is not None
    assert proxy.link(cluster, "replica1") is None       # put back on the primary
    assert isinstance(lag.lag_figure(df), Figure)


def test_an_interrupted_run_ends_in_one_line_and_older_samples_are_refused(cluster, monkeypatch):
    from lab.errors import Interrupted
    first = lag.lag_under_latency(cluster, "replica1", latencies=(0,), seconds=0.3, cut_seconds=0,
                                  rate=100, live=False, quiet=True)
    lag.phase_summary(first)  # a finished run: fine

    def interrupt(*_a, **_k):  # Kernel › Interrupt while a latency step is held
        raise KeyboardInterrupt
    monkeypatch.setattr(lag, "_hold", interrupt)
    with pytest.raises(Interrupted) as e:
        lag.lag_under_latency(cluster, "replica1", latencies=(0, 20), seconds=0.3, cut_seconds=0,
                              rate=100, live=False, quiet=True)
    assert str(e.value).startswith("lag_under_latency interrupted after") and "put back:" in str(e.value)
    assert proxy.link(cluster, "replica1") is None      # its own finally unrouted the replica
    with pytest.raises(LabError, match="these samples come from the lag_under_latency that finished at"):
        lag.phase_summary(first)


def test_phase_spans_and_errors():
    df = pd.DataFrame({"phase": ["a", "a", "b", "a"], "t": [0.0, 1.0, 2.0, 3.0]})
    assert lag.phase_spans(df) == [("a", 0.0, 1.0), ("b", 2.0, 2.0), ("a", 3.0, 3.0)]
    with pytest.raises(LabError):
        lag.lag_figure(None)
    with pytest.raises(LabError):
        lag.LagSampler(object(), every=0)
    assert isinstance(lag.lag_figure(pd.DataFrame(columns=lag.COLUMNS)), Figure)
