"""Training texts and prompts in the model's own chat format.

A training text is the chat template applied to (system, user) with the generation prompt,
followed by the answer text and whatever the template puts after an assistant message (the
end-of-turn token). The three parts are tokenised separately and concatenated, so the answer's
token span is known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from surveysim_core.protocols import Example, Prompt

IGNORE_INDEX = -100


def messages(prompt: Prompt) -> list[dict[str, str]]:
    out = []
    if prompt.system:
        out.append({"role": "system", "content": prompt.system})
    for question, answer in getattr(prompt, "history", ()):
        out.append({"role": "user", "content": question})
        out.append({"role": "assistant", "content": answer})
    out.append({"role": "user", "content": prompt.user})
    return out


def prompt_text(tokenizer: Any, prompt: Prompt) -> str:
    """The prompt as the model sees it when asked to answer (ends where the answer starts)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages(prompt), tokenize=False, add_generation_prompt=True
        )
    # a base model without a template: a plain layout
    system = f"{prompt.system}\n\n" if prompt.system else ""
    turns = "".join(f"{q} {a}\n" for q, a in getattr(prompt, "history", ()))
    return f"{system}{turns}{prompt.user} "


def end_of_turn(tokenizer: Any, prompt: Prompt) -> str:
    """What the chat template writes after an assistant message (e.g. ``<|im_end|>``)."""
    marker = "\u2063ANSWER\u2063"
    if getattr(tokenizer, "chat_template", None):
        head = prompt_text(tokenizer, prompt)
        full = tokenizer.apply_chat_template(
            [*messages(prompt), {"role": "assistant", "content": marker}], tokenize=False
        )
        if full.startswith(head) and marker in full[len(head) :]:
            tail = full[len(head) :].split(marker, 1)[1]
            tail = tail.rstrip("\n ")
            if tail:
                return tail
    return tokenizer.eos_token or ""


@dataclass
class EncodedExample:
    """Token ids of one training text, its labels and the answer's token span."""

    input_ids: list[int]
    labels: list[int]
    answer_start: int  # index in input_ids of the first answer token
    answer_length: int  # answer tokens, without the end-of-turn token
    truncated: bool = False


def encode_example(
    tokenizer: Any, example: Example, loss_on: str = "answer", max_length: int | None = None
) -> EncodedExample:
    prompt_ids = tokenizer(prompt_text(tokenizer, example.prompt), add_special_tokens=False)[
        "input_ids"
    ]
    answer_ids = tokenizer(example.answer_text, add_special_tokens=False)["input_ids"]
    tail = end_of_turn(tokenizer, example.prompt)
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    truncated = False
    if max_length is not None:
        room = max_length - len(answer_ids) - len(tail_ids)
        if room < 1:
            raise ValueError(
                f"max_length {max_length} leaves no room for the prompt of question"
                f" {example.question!r} (answer {example.answer_text!r})"
            )
        if len(prompt_ids) > room:
            prompt_ids = prompt_ids[-room:]
            truncated = True
    ids = list(prompt_ids) + list(answer_ids) + list(tail_ids)
    if loss_on == "all":
        labels = list(ids)
    elif loss_on == "answer":
        labels = [IGNORE_INDEX] * len(prompt_ids) + list(answer_ids) + list(tail_ids)
    else:
        raise ValueError(f"loss_on must be 'answer' or 'all', not {loss_on!r}")
    return EncodedExample(ids, labels, len(prompt_ids), len(answer_ids), truncated)


def encode_prompts(tokenizer: Any, prompts: Sequence[Prompt]) -> list[list[int]]:
    return [
        tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts
    ]
