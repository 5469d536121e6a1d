from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.client.trace_samples import sample_trace

pytest.importorskip("matplotlib", reason="PNG rendering needs the `render` extra (matplotlib)")

from matplotlib.image import imread  # noqa: E402

from rnn_sentiment.client.render_png import trace_png  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pixels(data: bytes):  # type: ignore[no-untyped-def]
    assert data.startswith(PNG_SIGNATURE)
    return imread(io.BytesIO(data), format="png")  # [H, W, 4] floats in [0, 1]


def test_png_is_a_real_picture_with_every_row():
    pixels = _pixels(trace_png(sample_trace(units=16)))
    height, width = pixels.shape[:2]
    assert width > 500 and height > 700  # five rows stacked
    rgb = pixels[..., :3]
    # Not blank: many distinct colours, including the unit colours and the sentiment blue.
    assert rgb.std() > 0.1
    assert len({tuple(p) for p in (rgb.reshape(-1, 3)[::7] * 255).round().astype(int).tolist()}) > 50


def test_compare_draws_two_columns_and_traces_without_hidden_states_still_draw():
    single = _pixels(trace_png(sample_trace()))
    both = _pixels(trace_png([sample_trace(), sample_trace(cell="rnn", model="sst2-rnn")]))
    assert both.shape[1] > 1.8 * single.shape[1]
    bare = _pixels(trace_png(sample_trace(hidden=False, attributions=False, memory=False)))
    assert bare.shape[0] < single.shape[0]  # fewer rows: no attribution, memory or heatmap


def test_no_traces_is_an_error():
    with pytest.raises(ValueError, match="at least one trace"):
        trace_png([])


def test_matplotlib_is_imported_only_when_a_png_is_drawn_and_torch_never():
    code = ("import sys, rnn_sentiment.client, rnn_sentiment.client.render, rnn_sentiment.client.render_html, "
            "rnn_sentiment.client.render_png\nprint('matplotlib' in sys.modules, 'torch' in sys.modules)\n"
            "from tests.unit.client.trace_samples import sample_trace\n"
            "rnn_sentiment.client.render_png.trace_png(sample_trace())\n"
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3]).stdout
    assert out.split() == ["False", "False", "True", "False"]
