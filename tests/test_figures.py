"""The figures read right: axis labels that say something, points that are not drawn as curves,
labels inside the plot. Each figure is drawn for real (Agg) and its artists inspected."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from simprec import formats  # noqa: E402
from simprec.analysis import figures  # noqa: E402
from simprec.analysis.recorder import BIN_ZERO, EXPONENTS  # noqa: E402


@pytest.fixture
def drawn(monkeypatch):
    """The figures drawn during the test, laid out and rendered, instead of being saved."""
    made = []

    def keep(fig, path, note=None):
        fig.tight_layout()
        fig.canvas.draw()
        made.append(fig)
        return path

    monkeypatch.setattr(figures, "_save", keep)
    yield made
    import matplotlib.pyplot as plt

    for fig in made:
        plt.close(fig)


def _tick_texts(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_a_loss_scale_that_never_changes_has_one_label_per_power_of_two(drawn, tmp_path):
    steps = list(range(1, 201))
    figures.scale_trace(tmp_path / "s.png", {"run": {"steps": steps, "scale": [65536.0] * 200,
                                                     "skipped": [False] * 200}})
    ax = drawn[0].axes[0]
    labels = _tick_texts(ax.yaxis)
    assert len(labels) == len(set(labels)) >= 2  # once: 2^15, 2^16, 2^17; not 2^16 five times
    assert "$2^{16}$" in labels
    low, high = ax.get_ylim()
    assert low < 16 < high


def test_a_changing_loss_scale_is_labelled_at_whole_powers(drawn, tmp_path):
    scale = [2.0 ** 16] * 50 + [2.0 ** 15] * 50 + [2.0 ** 3] * 50
    figures.scale_trace(tmp_path / "s.png", {"run": {"steps": list(range(150)), "scale": scale,
                                                     "skipped": [False] * 150}})
    labels = _tick_texts(drawn[0].axes[0].yaxis)
    assert len(labels) == len(set(labels)) >= 3
    assert all(label.startswith("$2^{") for label in labels)


def test_two_evaluations_are_points_not_a_line(drawn, tmp_path):
    run = {"steps": list(range(1, 101)), "loss": list(np.linspace(2.0, 0.1, 100)),
           "eval_steps": [0, 100], "eval": [0.09, 0.92]}
    figures.loss_curves(tmp_path / "l.png", {"run": run})
    evaluation = drawn[0].axes[1]
    (line,) = evaluation.get_lines()
    assert line.get_linewidth() == 0 and line.get_marker() == "o"
    assert {t.get_text() for t in evaluation.texts} == {"9", "92"}  # the values, in %
    assert evaluation.get_xlim() == drawn[0].axes[0].get_xlim()  # the same step axis


def test_three_evaluations_are_a_curve(drawn, tmp_path):
    run = {"steps": [1, 2, 3], "loss": [2.0, 1.0, 0.5], "eval_steps": [0, 50, 100],
           "eval": [0.1, 0.8, 0.9]}
    figures.loss_curves(tmp_path / "l.png", {"run": run})
    (line,) = drawn[0].axes[1].get_lines()
    assert line.get_linewidth() > 0


def test_a_language_model_report_gives_its_loss_in_nats_per_character(drawn, tmp_path):
    from simprec.analysis.report import write_report

    run = tmp_path / "gpt"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "gpt", "data": "text"}))
    lines = [{"kind": "train", "step": s, "loss": 4.0 - s / 100} for s in range(1, 101)]
    lines += [{"kind": "eval", "step": s, "split": "val", "loss": 4.0 - s / 90}
              for s in (0, 50, 100)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    write_report(run, figures_on=True)
    left, right = drawn[0].axes
    assert "nats/char" in left.get_ylabel() and "nats/char" in right.get_ylabel()


def test_the_format_range_labels_fit_inside_the_plot(drawn, tmp_path):
    h = np.zeros(len(EXPONENTS) + 4, dtype=np.int64)
    h[BIN_ZERO] = 10
    h[np.searchsorted(EXPONENTS, -30):np.searchsorted(EXPONENTS, 10)] = 100
    figures.exponent_histogram(tmp_path / "h.png", {"grads": h}, formats.fp16, title="t")
    fig = drawn[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text().startswith("fp16")]
    assert {t.get_text().split("\n")[1] for t in labels} == {"lost", "subnormal", "normal",
                                                             "overflow"}
    for text in labels:
        box = text.get_window_extent(renderer)
        assert frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1, text.get_text()
    names = {t.get_text().split("\n")[1]: t.get_window_extent(renderer) for t in labels}
    first_overflow = figures.format_ranges(formats.fp16)["overflow"][0]  # 2^16
    overflow_start = ax.transData.transform((first_overflow - 0.5, 0))[0]
    assert names["overflow"].x0 >= overflow_start - 1  # inside its own (grey) range
