"""Tables from the results store: cells over seeds, deltas, presets and the formats (markdown, CSV, LaTeX)."""
import csv
import io
import math

import pytest

from benchmarks.results.report import columns_table, load_runs, preset_table, render
from benchmarks.results.store import ResultsStore
from benchmarks.results.tables import latex_escape
from tests.report_store import make_store, voc_metrics
from tools.report import main as report_main


@pytest.fixture
def db(tmp_path):
    return make_store(tmp_path / "results.db")


def test_cells_over_seeds_with_deltas_and_the_newest_rerun(db):
    _, records = load_runs(db)
    table = columns_table("voc_fasterrcnn:bbox/AP50", records, agg="mean_std", baseline="sup/last")
    assert table.rows == ["scratch", "sup/last", "mocov2/last"]  # equal stems told apart by their directories
    sup, moco = table.cell("sup/last", 0), table.cell("mocov2/last", 0)
    assert sup.n == 3 and sup.center == pytest.approx(81.1667, abs=1e-4) and sup.spread == pytest.approx(1.2583, 1e-4)
    # seed 1 of MoCo ran twice: the rerun (82.0) replaces the first run (70.0); failed/running runs never count
    assert sorted(moco.values) == [82.0, 83.0, 84.0] and moco.delta == pytest.approx(83.0 - 81.1667, abs=1e-4)
    assert sup.delta is None
    markdown = render([table], "md")
    assert "| mocov2/last | 83.0 ± 1.0 (+1.8) (n=3) |" in markdown
    assert "| sup/last | 81.2 ± 1.3 (n=3) |" in markdown
    median = columns_table("voc_fasterrcnn:AP50", records, rows="method", baseline="scratch")  # short metric form
    assert [median.cell(row, 0).center for row in median.rows] == [60.5, 81.0, 83.0]
    assert median.rows == ["scratch", "sl", "mocov2"] and median.cell("sl", 0).delta == pytest.approx(20.5)


def test_missing_cells_stay_missing_and_nan_prints_as_nan(db):
    _, records = load_runs(db)
    table = columns_table("cityscapes_deeplabv3:sem_seg/mIoU,coco_maskrcnn:bbox/APs", records)
    assert table.cell("mocov2/last", 0) is None and math.isnan(table.cell("mocov2/last", 1).center)
    assert "| mocov2/last | – | nan (n=1) |" in render([table], "md")


def test_bad_columns_name_what_exists(db):
    _, records = load_runs(db)
    with pytest.raises(ValueError, match="no finished run matches it; tasks with finished runs: cityscapes"):
        columns_table("voc_maskrcnn:bbox/AP", records)
    with pytest.raises(ValueError, match="'APx' is no metric of its runs; metrics of voc_fasterrcnn: bbox/AP, "):
        columns_table("voc_fasterrcnn:APx", records)
    with pytest.raises(ValueError, match="ambiguous: bbox/AP50, segm/AP50"):
        columns_table("coco_maskrcnn:AP50", records)
    with pytest.raises(ValueError, match="expected task:metric"):
        columns_table("voc_fasterrcnn", records)
    with pytest.raises(ValueError, match="--baseline 'sup' is no row of this table; rows: scratch, sup/last"):
        columns_table("voc_fasterrcnn:AP50", records, baseline="sup")


def test_a_cell_never_mixes_two_recipes(db):
    store = ResultsStore(db)
    from tests.report_store import SUP, _add
    _add(store, "voc_fasterrcnn", SUP, 7, voc_metrics(10.0, 5.0, 5.0), dataset="voc_2007_test",
         config_hash="another-recipe", output_dir="/runs/demo_voc")
    _, records = load_runs(db)
    with pytest.raises(ValueError, match=r"row sup/last, column voc_fasterrcnn:bbox/AP50: its runs used 2 different "
                                         r"configs .*another-reci.*/runs/demo_voc.*--where config_hash"):
        columns_table("voc_fasterrcnn:bbox/AP50", records)
    _, records = load_runs(db, ["config_hash=voc_fasterrcnn-voc_2007_test-None", "config_hash=x"])
    assert columns_table("voc_fasterrcnn:bbox/AP50", records).cell("sup/last", 0).n == 3
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        load_runs(db, ["colour=red"])


