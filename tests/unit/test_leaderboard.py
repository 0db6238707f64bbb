"""The leaderboard over stored runs: one single-edit study on a synthetic CounterFact-form file, run on
two tiny models; every cell is the stored rate of its category and metric, edits made, seconds and
peak memory come from the stored units, and the write-up placeholders and the CLI render the same."""

import statistics

import pytest
import yaml
from typer.testing import CliRunner

from editscope.cli import app
from editscope.report.analyses.leaderboard import column_leader, leaderboard_rows, leaderboard_table
from editscope.report.data.results import load_results, rate_cell
from editscope.report.documents.document import DocumentError, referenced_studies, write_document
from test_mend import synthetic_counterfact

pytestmark = pytest.mark.usefixtures("tmp_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("leaderboard")
    src = synthetic_counterfact(tmp / "cf.json", n=6)
    study = tmp / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "board", "model": "tiny:llama", "seed": 0, "methods": ["ft-m", "grace"],
        "edits": [{"dataset": "counterfact", "source": src, "limit": 4, "generate": 4}],
        "fluency": {"max_new_tokens": 8, "limit": 1}}))
    out = {}
    for model in ("tiny:llama", "tiny:gpt2"):
        folder = tmp / "runs" / ("board" if model == "tiny:llama" else "board-tiny-gpt2")
        args = ["run", str(study), "--out", str(folder), "--no-report"]
        r = CliRunner().invoke(app, args + ([] if model == "tiny:llama" else ["--model", model]))
        assert r.exit_code == 0, r.output
        out[model] = folder
    return tmp, out


def test_every_cell_is_the_stored_rate_and_the_units_give_counts_seconds_and_memory(runs):
    _, folders = runs
    studies = [load_results(f) for f in folders.values()]
    rows = leaderboard_rows(studies)
    assert [(r.method, r.model) for r in rows] == [("base", "tiny-llama"), ("base", "tiny-gpt2"),
                                                   ("ft-m", "tiny-llama"), ("ft-m", "tiny-gpt2"),
                                                   ("grace", "tiny-llama"), ("grace", "tiny-gpt2")]
    res = studies[1]
    row = next(r for r in rows if (r.method, r.model) == ("ft-m", "tiny-gpt2"))
    assert row.cells["efficacy_tf"] == rate_cell(res, "ft-m", "target", "token_acc")
    by_hand = [r["token_acc"] for r in res.final_rows("ft-m") if r["category"] == "target"]
    assert row.cells["efficacy_tf"].value == pytest.approx(sum(by_hand) / len(by_hand))  # the stored rows, averaged
    assert row.cells["generalisation_gen"] == rate_cell(res, "ft-m", "paraphrase", "answer_hit")
    assert row.cells["specificity_tf"] == rate_cell(res, "ft-m", "near", "locality_token_agreement")
    assert row.cells["portability_tf"] is None  # the file has no portability probes
    units = [u for u in res.units if u.method == "ft-m"]
    assert row.attempted == len(units) == 4 and row.made == sum(u.status == "done" for u in units)
    assert row.seconds == pytest.approx(statistics.median(u.seconds_edit for u in units if u.status == "done"))
    assert row.peak_mb is not None and row.peak_mb > 50  # the edit's peak resident memory (Linux)
    assert row.cells["fluency"] is not None and row.cells["fluency"].n == row.made
    table = leaderboard_table(studies)
    assert "portability (teacher-forced)" not in table.header and table.header[-3:] == [
        "edits made", "s/edit (median)", "peak MiB (median)"]
    assert len(table.rows) == 6
    best = max(r.cells["efficacy_tf"].value for r in rows if r.method != "base")
    assert column_leader(studies, "efficacy_tf").split(" (")[0] in ("ft-m", "grace")
    assert f"{best:.3f}" in column_leader(studies, "efficacy_tf")
    with pytest.raises(KeyError, match="unknown leaderboard column"):
        column_leader(studies, "speed")
    with pytest.raises(ValueError, match="different models.*tiny-llama"):
        leaderboard_rows([studies[0], studies[0]])


def test_the_write_up_and_the_cli_render_it(runs, tmp_path):
    tmp, folders = runs
    tpl = tmp_path / "board.md.in"
    tpl.write_text("{{leaderboard:this,board-tiny-gpt2}}\n\nTop: {{leaderboard_top:efficacy_tf:this,board-tiny-gpt2}}\n")
    assert referenced_studies(tpl.read_text()) == ["board-tiny-gpt2"]
    text = write_document(folders["tiny:llama"], tpl, tmp_path / "board.md").read_text()
    assert text.startswith("| method | model | efficacy (teacher-forced) |") and "Top: " in text
    assert text.count("\n| ft-m |") == 2
    tpl.write_text("{{leaderboard:this,nowhere}}\n")
    with pytest.raises(DocumentError, match="reads the stored study 'nowhere'.*--with nowhere=RUN_DIR"):
        write_document(folders["tiny:llama"], tpl, tmp_path / "x.md")
    out = tmp_path / "cli.md"
    r = CliRunner().invoke(app, ["leaderboard", *map(str, folders.values()), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines()[0] == text.splitlines()[0]
