"""`ghostbox finetune --seeds`: one setting over several seeds, reported as mean and spread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import GhostboxError
from pipeline.finetune.mining_rounds import METHOD_FIELDS
from pipeline.finetune.seeds import aggregate, parse_seeds, run_seeds, seeds_markdown
from pipeline.finetune.training_run import FinetuneJob
from pipeline.json_files import write_json


def _comparison(near_after: int, map50_after: float) -> dict[str, Any]:
    change = round(100 * (map50_after - 0.9), 2)
    return {"id": {"map50": {"before": 0.9, "after": map50_after, "change_points": change}},
            "id_tp_lost_by_filter": {"before": 0.05, "after": 0.04},
            "ood": {"near_test": {"images": 30, "hallucinations": {"original": 100, "finetuned_filtered": near_after},
                                  "reduction": {"finetuned_filtered": 1 - near_after / 100}}}}


def _job(out: Path, rounds: int = 1, **training: Any) -> FinetuneJob:
    return FinetuneJob(model="m.pt", id_spec="id", proxies=["p"], out=out, val_spec="val", ood_specs=["near_test"],
                       training=training, rounds=rounds, mine_pool="pool")


class _FakeRun:
    """Stands for run_finetune: writes OUT/finetune.json as it does, with figures that depend on the seed."""

    def __init__(self) -> None:
        self.seeds: list[int] = []

    def __call__(self, job: FinetuneJob) -> dict[str, Any]:
        seed = job.training.seed
        self.seeds.append(seed)
        assert job.out.name == f"seed-{seed}" and job.resume
        summary = {"settings": job.training.model_dump(mode="json"), "id": job.id_spec, "proxies": job.proxies,
                   "ood": job.ood_specs, "proxy_ratio": job.proxy_ratio,
                   "method": job.model_dump(mode="json", include=METHOD_FIELDS),
                   "comparison": _comparison(near_after=10 + 4 * seed, map50_after=0.88 + 0.01 * seed)}
        if job.rounds > 1:  # each round's comparison; the last is the run's
            summary["round_comparisons"] = {
                str(r): _comparison(near_after=10 + 4 * seed + 10 * (job.rounds - r), map50_after=0.88)
                for r in range(1, job.rounds + 1)}
        job.out.mkdir(parents=True)
        write_json(job.out / "finetune.json", summary)
        return summary


def test_mean_and_spread_over_seeds_and_finished_seeds_are_reused(tmp_path: Path) -> None:
    run = _FakeRun()
    result = run_seeds(_job(tmp_path), [0, 1, 2], run, "ghostbox finetune --seeds 0-2")
    assert run.seeds == [0, 1, 2]
    near = result["figures"]["ood.near_test.hallucinations.finetuned_filtered"]
    assert near["mean"] == 14.0 and near["sd"] == pytest.approx(4.0) and (near["min"], near["max"]) == (10, 18)
    assert near["values"] == [10, 14, 18]
    assert result["figures"]["id.map50.after"]["mean"] == pytest.approx(0.89)
    saved = json.loads((tmp_path / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and "seed" not in saved["settings"]
    table = (tmp_path / "seeds.md").read_text()
    assert "command: `ghostbox finetune --seeds 0-2`" in table and result["made"]["machine"]["cores"] >= 1
    assert "| ood.near_test.reduction.finetuned_filtered | 86.0% +- 4.0% | 82.0% - 90.0% | 90.0%, 86.0%, 82.0% |" \
        in table
    # a sweep run again reuses the seeds that finished with these settings, and runs the new one
    again = _FakeRun()
    run_seeds(_job(tmp_path), [0, 1, 2, 3], again)
    assert again.seeds == [3]
    # other settings: every seed runs again (here into folders that exist: the fake refuses, so it is called)
    other = _FakeRun()
    with pytest.raises(FileExistsError):
        run_seeds(_job(tmp_path, epochs=7), [0], other)
    assert other.seeds == [0]


def test_aggregate_keeps_figures_every_seed_has() -> None:
    a, b = _comparison(10, 0.9), _comparison(20, 0.8)
    del b["ood"]["near_test"]["reduction"]
    result = aggregate({0: a, 1: b})
    assert "ood.near_test.reduction.finetuned_filtered" not in result["figures"]
    assert result["figures"]["ood.near_test.hallucinations.finetuned_filtered"]["mean"] == 15.0
    assert "| id.map50.after | 0.8500 +- 0.0707 | 0.8000 - 0.9000 | 0.9000, 0.8000 |" in seeds_markdown(result)


def test_seed_lists() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("5") == [5]
    for bad in ("", "a", "1,1", "2-x", "-1"):
        with pytest.raises(GhostboxError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(GhostboxError, match="--val and --ood"):
        run_seeds(_job(Path("x")).model_copy(update={"ood_specs": []}), [0], _FakeRun())


def test_rounds_figures_are_kept_per_round_and_other_round_counts_run_again(tmp_path: Path) -> None:
    run = _FakeRun()
    result = run_seeds(_job(tmp_path / "a", rounds=2), [0, 1], run)
    # the last round is the run's figure; the earlier round's sits beside it under its own name
    assert result["figures"]["ood.near_test.hallucinations.finetuned_filtered"]["values"] == [10, 14]
    assert result["figures"]["round-1.ood.near_test.hallucinations.finetuned_filtered"]["values"] == [20, 24]
    assert "round-2.ood.near_test.hallucinations.finetuned_filtered" not in result["figures"]
    assert result["figures"]["rounds_done"]["values"] == [2, 2]
    table = (tmp_path / "a/seeds.md").read_text()
    assert "| round-1.ood.near_test.reduction.finetuned_filtered | 78.0% +- 2.8% |" in table
    again = _FakeRun()
    run_seeds(_job(tmp_path / "a", rounds=2), [0, 1], again)
    assert again.seeds == []
    # another number of rounds is another setting: it does not reuse the seed
    with pytest.raises(FileExistsError):
        run_seeds(_job(tmp_path / "a", rounds=3), [0], _FakeRun())