def test_presets_lay_out_the_papers_tables(db):
    _, records = load_runs(db)
    moco5 = preset_table("moco_table5", records, rows="method", baseline="sl")
    assert [c.spec for c in moco5.columns][:2] == ["coco_maskrcnn_fpn:bbox/AP", "coco_maskrcnn_fpn:bbox/AP50"]
    assert moco5.agg == "mean_std" and moco5.cell("sl", 0) is None  # no FPN run: shown missing, never filled
    mask_ap = moco5.cell("mocov2", 9)
    assert mask_ap.center == pytest.approx(34.9) and mask_ap.delta == pytest.approx(-0.5)
    hpt = preset_table("hpt_figs2_3", records)
    assert [c.spec for c in hpt.columns] == ["linear@chexpert:linear/auroc", "linear@resisc:linear/top1",
                                             "finetune@resisc:finetune/top1"]
    assert hpt.cell("scratch", 2).values == [60.0]  # finetune at 1000 labels only (HPT appendix A)
    exemplar = preset_table("exemplar_table7", records)
    assert exemplar.cell("sup/last", 9).center == 78.0 and exemplar.agg == "median"
    slmlp = preset_table("slmlp_table4", records)
    assert slmlp.cell("mocov2/last", 3).center == 71.7


def test_moco_table2_latex_is_a_table_a_paper_can_include(db, capsys):
    assert report_main(["--db", str(db), "--preset", "moco_table2", "--format", "latex",
                        "--baseline", "sup/last"]) == 0
    latex = capsys.readouterr().out
    assert latex.startswith("% needs \\usepackage{booktabs}\n\\begin{table}[t]\n\\centering\n\\begin{tabular}{lccc}")
    assert "& AP$_{50}^{\\mathrm{bb}}$ & AP$^{\\mathrm{bb}}$ & AP$_{75}^{\\mathrm{bb}}$ \\\\" in latex
    assert "mocov2/last & 83.0$\\pm$1.0$^{3}$ {\\scriptsize (+1.8)} & 57.0$\\pm$1.0$^{3}$" in latex
    assert "scratch & 60.5$\\pm$0.7$^{2}$ {\\scriptsize ($-$20.7)}" in latex  # a minus sign, not a hyphen
    assert "supervised IN-1M (-{}-baseline)" in latex  # two hyphens, not an en dash
    assert "\\label{tab:moco_table2}\n\\end{table}\n" in latex
    assert latex_escape("moco_v2 50% #1") == "moco\\_v2 50\\% \\#1"  # row labels are file stems
    assert latex.count("{") == latex.count("}") and latex.count("\\begin") == latex.count("\\end")


def test_csv_has_full_precision_and_empty_missing_cells(db, tmp_path):
    out = tmp_path / "table.csv"
    assert report_main(["--db", str(db), "--cols", "voc_fasterrcnn:bbox/AP50,cityscapes_deeplabv3:sem_seg/mIoU",
                        "--agg", "mean_std", "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    sup = next(row for row in rows if row["model"] == "sup/last")
    assert float(sup["voc_fasterrcnn:bbox/AP50"]) == pytest.approx(81.16666666, 1e-8)
    assert sup["voc_fasterrcnn:bbox/AP50 n"] == "3" and sup["cityscapes_deeplabv3:sem_seg/mIoU"] == "78.0"
    assert next(row for row in rows if row["model"] == "scratch")["cityscapes_deeplabv3:sem_seg/mIoU"] == ""


def test_cli_errors_are_one_line(db, tmp_path, capsys):
    import subprocess
    import sys
    from pathlib import Path
    tool = Path(__file__).resolve().parents[1] / "tools" / "report.py"
    result = subprocess.run([sys.executable, str(tool), "--db", str(tmp_path / "absent.db"), "--preset",
                             "moco_table2"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("report.py: error: results database ") and "does not exist" in result.stderr
    assert not (tmp_path / "absent.db").exists()
