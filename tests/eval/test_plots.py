"""The figures carry their numbers: value labels on every bar (an all-zero run is not an empty plot),
n and 95% CIs where accuracy is shown, and heatmap titles that do not repeat the axis labels."""

import importlib.util

import pytest

from eval import plots
from tests.conftest import ROOT


def _group(correct: int, n: int) -> dict:
    return {"accuracy": correct / n, "n": n, "correct": correct, "ci95": [max(0, correct - 2) / n, min(n, correct + 2) / n]}


def _metrics(cells: dict) -> dict:
    correct, n = sum(c for c, _ in cells.values()), sum(k for _, k in cells.values())
    return {"overall": _group(correct, n), "by_modality": {m: _group(c, k) for m, (c, k) in cells.items()},
            "by_question_type": {"Modality Recognition": _group(correct, n)}}


@pytest.fixture()
def figures(monkeypatch):
    saved = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (saved.append(fig), real(fig, path))[1])
    return saved


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]


def test_accuracy_bars_label_every_bar_with_n_even_at_zero(tmp_path, figures):
    plots.accuracy_bars(_metrics({"CT": (0, 10), "MRI": (0, 12)}), tmp_path / "a.png")
    texts = _texts(figures[0])
    assert "0.0% (n=10)" in texts and "0.0% (n=12)" in texts
    assert any("overall 0.0% (n=22, 95% CI" in t for t in texts)


def test_grouped_bars_show_values_n_and_cis(tmp_path, figures):
    plots.grouped_bars(["base", "grpo"], [_metrics({"CT": (0, 10)}), _metrics({"CT": (7, 10)})], tmp_path / "g.png")
    ax = figures[0].axes[0]
    assert [t.get_text() for t in ax.texts].count("0") == 2  # base's zero bars are labelled, not invisible
    assert "CT (n=10)" in [t.get_text() for t in ax.get_xticklabels()]
    assert ax.containers and any(c.has_yerr for c in ax.containers if hasattr(c, "has_yerr"))


def test_heatmap_title_does_not_repeat_the_axis_labels(tmp_path, figures):
    plots.heatmap([[1.0, -2.0]], ["CT"], ["CT", "MRI"], tmp_path / "h.png", "gain over the base model (points)",
                  diverging=True, xlabel="tested on (modality)", ylabel="trained on (modality)")
    ax = figures[0].axes[0]
    assert "trained on" not in ax.get_title() and "tested on" not in ax.get_title()
    assert [t.get_text() for t in ax.texts] == ["+1.0", "-2.0"]


def test_demo_per_modality_bars_are_labelled_with_cis_and_n():
    spec = importlib.util.spec_from_file_location("demo_report", ROOT / "scripts" / "demo_report.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    runs = {"base": _metrics({"CT": (0, 40), "X-Ray": (0, 60)}), "grpo": _metrics({"CT": (30, 40), "X-Ray": (0, 60)})}
    table, _ = demo.comparison(runs, None)
    fig = demo.modality_figure(table, None, runs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("0") == 3 and "75" in labels  # every bar has its value, zeros included
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CT\nn=40", "X-Ray\nn=60"]
    assert any(c.has_yerr for c in ax.containers if hasattr(c, "has_yerr"))
    assert "95% CI" in ax.get_ylabel()
