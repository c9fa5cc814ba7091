"""Token bytes -> text: UTF-8 split across tokens and stop strings split across tokens."""

from __future__ import annotations

from agents.inference.text import TextStream


def run(stream: TextStream, chunks: list[bytes]) -> list[str]:
    out = [stream.feed(c) for c in chunks]
    out.append(stream.finish())
    return out


def test_utf8_character_split_over_tokens() -> None:
    data = "héllo ✓".encode()
    stream = TextStream()
    pieces = run(stream, [data[i : i + 1] for i in range(len(data))])
    assert "".join(pieces) == "héllo ✓" == stream.text
    assert "\ufffd" not in "".join(pieces)


def test_stop_string_across_tokens_is_held_back_and_cut() -> None:
    stream = TextStream(["</end>"])
    pieces = run(stream, [b"abc </", b"en", b"d> tail"])
    assert pieces[0] == "abc "  # "</" might start the stop string: held back
    assert pieces[1] == ""
    assert stream.stopped and stream.text == "abc "
    assert "".join(pieces) == "abc "


def test_held_back_text_is_released_when_it_is_not_a_stop() -> None:
    stream = TextStream(["STOP"])
    pieces = run(stream, [b"one ST", b"ART two"])
    assert pieces[0] == "one "
    assert pieces[1] == "START two"
    assert not stream.stopped and stream.text == "one START two"


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["\n\n", "User:"])
    pieces = run(stream, [b"answer User: more\n\nx"])
    assert "".join(pieces) == "answer " and stream.stopped


def test_held_tail_is_flushed_at_the_end() -> None:
    stream = TextStream(["###"])
    pieces = run(stream, [b"done #"])
    assert pieces == ["done ", "#"] and stream.text == "done #"


# --- the stream is the result (issue 10, defect 2) ---

import itertools  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

TEXTS = st.text(alphabet=st.sampled_from([*"ab STOP\n✓é", "🙂", "👩", "\u200d", "\u202e"]), max_size=40)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, cuts=st.lists(st.integers(0, 200), max_size=12),
       stops=st.lists(st.sampled_from(["STOP", "\n\n", "🙂", "ab"]), max_size=2), drop=st.integers(0, 3))
def test_joined_pieces_always_equal_the_text(text: str, cuts: list[int], stops: list[str], drop: int) -> None:
    data = text.encode()
    data = data[: len(data) - drop] if drop else data  # generation may end mid-character
    stream = TextStream(stops)
    pieces = run(stream, chunked(data, cuts))
    assert "".join(pieces) == stream.text
    assert "\ufffd" not in stream.text  # an incomplete last character is dropped, not replaced
    assert not any(stop in stream.text for stop in stops)


def test_a_held_partial_stop_and_the_end_reach_the_stream() -> None:
    """The audit's case: the stream said `go ` while the result said `go ST�`."""
    stream = TextStream(["STOP"])
    pieces = run(stream, [b"go ", b"ST", "🙂".encode()[:2]])
    assert "".join(pieces) == stream.text == "go ST"
