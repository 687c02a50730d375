"""`charlstm report`: the page a person opens, checked in a real headless Chromium."""

from __future__ import annotations

import json
import re

import pytest

from charlstm import report, svg_chart
from charlstm.errors import CharlstmError
from tests.helpers import invoke
from tests.run_folders import write_run


def open_report(browser_page, path):
    """Open the page, noting every request it makes: a self-contained page makes none beyond itself."""
    requests = []
    browser_page.page.on("request", lambda request: requests.append(request.url))
    page = browser_page.open(path)
    assert requests == [path.resolve().as_uri()], requests
    return page


def curve_points(page, kind: str) -> list[int]:
    """How many points each drawn curve of `kind` has (one path per run)."""
    ds = page.locator(f"#loss-by-step path.curve.{kind}").evaluate_all("els => els.map(e => e.getAttribute('d'))")
    return [len(re.findall(r"[ML]-?[\d.]+,-?[\d.]+", d)) for d in ds]


def test_two_runs_share_one_chart_with_a_legend_and_their_sample_timelines(browser_page, tmp_path, capsys):
    lstm = write_run(tmp_path, "text-lstm", val_bpc=[3.0, 2.4, 2.1, 2.0])
    gru = write_run(tmp_path, "text-gru", val_bpc=[3.2, 2.6, 2.3, 2.2, 2.15, 2.1], cell="gru")
    out = tmp_path / "compare.html"
    code, stdout, stderr = invoke(capsys, "report", str(lstm), str(gru), "--html", str(out))
    assert (code, stderr) == (0, ""), stderr
    assert stdout == f"wrote {out}: text-lstm, text-gru\n"
    page = open_report(browser_page, out)

    assert curve_points(page, "validation") == [4, 6]
    assert curve_points(page, "training") == [4, 6]
    for section in ("#loss-by-step", "#loss-by-time", "#learning-rate"):
        chart = page.locator(f"{section} svg.chart")
        assert chart.is_visible()
        box = chart.bounding_box()
        assert box["width"] > 600 and box["height"] > 250, box
    step_chart = page.locator("#loss-by-step svg")
    assert step_chart.locator(".y-axis .label").text_content() == "bits/char"
    assert step_chart.locator(".x-axis .label").text_content() == "step"
    assert page.locator("#loss-by-time .x-axis .label").text_content() == "time trained"
    assert page.locator("#learning-rate .y-axis text").first.text_content() == "0", "the rate is drawn from zero"
    legend = step_chart.locator(".legend text").all_text_contents()
    assert legend == ["text-lstm (lstm 2x64)", "text-gru (gru 2x64)", "validation", "training"]
    assert page.title() == "charlstm report: 2 runs compared"
    colours = step_chart.locator("path.curve.validation").evaluate_all("els => els.map(e => e.getAttribute('stroke'))")
    assert len(set(colours)) == 2, "each run has a colour of its own"
    assert step_chart.locator("circle title").first.text_content() == "text-lstm: training 3.100 bits/char at step 100"

    timeline = page.locator("#samples .run-samples")
    assert timeline.count() == 2
    lstm_items = timeline.nth(0).locator(".timeline li")
    assert lstm_items.count() == 2 and lstm_items.nth(0).is_visible()
    assert lstm_items.nth(0).locator(".when").text_content() == "step 200 · 5s trained · val 2.400 bits/char"
    assert lstm_items.nth(1).locator("pre").text_content() == "sample at 400"
    assert timeline.nth(1).locator(".timeline li").count() == 3
    differing = page.locator("#settings tr.differs th").all_text_contents()
    assert "model.cell" in differing and "model.hidden" not in differing
    browser_page.assert_no_errors()


