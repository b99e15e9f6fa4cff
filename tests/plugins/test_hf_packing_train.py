"""Prefix-packed fine-tuning through the trainer equals training on separate examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from surveysim_hf.backend import HFBackend
from surveysim_hf.batches import PaddedBatch
from surveysim_hf.losses import CrossEntropyLoss, Loss, token_cross_entropy
from surveysim_hf.options import HFOptions
from surveysim_hf.testing import write_tiny_model
from surveysim_hf.train import read_train_log
from surveysim_losses.numeric import NumericPenaltyLoss
from surveysim_losses.options import NumericPenaltyOptions

from surveysim_core.protocols import Example, Prompt

QUESTIONS = ["How much do you like cars, 0-9? Score:", "And bikes, 0-9? Score:", "Rain? Score:"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


def respondents(n: int, start: int = 0) -> list[Example]:
    """``n`` respondents answering the three questions; the persona is the shared prefix."""
    out = []
    for i in range(start, start + n):
        system = f"act as the following character: {{age: {20 + i}, town: t{i % 5}}}"
        for q, question in enumerate(QUESTIONS):
            answer = str((i + 3 * q) % 10)
            out.append(
                Example(Prompt(system, question), answer, f"q{q}", float(answer), None, f"s{i}")
            )
    return out


def train(model: Path, run_dir: Path, packing: bool, loss_on: str, loss=None) -> Path:
    options = HFOptions(
        model=str(model),
        packing=packing,
        loss_on=loss_on,
        lora_dropout=0.0,
        learning_rate=1e-2,
        batch_size=12,  # one step = all 4 respondents x 3 answers, packed or not
        eval_batch_size=12,
        epochs=1,
        progress_bars=False,
        seed=0,
    )
    hf = HFBackend(options, run_dir)
    return hf.fine_tune(
        respondents(4), respondents(2, 100), loss or CrossEntropyLoss(), run_dir / "adapter", False
    )


def numeric_penalty() -> NumericPenaltyLoss:
    return NumericPenaltyLoss(NumericPenaltyOptions(alpha=0.5, d=3))


@pytest.mark.parametrize(
    ("loss_on", "make_loss"),
    [("answer", CrossEntropyLoss), ("all", CrossEntropyLoss), ("answer", numeric_penalty)],
)
def test_packed_training_equals_separate_examples(tiny_model, tmp_path, loss_on, make_loss):
    assert make_loss().supports_packing
    separate = train(tiny_model, tmp_path / "separate", False, loss_on, make_loss())
    packed = train(tiny_model, tmp_path / "packed", True, loss_on, make_loss())
    rows = {k: read_train_log(d / "train_log.csv") for k, d in (("s", separate), ("p", packed))}
    (s_train, s_val), (p_train, p_val) = rows["s"], rows["p"]
    assert s_train["split"] == p_train["split"] == "train" and s_val["split"] == "val"
    # same loss on the same step and the same validation loss after it
    assert p_train["loss"] == pytest.approx(s_train["loss"], rel=1e-5)
    assert p_val["loss"] == pytest.approx(s_val["loss"], rel=1e-5)
    # fewer tokens run through the model (the persona once per respondent, not per answer)
    assert p_train["tokens"] < 0.75 * s_train["tokens"]
    assert p_val["tokens"] < 0.75 * s_val["tokens"]
    # same gradients: after one AdamW step the adapters agree (B starts at 0, so A's gradient
    # is exactly 0 in both runs and only B moves, by about lr per element)
    a = load_file(separate / "adapter_model.safetensors")
    b = load_file(packed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    moved = 0.0
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)
        if "lora_B" in key:
            moved = max(moved, float(a[key].abs().max()))
    assert moved > 1e-3  # the step did change the adapter


class PaddedOnlyLoss(Loss):
    """Token cross-entropy on padded batches only (``supports_packing`` is false)."""

    calls = 0

    def __call__(self, model, batch):
        assert isinstance(batch, PaddedBatch)
        PaddedOnlyLoss.calls += 1
        return token_cross_entropy(batch.logits(model), batch.labels)


def test_loss_without_packed_support_falls_back(tiny_model, tmp_path, capsys):
    assert CrossEntropyLoss().supports_packing and not PaddedOnlyLoss().supports_packing
    out = train(tiny_model, tmp_path, True, "answer", PaddedOnlyLoss())
    assert "PaddedOnlyLoss does not support packed batches" in capsys.readouterr().out
    assert PaddedOnlyLoss.calls >= 2  # one training and one validation batch at least
    separate = train(tiny_model, tmp_path / "separate", False, "answer")
    rows = read_train_log(out / "train_log.csv")
    separate_rows = read_train_log(separate / "train_log.csv")
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in separate_rows]
    # the same loss as cross_entropy on the same padded batches
    assert [r["loss"] for r in rows] == [r["loss"] for r in separate_rows]


class CallOnlyLoss(CrossEntropyLoss):
    """The 0.1 convention (deprecated): changes ``__call__(logits, labels, batch)`` only, so it
    must not be trained through its parent's packed path."""

    calls = 0

    def __call__(self, logits, labels, batch):
        CallOnlyLoss.calls += 1
        return super().__call__(logits, labels, batch)


def test_a_0_1_loss_without_packed_support_trains_with_a_warning(tiny_model, tmp_path):
    assert not CallOnlyLoss().supports_packing
    with pytest.warns(DeprecationWarning, match="0.1 conventions"):
        out = train(tiny_model, tmp_path, True, "answer", CallOnlyLoss())
    assert CallOnlyLoss.calls >= 2  # one training and one validation batch at least
    separate = train(tiny_model, tmp_path / "separate", False, "answer")
    rows = read_train_log(out / "train_log.csv")
    separate_rows = read_train_log(separate / "train_log.csv")
    assert [r["tokens"] for r in rows] == [r["tokens"] for r in separate_rows]
    assert [r["loss"] for r in rows] == [r["loss"] for r in separate_rows]


def test_a_packed_batch_holds_at_most_batch_size_answers_on_average():
    from surveysim_hf.train import respondents_per_batch

    # the validation data: 400 respondents, 2397 answers (6 each) or, with 5 statements held out,
    # 2111 (5.3 each): one respondent a step either way (rounding gave 1 and 2, halving the steps)
    assert respondents_per_batch(8, 2397, 400) == 1
    assert respondents_per_batch(8, 2111, 400) == 1
    assert respondents_per_batch(16, 2397, 400) == 2  # 12 answers, not 18
    assert respondents_per_batch(12, 2400, 400) == 2  # exactly 12
    assert respondents_per_batch(3, 2400, 400) == 1  # a respondent is never cut
    for batch in range(1, 40):
        for examples in (400, 1000, 2111, 2397, 4000):
            units = respondents_per_batch(batch, examples, 400)
            assert units == 1 or units * examples / 400 <= batch
            assert (units + 1) * examples / 400 > batch
