"""One loss calling convention, ``loss(model, batch)``, for padded and packed batches; the 0.1
conventions (``__call__(logits, labels, batch)``, ``packed``, ``training_forward``,
``compute_loss``, ``LossBatch``) keep working for one release, with a DeprecationWarning.

Every value is checked against a hand-worked cross-entropy: one text ``[0, 1, 2]`` over a
4-token vocabulary, loss on tokens 1 and 2. The logits at position 0 are 0 except token 1
(ln 3): p(1) = 3 / (3 + 3) = 1/2. At position 1 all logits are 0: p(2) = 1/4. So the mean
cross-entropy is (ln 2 + ln 4) / 2 = 1.5 ln 2.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from surveysim_hf.batches import PackedBatch, PaddedBatch
from surveysim_hf.losses import (
    CrossEntropyLoss,
    LegacyLoss,
    Loss,
    as_loss,
    compute_loss,
    token_cross_entropy,
)
from surveysim_hf.packing import collate_packed, pack_examples, packed_loss

CE = 1.5 * math.log(2)


def hand_logits() -> torch.Tensor:
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 1] = math.log(3)
    logits[0, 2] = torch.tensor([5.0, -1.0, 2.0, 0.5])  # predicts nothing: must not matter
    return logits


class StubModel:
    """A model whose forward pass returns the hand-worked logits (padded or packed: the packed
    sequence of one text is the text itself)."""

    config = SimpleNamespace(model_type="stub")  # not a plain-head type: the full forward runs

    def __call__(self, input_ids: torch.Tensor, **inputs) -> SimpleNamespace:
        assert input_ids.tolist() == [[0, 1, 2]]
        return SimpleNamespace(logits=hand_logits())


def padded() -> PaddedBatch:
    return PaddedBatch(
        input_ids=torch.tensor([[0, 1, 2]]),
        attention_mask=torch.ones(1, 3, dtype=torch.long),
        labels=torch.tensor([[-100, 1, 2]]),
        answer_start=torch.tensor([1]),
        answer_length=torch.tensor([1]),
        answer_codes=torch.tensor([1.0]),
    )


def packed() -> PackedBatch:
    text = {"input_ids": [0, 1, 2], "labels": [-100, 1, 2], "answer_start": 1}
    return collate_packed([pack_examples([text])])


def test_every_builtin_loss_is_called_with_the_model_and_a_batch():
    loss = CrossEntropyLoss()
    assert loss.supports_packing
    assert float(loss(StubModel(), padded())) == pytest.approx(CE, rel=1e-6)
    assert float(loss(StubModel(), packed())) == pytest.approx(CE, rel=1e-6)
    assert as_loss(loss) is loss  # the current convention needs no adapter


def test_batches_say_their_tokens_and_label_weight():
    assert (padded().tokens(), padded().label_weight()) == (3, 2.0)
    assert (packed().tokens(), packed().label_weight()) == (3, 2.0)
    # the packed batch still reads as the dict of 0.1
    batch = packed()
    assert batch["labels"] is batch.labels and "answers" not in batch
    assert set(batch) == {
        "input_ids",
        "position_ids",
        "attention_mask",
        "labels",
        "predictor_index",
        "loss_weight",
        "answer_predictor",
    }


# -- deprecated: the 0.1 names and conventions ---------------------------------------------------
def test_loss_batch_is_a_deprecated_alias_of_padded_batch():
    with pytest.warns(DeprecationWarning, match="PaddedBatch"):
        from surveysim_hf.losses import LossBatch
    assert LossBatch is PaddedBatch


def test_compute_loss_is_deprecated_and_calls_the_loss():
    with pytest.warns(DeprecationWarning, match="compute_loss is deprecated"):
        value = compute_loss(StubModel(), CrossEntropyLoss(), padded())
    assert float(value) == pytest.approx(CE, rel=1e-6)


def test_calling_a_builtin_loss_with_logits_is_deprecated_and_still_works():
    batch = padded()
    with pytest.warns(DeprecationWarning, match=r"call loss\(model, batch\)"):
        value = CrossEntropyLoss()(hand_logits(), batch.labels, batch)
    assert float(value) == pytest.approx(CE, rel=1e-6)
    # the labels given are the ones used: only token 1 labelled leaves -log p(1) = ln 2
    with pytest.warns(DeprecationWarning):
        value = CrossEntropyLoss()(hand_logits(), torch.tensor([[-100, 1, -100]]), batch)
    assert float(value) == pytest.approx(math.log(2), rel=1e-6)


def test_packed_and_training_forward_are_deprecated_aliases():
    with pytest.warns(DeprecationWarning, match="packed"):
        value = CrossEntropyLoss().packed(StubModel(), dict(packed()))  # the 0.1 dict
    assert float(value) == pytest.approx(CE, rel=1e-6)
    with pytest.warns(DeprecationWarning, match="training_forward"):
        value = CrossEntropyLoss().training_forward(StubModel(), padded())
    assert float(value) == pytest.approx(CE, rel=1e-6)


class OldLoss(Loss):
    """A third-party loss of 0.1: twice the token cross-entropy, padded batches only."""

    def __call__(self, logits, labels, batch):
        return 2 * token_cross_entropy(logits, labels)


class OldRunsTheModel(Loss):
    """0.1: a loss that runs the model itself (``training_forward``)."""

    def training_forward(self, model, batch):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return token_cross_entropy(logits, batch.labels) + 1

    def __call__(self, logits, labels, batch):
        raise RuntimeError("use training_forward")


class OldPacks(CrossEntropyLoss):
    """0.1: a padded loss and a packed one in the same class: trained packed."""

    def __call__(self, logits, labels, batch):
        return 3 * super().__call__(logits, labels, batch)

    def packed(self, model, batch):
        return 3 * packed_loss(model, batch)


class OldCallOnly(CrossEntropyLoss):
    """0.1: changes only the padded loss of a loss that packs: never trained packed."""

    def __call__(self, logits, labels, batch):
        return 4 * super().__call__(logits, labels, batch)


@pytest.mark.parametrize(
    ("make", "factor", "packs"),
    [(OldLoss, 2, False), (OldPacks, 3, True), (OldCallOnly, 4, False)],
)
def test_a_loss_of_the_0_1_convention_is_adapted_with_a_warning(make, factor, packs):
    old = make()
    assert old.supports_packing is packs
    with pytest.warns(DeprecationWarning, match="0.1 conventions"):
        loss = as_loss(old)
    assert isinstance(loss, LegacyLoss) and loss.supports_packing is packs
    with warnings.catch_warnings():
        # the subclasses of CrossEntropyLoss call it with logits: warned about above
        warnings.simplefilter("ignore", DeprecationWarning)
        value = loss(StubModel(), padded())
    assert float(value) == pytest.approx(factor * CE, rel=1e-6)
    if packs:
        assert float(loss(StubModel(), packed())) == pytest.approx(factor * CE, rel=1e-6)


def test_a_0_1_loss_that_runs_the_model_itself_is_called_through_training_forward():
    with pytest.warns(DeprecationWarning):
        loss = as_loss(OldRunsTheModel())
    assert not loss.supports_packing
    assert float(loss(StubModel(), padded())) == pytest.approx(CE + 1, rel=1e-6)
    with pytest.warns(DeprecationWarning):  # compute_loss did the same in 0.1
        assert float(compute_loss(StubModel(), OldRunsTheModel(), padded())) == pytest.approx(
            CE + 1, rel=1e-6
        )
