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
