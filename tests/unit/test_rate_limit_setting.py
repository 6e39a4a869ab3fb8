"""BATCHOPS_RATE_LIMIT_SUBMIT / _READ: a limit of the `limits` library or `0` (off); anything
else stops the start with a line naming the setting."""

from __future__ import annotations

import pytest

from consumer.config import Settings
from consumer.entrypoints.cli import EXIT_BAD_INPUT, main
from consumer.rate_limit_setting import rate_limit


class TestReading:
    @pytest.mark.parametrize(
        ("value", "amount", "seconds"),
        [("30/minute", 30, 60), ("3/second", 3, 1), ("1000/hour", 1000, 3600), ("5/day", 5, 86400)],
    )
    def test_a_limit_is_n_per_period(self, value, amount, seconds):
        item = rate_limit(value)

        assert item is not None
        assert (item.amount, item.get_expiry()) == (amount, seconds)

    def test_zero_is_off(self):
        assert rate_limit("0") is None

    def test_the_defaults_are_60_submissions_and_600_reads_a_minute(self, monkeypatch):
        monkeypatch.delenv("BATCHOPS_RATE_LIMIT_SUBMIT", raising=False)
        monkeypatch.delenv("BATCHOPS_RATE_LIMIT_READ", raising=False)

        settings = Settings()

        assert (settings.rate_limit_submit, settings.rate_limit_read) == (
            "600/minute",
            "6000/minute",
        )


class TestRefusing:
    @pytest.mark.parametrize(
        ("value", "says"),
        [
            ("thirty", "is not a rate limit"),
            ("30", "is not a rate limit"),
            ("0/minute", "is not one limit of at least 1 request"),
            ("1/minute;10/hour", "is not one limit of at least 1 request"),
        ],
    )
    @pytest.mark.parametrize("variable", ["BATCHOPS_RATE_LIMIT_SUBMIT", "BATCHOPS_RATE_LIMIT_READ"])
    def test_a_bad_value_stops_the_start_with_a_line_naming_the_setting(
        self, monkeypatch, capsys, variable, value, says
    ):
        monkeypatch.setenv(variable, value)

        assert main(["api"]) == EXIT_BAD_INPUT

        error = capsys.readouterr().err
        assert error.startswith(f"batchops: invalid configuration: {variable}: {value!r} {says}")
        assert "or 0 to turn it off" in error
