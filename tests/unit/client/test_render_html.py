from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from rnn_sentiment.client.render_html import trace_html
from tests.unit.client.trace_samples import TOKENS, sample_trace

SVG = "{http://www.w3.org/2000/svg}"


class _Collect(HTMLParser):
    """Every start tag with its attributes, and whether the tags balance."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))
        if tag not in ("meta", "br", "img", "link", "input"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(chunk) for chunk in re.findall(r"<svg.*?</svg>", page, re.S)]


def test_page_is_self_contained_and_well_formed():
    page = trace_html(sample_trace())
    parser = _Collect()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    for _, attrs in parser.tags:
        for key, value in attrs.items():
            assert key not in ("src", "href"), f"{key}={value} would need the network"
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]  # the SVG namespace only
    assert len(_svgs(page)) == 1


def test_words_are_escaped_and_every_heatmap_cell_hovers_its_value():
    trace = sample_trace(units=6)
    page = trace_html(trace)
    assert "<b>bad</b>" not in page and "&lt;b&gt;bad&lt;/b&gt;" in page
    (svg,) = _svgs(page)
    titles = [t.text or "" for t in svg.iter(f"{SVG}title")]
    cells = [t for t in titles if t.startswith("unit ")]
    assert len(cells) == 6 * len(TOKENS)
    value = trace.steps[4].hidden_state[3]
    assert f"unit 3 after “<b>bad</b>”: {value:+.3f}" in cells
    # Each word's hover lists its values, attributions and gates.
    words = [t for t in titles if t.startswith("film\n")]
    assert words and "integrated gradients +0.2000" in words[0] and "update 0.550" in words[0]


def test_compare_lines_up_rows_and_marks_what_a_trace_lacks():
    page = trace_html([sample_trace(), sample_trace(cell="rnn", model="sst2-rnn", attributions=False)])
    first, second = _svgs(page)
    assert first.get("height") == second.get("height")  # same rows, same heights
    assert "no gates: a plain RNN rewrites its whole state at every word" in page
    assert "no attribution asked for" in page
    assert page.count("<section class=\"trace\">") == 2


def test_no_traces_is_an_error():
    with pytest.raises(ValueError, match="at least one trace"):
        trace_html([])
