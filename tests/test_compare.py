"""progvc compare: BD-rate of one evaluation's progvc curves against another's."""

import json

import pytest

from progvc.cli import main
from progvc.errors import ConfigError
from progvc.evaluation.compare import compare_results, load_results


def _results(folder, rate_scale: float, metrics=("psnr", "haarpsi")) -> None:
    """A results.json with one progvc curve (and an anchor) whose rates are ``rate_scale`` times a base."""
    points = []
    for i, bpp in enumerate((0.01, 0.02, 0.04, 0.08)):
        quality = {"psnr": 20.0 + 2 * i, "haarpsi": 0.4 + 0.1 * i, "lpips": 0.5 - 0.1 * i}
        points.append({"video": "clip", "codec": "progvc-nosynth", "setting": f"k={i}", "bpp": bpp * rate_scale,
                       **{m: quality[m] for m in metrics}})
        points.append({"video": "clip", "codec": "x265", "setting": f"crf={i}", "bpp": bpp, **{m: quality[m] for m in metrics}})
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"metrics": list(metrics), "points": points}))


def test_compare_gives_the_rate_difference_of_matching_progvc_curves(tmp_path, capsys):
    _results(tmp_path / "a", 1.0)
    _results(tmp_path / "b", 0.8, metrics=("psnr", "haarpsi", "lpips"))
    rows = compare_results(load_results(tmp_path / "a"), load_results(tmp_path / "b" / "results.json"))
    # the same curve at 0.8 times the rate: -20 % on every metric both runs measured, anchors left out
    assert [(r["curve"], r["metric"]) for r in rows] == [("progvc-nosynth", "psnr"), ("progvc-nosynth", "haarpsi")]
    assert all(r["bd_rate_percent"] == pytest.approx(-20.0) for r in rows)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "progvc-nosynth" in out and "-20.0" in out and "x265" not in out
    assert main(["compare", str(tmp_path / "b"), str(tmp_path / "a"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["bd_rate_percent"] == pytest.approx(25.0)


def test_compare_refuses_what_is_not_an_evaluation(tmp_path, capsys):
    _results(tmp_path / "a", 1.0)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text("[1, 2")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "junk")]) != 0
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing")]) != 0
    assert "no such file" in capsys.readouterr().err
    other = {"metrics": ["psnr"], "points": [{"video": "other", "codec": "progvc-nosynth", "bpp": 0.1, "psnr": 20}]}
    with pytest.raises(ConfigError, match="no progvc curve in common"):
        compare_results(load_results(tmp_path / "a"), other)
