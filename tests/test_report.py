"""Report and sweep aggregation on hand-made results (no training needed)."""

import json

import pytest

from elfs.tables.aggregate import aggregate, main
from elfs.tables.report import format_table, write_report


def _results(beta=0.2, accs=(0.8, 0.9), rand=(0.7, 0.75)):
    return {
        "dataset": "toy",
        "dataset_source": "test",
        "n_train": 100,
        "n_test": 20,
        "num_classes": 3,
        "backbone": "efficientnet_lite0",
        "pretrained": True,
        "selection": {"method": "double_end", "score": "aum", "baselines": ["random"]},
        "evaluate": {"model": "small_cnn", "steps": 10, "seeds": [0, 1]},
        "labelled": True,
        "clustering": {
            "pseudo_labels": {"acc": 0.5, "nmi": 0.4, "ari": 0.3},
            "kmeans": {"acc": 0.45, "nmi": 0.35, "ari": 0.25},
        },
        "results": [
            {
                "budget": 0.3,
                "pruning_rate": 0.7,
                "beta": beta,
                "beta_source": "search",
                "beta_at_edge": True,
                "beta_curve": {"betas": [0.0, 0.2], "val_acc": [0.4, 0.6]},
                "methods": {
                    "double_end": {
                        "arm": "double_end",
                        "method": "double_end",
                        "score": "aum",
                        "beta": beta,
                        "settings": {"selection.beta": beta},
                        "final_acc": list(accs),
                        "acc_mean": sum(accs) / 2,
                        "acc_std": 0.0707,
                        "best_acc": [None, None],
                        "n_kept": 30,
                    },
                    "random": {
                        "arm": "random",
                        "method": "random",
                        "final_acc": list(rand),
                        "acc_mean": sum(rand) / 2,
                        "acc_std": 0.035,
                        "best_acc": [None, None],
                        "n_kept": 30,
                    },
                },
            }
        ],
        "stage_seconds": {"embed": 1.0, "cluster": 2.0},
        "total_seconds": 3.0,
    }


def test_table_shows_everything_the_issue_asks_for():
    t = format_table(_results())
    assert "ACC 50.0" in t and "k-means: ACC 45.0" in t
    assert "0.2*" in t and "85.0 ± 7.1" in t and "72.5 ± 3.5" in t
    assert "embed 1.0" in t and "total 3.0" in t and "final checkpoint" in t


def test_write_report_files(tmp_path):
    table, files = write_report(_results(), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "toy"
    assert (tmp_path / "accuracy_vs_pruning.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "beta_curves.png").exists() and (tmp_path / "results.txt").read_text().strip() == table
    assert not list(tmp_path.glob("*.tmp"))


def test_aggregate_mean_std_over_jobs_and_seeds(tmp_path, capsys):
    for job, (beta, accs) in enumerate([(0.0, (0.6, 0.7)), (0.2, (0.8, 0.9)), (0.2, (0.7, 0.8))]):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_results(beta=beta, accs=accs)))
    summary = {(s["arm"], s["beta"]): s for s in aggregate(tmp_path)}
    assert summary[("double_end", 0.2)]["n"] == 4
    assert summary[("double_end", 0.2)]["acc_mean"] == pytest.approx(0.8)
    assert summary[("double_end", 0.2)]["acc_std"] == pytest.approx(0.0816497, rel=1e-5)
    assert summary[("double_end", 0.0)]["acc_mean"] == pytest.approx(0.65)
    assert summary[("random", None)]["n"] == 6
    assert (tmp_path / "summary.csv").exists()
    assert main([str(tmp_path)]) == 0 and "80.00 ± 8.16" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2


