"""The HTML trace opens in a real browser (Debian's chromium, headless) and draws something."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rnn_sentiment.client import SentimentClient
from rnn_sentiment.client.render_html import trace_html
from rnn_sentiment.client.trace_layout import POSITIVE_RGB, NEGATIVE_RGB

CHROMIUM = Path("/usr/bin/chromium")
MEMORY_BAR_RGB = (94, 60, 153)  # render_html draws memory bars in #5e3c99


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs Debian's chromium (/usr/bin/chromium); `make test` installs it as root")
def test_html_trace_renders_in_headless_chromium(client: SentimentClient, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="reading the screenshot needs the `render` extra")
    from matplotlib.image import imread

    names = [m.name for m in client.list_models()]
    traces = [client.trace("it 's not a bad film at all , but the plot is thin", model=name,
                           attributions=["integrated_gradients"], include_memory_profile=True, top_k_units=32)
              for name in (names[0], names[-1])]
    page = tmp_path / "trace.html"
    page.write_text(trace_html(traces), encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1600,1200", f"--screenshot={shot}",
         page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)  # [H, W, 3]
    assert pixels.shape[:2] == (1200, 1600)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::5].tolist()}
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    non_white = (pixels.min(axis=-1) < 240).mean()
    assert non_white > 0.05
    assert MEMORY_BAR_RGB in colours  # the SVG was drawn, not only the text
    assert POSITIVE_RGB in colours or NEGATIVE_RGB in colours  # the attribution bars
