"""Plot helpers draw on the Axes they are given and return it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hydralib import plotting  # noqa: E402


def test_helpers_return_the_axes_they_draw_on():
    with plotting.book_style():
        fig, axes = plt.subplots(1, 3)
        m = np.array([[1.0, 0.2], [0.2, 1.0]])
        assert plotting.heatmap(axes[0], m, ["a", "b"], title="sim") is axes[0]
        assert axes[0].get_title() == "sim" and len(axes[0].collections) >= 1
        assert [t.get_text() for t in axes[0].get_xticklabels()] == ["a", "b"]
        assert plotting.bars(axes[1], ["x", "y"], [3.0, 1.0], annotate="{:.1f}") is axes[1]
        assert len(axes[1].patches) == 2 and axes[1].texts[0].get_text() == "3.0"
        assert plotting.curves(axes[2], {"adam": [3, 2, 1]}, hline=0.5, hline_label="floor", logy=True) is axes[2]
        assert axes[2].get_yscale() == "log" and len(axes[2].lines) == 2
        plt.close(fig)


def test_style_is_scoped():
    before = matplotlib.rcParams["axes.spines.top"]
    with plotting.book_style():
        assert matplotlib.rcParams["axes.spines.top"] is False
    assert matplotlib.rcParams["axes.spines.top"] == before
