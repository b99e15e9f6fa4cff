"""Two CPU processes (torchrun, gloo): fine-tune, then answer with prompts split across them.

Run as a script, this file is the worker each process executes; as a test it launches two
workers and checks that every prompt got exactly one answer, in order, and the same answers as a
single process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

N_PROMPTS = 13  # odd, so the processes get unequal shares


def prompts():
    from surveysim_core.protocols import Prompt

    return [Prompt(f"act as {{age: {i}}}", f"Item {i}? Score:") for i in range(N_PROMPTS)]


def training_examples():
    from surveysim_core.protocols import Example, Prompt

    return [
        Example(Prompt(f"act as {{age: {i}}}", "Score:"), "7", "q1", 7.0, None, f"s{i}")
        for i in range(10)
    ]


def worker(model_dir: str, out_dir: str) -> None:
    from surveysim_hf.backend import HFBackend
    from surveysim_hf.losses import CrossEntropyLoss
    from surveysim_hf.options import HFOptions

    options = HFOptions(
        model=model_dir,
        progress_bars=False,
        generation_batch_size=1,  # no padding, so answers match a single process bit for bit
        epochs=1,
        batch_size=2,
        learning_rate=1e-2,
        threads=1,
    )
    backend = HFBackend(options, Path(out_dir))
    acc = backend.accelerator
    adapter = backend.fine_tune(
        training_examples(),
        training_examples()[:3],
        CrossEntropyLoss(),
        Path(out_dir) / "adapter",
        False,
    )
    base = backend.load(None)
    tuned = backend.load(adapter)
    result = {
        "processes": acc.num_processes,
        "greedy": base.generate(prompts(), 0.0, 6, seed=0),
        "sampled": base.generate(prompts(), 1.0, 6, seed=3),
        "tuned": tuned.generate(prompts(), 1.0, 6, seed=3),
    }
    with open(Path(out_dir) / f"answers-{acc.process_index}.json", "w", encoding="utf-8") as f:
        json.dump(result, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_answer_every_prompt_once_in_order(tmp_path):
    from surveysim_hf.testing import write_tiny_model

    model_dir = write_tiny_model(tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    multi = tmp_path / "multi"
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        __file__, str(model_dir), str(multi),
    ]  # fmt: skip
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    single = tmp_path / "single"
    done = subprocess.run(
        [sys.executable, __file__, str(model_dir), str(single)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    ranks = [json.loads((multi / f"answers-{r}.json").read_text()) for r in (0, 1)]
    alone = json.loads((single / "answers-0.json").read_text())
    assert [r["processes"] for r in ranks] == [2, 2] and alone["processes"] == 1
    for key in ("greedy", "sampled", "tuned"):
        # every process holds the merged answers: one per prompt, in the prompts' order
        assert ranks[0][key] == ranks[1][key]
        assert len(ranks[0][key]) == N_PROMPTS
    # the merged answers are exactly those of a single process: each prompt has its own random
    # stream and no padding (batch size 1), so the split cannot change an answer
    assert ranks[0]["greedy"] == alone["greedy"]
    assert ranks[0]["sampled"] == alone["sampled"]
    assert len(set(ranks[0]["sampled"])) > 1
    log = (multi / "adapter" / "train_log.csv").read_text().splitlines()
    # 10 examples, 2 per process per step: 3 optimizer steps, then validation
    assert [line.split(",")[2] for line in log[1:]] == ["train"] * 3 + ["val"]


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
