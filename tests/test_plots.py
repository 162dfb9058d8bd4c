"""scripts/plot.py as a user runs it: the curves it draws, and one clear paragraph for a file it cannot plot."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plot(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "plot.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)


def write_log(path, losses, evals) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": step, "loss/train/total": loss} for step, loss in enumerate(losses, 1)]
    rows += [{"step": step, "metrics/eval/LanguageCrossEntropy": loss} for step, loss in evals]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 9, "loss/tr')  # cut off mid-line
    return str(path)


def test_metrics_plot_draws_several_runs_into_a_new_folder(tmp_path):
    first = write_log(tmp_path / "runs" / "a" / "metrics.jsonl", [9.0, 8.0, 7.5], [(2, 8.1), (3, 7.6)])
    second = write_log(tmp_path / "runs" / "b" / "metrics.jsonl", [9.5, 8.5], [(2, 8.4)])
    out = tmp_path / "plots" / "new" / "loss.png"
    result = plot(tmp_path, "metrics", first, second, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {out}" in result.stdout


def test_a_file_plot_cannot_draw_is_one_paragraph(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "other.jsonl").write_text('{"step": 1, "something": 2}\n')
    (tmp_path / "curve.json").write_text(json.dumps({"curves": {}}))
    (tmp_path / "garbage.json").write_text("not json at all")
    cases = [(["metrics", "empty.jsonl"], "no line holds loss/train/total or metrics/eval/LanguageCrossEntropy"),
             (["metrics", "other.jsonl"], "no line holds"),
             (["benchmark", "curve.json"], "not what 'benchmark' plots (KeyError: 'results')"),
             (["sweep", "garbage.json"], "not what 'sweep' plots (JSONDecodeError"),
             (["long", "garbage.json"], "Give the summary that benchmarks/time_to_quality.py writes")]
    for args, message in cases:
        result = plot(tmp_path, *args, "--out", "new/folder/x.png")
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr[-2000:])
        assert not (tmp_path / "new").exists()  # the folders made for --out are gone again