def test_paper_numbers_are_shown_beside_ours_where_the_paper_has_the_cell():
    from elfs.tables.paper import paper_reference

    assert paper_reference("cifar10", 0.9) == pytest.approx(
        {"elfs": 86.9, "random": 79.2, "supervised_ccs": 87.2, "d2": 71.4, "prototypicality": 70.7}
    )
    c100 = paper_reference("cifar100", 0.9)
    assert c100["elfs"] == 54.9 and "prototypicality" not in c100
    assert paper_reference("cifar10", 0.6) == {} and paper_reference("mnist5k", 0.9) == {}
    r = _results()
    r["dataset"] = "cifar10"
    r["results"][0]["budget"], r["results"][0]["pruning_rate"] = 0.3, 0.7
    t = format_table(r)
    assert "paper elfs" in t and "93.4" in t and "90.9" in t and "read off the figure" in t
    assert "paper elfs" not in format_table(_results())


def test_a_paper_number_of_an_unstated_encoder_stands_beside_one_row_only():
    """The paper's figure does not say which encoder made its numbers: with rows of two encoders, each paper cell is
    shown once, marked, and never beside both encoders' rows as if each were that encoder's figure."""
    from elfs.tables.aggregate import _paper_once, format_markdown

    def row(arm, backbone, paper):
        return {"dataset": "cifar10", "budget": 0.1, "pruning_rate": 0.9, "arm": arm, "score": "aum",
                "labels": "pseudo", "cluster": "temi", "backbone": backbone, "beta": "auto", "beta_chosen": "0.3",
                "varied": None, "uses_ground_truth": False, "model": "resnet18_cifar", "steps": 40000, "n": 3,
                "acc_mean": 0.85, "acc_std": 0.01, "best_mean": 0.86, "best_std": 0.01, "paper": paper,
                "delta_vs_paper": None if paper is None else -0.9}  # fmt: skip

    rows = [row("double_end", "swav_resnet50", 86.9), row("double_end", "dino_vitb16", 86.9), row("random", None, 79.2)]
    _paper_once(rows)
    elfs = [r for r in rows if r["arm"] == "double_end"]
    assert [r["paper"] for r in elfs].count(86.9) == 1 and [r["paper"] for r in elfs].count(None) == 1
    assert rows[2]["paper"] == 79.2
    table = format_markdown(rows)
    assert table.count("86.9 (encoder unstated)") == 1 and "badge" not in table.lower()


def test_an_imagenet_runs_summary_shows_the_papers_imagenet_column(tmp_path):
    """An ImageNet run reads an ImageFolder tree and is named by its folder (imagenet, ILSVRC2012): its table and its
    sweep summary show the paper's ImageNet-1K numbers beside its own."""
    from PIL import Image

    from elfs.data import load_dataset
    from elfs.tables.aggregate import summarise
    from elfs.tables.paper import paper_full_data

    for folder in ("imagenet", "ILSVRC2012"):
        root = tmp_path / folder
        for split in ("train", "val"):
            for wnid in ("n01440764", "n01443537"):
                (root / split / wnid).mkdir(parents=True)
                Image.new("RGB", (8, 8), (40, 90, 200)).save(root / split / wnid / "a.JPEG")
        ds = load_dataset("imagefolder", path=str(root))
        assert paper_full_data(ds.name) == 73.0
        r = _results()
        r["dataset"] = ds.name
        r["results"][0]["budget"], r["results"][0]["pruning_rate"] = 0.3, 0.7
        t = format_table(r)
        assert "paper elfs" in t and "67.2" in t and "66.7" in t, t  # ELFS and random at 70 % pruned
    rows = [
        {"job": "j", "dataset": "ILSVRC2012", "budget": 0.3, "arm": arm, "score": "aum", "labels": "pseudo",
         "uses_ground_truth": False, "cluster": "temi", "backbone": "dino_vitb16", "beta": "auto", "beta_used": 0.2,
         "settings": {}, "model": "resnet34", "steps": 300000, "seed": 0, "acc": 0.66, "best": 0.67}
        for arm in ("double_end", "random")
    ]  # fmt: skip
    summary = {s["arm"]: s for s in summarise(rows)}
    assert summary["double_end"]["paper"] == 67.2 and summary["random"]["paper"] == 66.7