def test_a_sample_is_shown_as_text_even_when_it_looks_like_html(browser_page, tmp_path):
    run = write_run(tmp_path, "code")
    tricky = "</pre><script>console.error('ran')</script><b>bold?</b>\n    indented & <kept>"
    (run / "samples.jsonl").write_text(json.dumps({"step": 200, "elapsed": 5.0, "text": tricky}) + "\n")
    out = tmp_path / "r.html"
    report.write_report([run], out)
    page = open_report(browser_page, out)
    assert page.locator("#samples pre").text_content() == tricky
    assert page.locator("script").count() == 0
    browser_page.assert_no_errors()


def test_a_run_from_before_samples_were_kept_is_drawn_with_a_note(browser_page, tmp_path):
    run = write_run(tmp_path, "old", state=None)
    (run / "samples.jsonl").unlink()
    out = tmp_path / "old.html"
    report.write_report([run], out)
    page = open_report(browser_page, out)
    assert curve_points(page, "validation") == [4]
    notes = page.locator("#runs .notes").text_content()
    assert "no samples kept" in notes
    assert page.locator("#samples").text_content().count("No samples kept") == 1
    browser_page.assert_no_errors()


def test_with_no_run_named_the_most_recently_active_is_reported(tmp_path):
    write_run(tmp_path, "older", mtime=1_000_000)
    write_run(tmp_path, "newer", mtime=2_000_000)
    (run,) = report.load_runs([], root=tmp_path)
    assert run.name == "newer"


def test_a_run_without_validation_draws_its_training_curve(tmp_path):
    run = write_run(tmp_path, "no-val")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [json.dumps({"step": r["step"], "train_loss": 1.5}) + "\n" for r in records]
    (run / "metrics.jsonl").write_text("".join(lines))
    page = report.render_html(report.load_runs([run]))
    assert page.count('class="curve training"') == 2 and 'class="curve validation"' not in page
    assert "no validation" in page


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "no run folder {root}/missing"),
        (lambda root: (root / "plain").mkdir() or root / "plain", "{root}/plain is not a run folder"),
        (lambda root: write_run(root, "young", val_bpc=[]), "run {root}/young has no evaluations yet"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, tmp_path, make, message):
    run = make(tmp_path)
    code, out, err = invoke(capsys, "report", str(run), "--html", str(tmp_path / "r.html"))
    assert (code, out) == (1, "")
    assert err.startswith("charlstm: error: " + message.format(root=tmp_path)) and err.count("\n") == 1, err
    assert not (tmp_path / "r.html").exists()


def test_a_run_with_no_evaluations_says_when_its_first_comes(tmp_path):
    run = write_run(tmp_path, "young", val_bpc=[], every=250)
    with pytest.raises(CharlstmError, match=r"its first comes at step 250 \(--eval-every\): report it then"):
        report.load_runs([run])


def test_the_page_is_not_written_into_a_missing_folder(capsys, tmp_path):
    run = write_run(tmp_path, "ok")
    code, _, err = invoke(capsys, "report", str(run), "--html", str(tmp_path / "no" / "r.html"))
    assert code == 1
    assert err == f"charlstm: error: cannot write {tmp_path / 'no' / 'r.html'}: there is no folder {tmp_path / 'no'}\n"


def test_ticks_fall_on_round_numbers_and_durations():
    assert svg_chart.nice_ticks(1.93, 3.21) == [1.5, 2.0, 2.5, 3.0, 3.5]
    assert svg_chart.nice_ticks(0, 2000) == [0, 500, 1000, 1500, 2000]
    assert svg_chart.nice_ticks(2.0, 2.0)[0] < 2.0 < svg_chart.nice_ticks(2.0, 2.0)[-1]
    assert svg_chart.time_ticks(100) == [0, 30, 60, 90, 120]
    assert svg_chart.time_ticks(3000) == [0, 600, 1200, 1800, 2400, 3000]
    assert [svg_chart.clock(s) for s in (0, 30, 90, 300, 3600, 5400)] == ["0", "30s", "1m30s", "5m", "1h", "1h30m"]
