"""The result cache: a rerun with one more baseline or temperature computes only what is new;
a corrupt or partial entry is detected by its hashes and recomputed; where the cache lives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from surveysim_core import hookimpl
from surveysim_core.cache import Cache, cache_root
from surveysim_core.config import RunConfig
from surveysim_core.protocols import Backend, Baseline, BaselinePrediction, Progress
from surveysim_core.run import execute

TIDY = ["system", "setting", "question", "temperature", "segment", "metric", "value"]


class Calls:
    """What the fake plugins were asked to do, across runs."""

    trainings: ClassVar[list[Path]] = []
    generations: ClassVar[list[tuple[str, float]]] = []
    predictions: ClassVar[int] = 0


class TeacherModel:
    def __init__(self, text: str):
        self.text = text
        self.forward_tokens = 0  # as a real model counts the positions it runs

    def generate(self, prompts, temperature, max_new_tokens, seed):
        Calls.generations.append((self.text, temperature))
        self.forward_tokens += 10 * len(prompts)
        return [self.text] * len(prompts)


class TeacherBackend(Backend):
    """zero_shot answers 3; fine_tuned trains (writes a file) and answers 4."""

    def fine_tune(self, train, val, loss, out_dir, resume):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "weights.bin").write_bytes(b"\x01\x02" * 50)
        (out_dir / "checkpoint").mkdir(exist_ok=True)  # training state: not cached
        (out_dir / "checkpoint" / "state.bin").write_bytes(b"\x00" * 10)
        Calls.trainings.append(out_dir)
        return out_dir

    def load(self, adapter):
        if adapter is not None:
            assert (adapter / "weights.bin").read_bytes() == b"\x01\x02" * 50
        return TeacherModel("4" if adapter is not None else "3")


class ConstantBaseline(Baseline):
    """Always answers 2, and counts how often it is asked (a run asks twice: for the test
    items and for the validation items, on which a grid's best setting is chosen)."""

    def predict(self, train, test, seed):
        Calls.predictions += 1
        yield BaselinePrediction("c2", {"answer": 2}, np.full(len(test), 2.0))


class NoLoss:
    def __init__(self, options=None):
        pass


class TeacherPlugin:
    @hookimpl
    def register_backends(self, register):
        register("teacher", TeacherBackend)

    @hookimpl
    def register_losses(self, register):
        register("no_loss", NoLoss)

    @hookimpl
    def register_baselines(self, register):
        register("constant", ConstantBaseline)


@pytest.fixture
def teacher_plugins(satisfaction_plugins):
    satisfaction_plugins.register(TeacherPlugin(), "teacher-plugin")
    Calls.trainings, Calls.generations, Calls.predictions = [], [], 0
    yield satisfaction_plugins
    satisfaction_plugins.unregister("teacher-plugin")


def config(tmp_path: Path, baselines: list[str], temperatures: list[float]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "survey": "satisfaction",
            "data": {"subjects": 60, "seed": 1},
            "baselines": [{"name": n} for n in baselines],
            "backend": {"name": "teacher", "loss": {"name": "no_loss"}},
            "decoding": {"temperatures": temperatures},
            "evaluation": {"bootstrap": 5},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )


def run(cfg: RunConfig, plugins, where: Path, messages: list[str] | None = None):
    sink = messages.append if messages is not None else (lambda m: None)
    return execute(cfg, "c.yaml", plugins, run_dir=str(where), progress=Progress(sink))


def rows(metrics: pd.DataFrame, systems: set[str]) -> pd.DataFrame:
    sub = metrics[metrics["system"].isin(systems)]
    return sub.sort_values(TIDY).reset_index(drop=True)[TIDY]


def test_a_rerun_with_one_more_baseline_and_temperature_computes_only_what_is_new(
    tmp_path, teacher_plugins
):
    first = run(config(tmp_path, ["constant"], [0.0]), teacher_plugins, tmp_path / "a")
    assert len(Calls.trainings) == 1 and Calls.predictions == 2  # test and validation items
    assert sorted(Calls.generations) == [("3", 0.0), ("4", 0.0)]
    Calls.generations = []

    messages: list[str] = []
    second = run(
        config(tmp_path, ["constant", "marginal"], [0.0, 1.0]), teacher_plugins, tmp_path / "b",
        messages,
    )  # fmt: skip
    assert len(Calls.trainings) == 1  # the adapter came from the cache, not from training again
    assert Calls.predictions == 2  # the constant baseline's answers too (test and validation)
    assert sorted(Calls.generations) == [("3", 1.0), ("4", 1.0)]  # only the new temperature
    text = "\n".join(messages)
    status = json.loads((second.dir / "status.json").read_text())
    assert status["cache"]["reused"] == second.cache["reused"]
    assert "constant: predictions" in second.cache["reused"]
    assert "marginal: predictions" in second.cache["computed"]
    assert "reused constant: predictions" in text and "fine_tuned: adapter" in text
    assert "zero_shot: answers at t=[0.0]" in text
    assert "computed marginal: predictions" in text
    # what was reused scores exactly as before
    shared = {"constant", "zero_shot", "fine_tuned"}
    before = rows(first.metrics, shared)
    after = rows(second.metrics, shared)
    pd.testing.assert_frame_equal(after[after["temperature"] != 1.0].reset_index(drop=True), before)
    # fine-tuned answers 4 at both temperatures (hand-worked: RMSE of a constant 4)
    truth = pd.read_csv(second.dir / "systems" / "constant" / "predictions.csv")["true_answer"]
    expected = float(np.sqrt(np.mean((4 - truth.to_numpy()) ** 2)))
    tuned = second.metrics[
        (second.metrics["system"] == "fine_tuned")
        & (second.metrics["metric"] == "rmse")
        & (second.metrics["segment"] == "all")
    ]
    assert tuned["value"].to_numpy() == pytest.approx([expected, expected])
    # the cached adapter holds what loading needs, not the resumable training state
    adapters = list((cache_root() / "adapters").iterdir())
    assert len(adapters) == 1 and (adapters[0] / "weights.bin").is_file()
    assert not (adapters[0] / "checkpoint").exists()


def corrupt_every(kind: str, name: str) -> int:
    count = 0
    for entry in (cache_root() / kind).iterdir():
        path = entry / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        count += 1
    return count


def test_a_corrupt_entry_is_detected_by_hash_and_recomputed(tmp_path, teacher_plugins):
    cfg = config(tmp_path, ["constant"], [0.0])
    first = run(cfg, teacher_plugins, tmp_path / "a")
    # constant (test and validation items), zero_shot, fine_tuned
    assert corrupt_every("answers", "arrays.npz") == 4
    assert corrupt_every("adapters", "weights.bin") == 1
    messages: list[str] = []
    second = run(cfg, teacher_plugins, tmp_path / "b", messages)
    assert len(Calls.trainings) == 2 and Calls.predictions == 4  # recomputed, not trusted
    assert sum("is corrupt (hash mismatch" in m for m in messages) == 5
    pd.testing.assert_frame_equal(rows(second.metrics, {"constant", "fine_tuned"}),
                                  rows(first.metrics, {"constant", "fine_tuned"}))  # fmt: skip
    # and the recomputed entries are good again
    Calls.generations = []
    run(cfg, teacher_plugins, tmp_path / "c")
    assert len(Calls.trainings) == 2 and Calls.generations == []


def test_a_partial_entry_without_manifest_is_recomputed(tmp_path, teacher_plugins):
    cfg = config(tmp_path, ["constant"], [0.0])
    run(cfg, teacher_plugins, tmp_path / "a")
    for entry in (cache_root() / "answers").iterdir():
        (entry / "manifest.json").unlink()  # as if the writer died before the rename
    run(cfg, teacher_plugins, tmp_path / "b")
    assert Calls.predictions == 4 and len(Calls.trainings) == 1  # the adapter entry was whole


def test_cache_off_writes_nothing(tmp_path, teacher_plugins):
    cfg = config(tmp_path, ["constant"], [0.0])
    cfg.output.cache = False
    run(cfg, teacher_plugins, tmp_path / "a")
    run(cfg, teacher_plugins, tmp_path / "b")
    assert Calls.predictions == 4 and len(Calls.trainings) == 2
    assert not any(cache_root().iterdir())


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("SURVEYSIM_CACHE")
    assert cache_root() == Path("~/.cache/surveysim").expanduser()
    assert cache_root(str(tmp_path / "c")) == tmp_path / "c"
    monkeypatch.setenv("SURVEYSIM_CACHE", str(tmp_path / "env"))
    assert cache_root(str(tmp_path / "c")) == tmp_path / "env"


def test_put_is_atomic_a_failed_write_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def fail(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.put("answers", "k1", fail)
    assert list((tmp_path / "answers").iterdir()) == []
    assert cache.entry("answers", "k1") is None


def test_new_training_data_retrains_but_keeps_the_zero_shot_answers(tmp_path, teacher_plugins):
    cfg = config(tmp_path, ["constant"], [0.0])
    run(cfg, teacher_plugins, tmp_path / "a")
    Calls.generations = []
    fewer = cfg.model_copy(deep=True)
    fewer.split.max_train_subjects = 30  # same test respondents, fewer training ones
    second = run(fewer, teacher_plugins, tmp_path / "b")
    assert len(Calls.trainings) == 2  # the fine-tuned system learns from the new data
    assert Calls.generations == [("4", 0.0)]  # the zero-shot answers came from the cache
    assert "zero_shot: answers at t=[0.0]" in second.cache["reused"]
    assert Calls.predictions == 4  # a baseline fits the training data too (test and validation)


def test_paired_differences_of_reused_and_kept_systems_keep_their_intervals(
    tmp_path, teacher_plugins
):
    """A system whose answers come from the cache is scored again from them, so its bootstrap
    draws (and the intervals of its paired differences) are there; a resumed run reads back the
    draws of the systems it keeps."""
    cfg = config(tmp_path, ["constant"], [0.0])
    first = run(cfg, teacher_plugins, tmp_path / "a")
    Calls.generations = []
    second = run(cfg, teacher_plugins, tmp_path / "b")
    assert Calls.generations == [] and Calls.predictions == 2  # every answer from the cache
    assert "constant: predictions" in second.cache["reused"]
    before = pd.read_csv(first.dir / "differences.csv")
    after = pd.read_csv(second.dir / "differences.csv")
    pd.testing.assert_frame_equal(after, before)
    # fine_tuned answers 4, the constant baseline 2: hand-worked RMSE difference per question
    items = pd.read_csv(second.dir / "systems" / "constant" / "predictions.csv")
    tuned = after[
        (after["system"] == "fine_tuned") & (after["metric"] == "rmse")
        & (after["reference"] == "constant")
    ]  # fmt: skip
    assert len(tuned) == items["question"].nunique() > 0
    for _, r in tuned.iterrows():
        truth = items.loc[items["question"].astype(str) == str(r["question"]), "true_answer"]
        t = truth.to_numpy(float)
        expected = np.sqrt(np.mean((4 - t) ** 2)) - np.sqrt(np.mean((2 - t) ** 2))
        assert r["difference"] == pytest.approx(expected)
        assert r["ci_low"] <= r["difference"] <= r["ci_high"]
        assert r["ci_low"] < r["ci_high"]
    # resumed: every system kept from the run directory, its draws read back from draws.npz
    messages: list[str] = []
    resumed = execute(
        cfg, "c.yaml", teacher_plugins, resume=True, run_dir=str(second.dir),
        progress=Progress(messages.append),
    )  # fmt: skip
    assert sum("done earlier, kept" in m for m in messages) == 3
    pd.testing.assert_frame_equal(pd.read_csv(resumed.dir / "differences.csv"), before)


def test_before_any_work_a_run_says_which_stages_are_still_valid(tmp_path, teacher_plugins):
    """A changed configuration says at once what stays valid (from the cache) and what must be
    computed, and that verdict matches what the run then actually reuses and computes."""
    cfg = config(tmp_path, ["constant"], [0.0])
    execute(cfg, "c.yaml", teacher_plugins, progress=Progress(lambda m: None))
    changed = config(tmp_path, ["constant"], [0.0, 1.0])
    messages: list[str] = []
    second = execute(
        changed, "c.yaml", teacher_plugins, resume=True, progress=Progress(messages.append)
    )
    text = "\n".join(messages)
    # --resume on a changed config names the key that changed ...
    assert "decoding.temperatures: [0.0] -> [0.0, 1.0]" in text
    # ... and, before any work, which stages that change leaves valid
    valid = next(m for m in messages if m.startswith("still valid (from the cache): "))
    todo = next(m for m in messages if m.startswith("to compute: "))
    assert messages.index(valid) < messages.index(todo) < len(messages)
    for stage in ("constant: predictions", "fine_tuned: adapter", "zero_shot: answers at t=0"):
        assert stage in valid and stage not in todo
    assert todo == "to compute: zero_shot: answers at t=1; fine_tuned: answers at t=1"
    # the verdict was right: the run computed exactly those, and trained nothing
    assert len(Calls.trainings) == 1
    assert second.cache["computed"] == [
        "zero_shot: answers at t=[1.0]",
        "fine_tuned: answers at t=[1.0]",
    ]


def test_the_reuse_verdict_of_a_new_training_set_invalidates_the_adapter_only(
    tmp_path, teacher_plugins
):
    cfg = config(tmp_path, ["constant"], [0.0])
    run(cfg, teacher_plugins, tmp_path / "a")
    fewer = cfg.model_copy(deep=True)
    fewer.split.max_train_subjects = 20
    messages: list[str] = []
    run(fewer, teacher_plugins, tmp_path / "b", messages)
    todo = next(m for m in messages if m.startswith("to compute: "))
    # the training data changed: the adapter, its answers and the baseline's fit are stale;
    # the zero-shot model's answers to the same test items are not
    assert "fine_tuned: adapter" in todo and "fine_tuned: answers at t=0" in todo
    assert "constant: predictions" in todo
    assert "zero_shot" not in todo
    assert "zero_shot: answers at t=0" in next(m for m in messages if m.startswith("still valid"))


def test_a_run_records_its_forward_throughput_in_status_and_report(tmp_path, teacher_plugins):
    done = run(config(tmp_path, ["constant"], [0.0, 1.0]), teacher_plugins, tmp_path / "a")
    status = json.loads((done.dir / "status.json").read_text())
    n_test = len(pd.read_csv(done.dir / "systems" / "constant" / "predictions.csv"))
    for system in ("zero_shot", "fine_tuned"):
        measured = json.loads((done.dir / "systems" / system / "throughput.json").read_text())
        # 10 positions per prompt, every test item at two temperatures
        assert measured["forward_tokens"] == 10 * n_test * 2
        rate = measured["forward_tokens"] / measured["answer_seconds"]
        assert status["throughput"][f"{system}: forward tokens/s"] == pytest.approx(rate, rel=0.02)
    assert "forward throughput (fine_tuned)" in (done.dir / "report.html").read_text()
    # baselines run no model: no forward throughput
    assert not (done.dir / "systems" / "constant" / "throughput.json").exists()


def test_a_new_training_version_trains_again_and_keeps_the_zero_shot_answers(
    tmp_path, teacher_plugins, monkeypatch
):
    """A backend that bumps ``training_version`` (its training now makes another adapter from
    the same options and data) gets a new adapter, not the cached one; the zero-shot system,
    which trains nothing, keeps its cached answers."""
    cfg = config(tmp_path, [], [0.0])
    run(cfg, teacher_plugins, tmp_path / "a")
    assert len(Calls.trainings) == 1
    Calls.generations = []
    run(cfg, teacher_plugins, tmp_path / "b")
    assert len(Calls.trainings) == 1 and Calls.generations == []  # all from the cache

    monkeypatch.setattr(TeacherBackend, "training_version", "2")
    run(cfg, teacher_plugins, tmp_path / "c")
    assert len(Calls.trainings) == 2
    assert Calls.generations == [("4", 0.0)]  # the new adapter answers; zero-shot does not
