"""publisher/_close_answer.py: which aiormq releases it wraps, and that it wraps once."""

from __future__ import annotations

import pytest
from aiormq.channel import Channel

from publisher._close_answer import CHECKED_UP_TO, _release, answer_every_channel_close


@pytest.mark.parametrize(
    ("text", "release"),
    [
        ("7.2.4", (7, 2, 4)),
        ("6.8.1", (6, 8, 1)),
        ("7.3.0rc1", (7, 3, 0)),
        ("7.2.5rc1", (7, 2, 5)),
        ("8", (8,)),
    ],
)
def test_a_version_reads_as_its_release(text: str, release: tuple[int, ...]) -> None:
    assert _release(text) == release


def test_a_prerelease_of_the_next_release_is_newer_than_the_last_checked() -> None:
    assert _release("7.2.5rc1") > CHECKED_UP_TO


def test_the_handler_is_wrapped_once_however_often_it_is_asked() -> None:
    answer_every_channel_close()
    wrapped = Channel._on_close_frame
    answer_every_channel_close()

    assert Channel._on_close_frame is wrapped
