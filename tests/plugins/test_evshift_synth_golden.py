"""Golden hashes of the generated EV-shift population.

The sha256 digests below were taken from ``write_population`` at commit 93da74e (the
generator with its parameter tables written in Python), before the parameters moved to
``synth_params.yaml`` and the generator was split into stage functions. They prove the
move changed no byte of ``responses.csv`` or ``truth.json``. Should a future numpy or
pandas change float formatting or random streams, re-derive them from that commit.
"""

from __future__ import annotations

import hashlib

import pytest
from surveysim_evshift.synth import write_population

GOLDEN = {
    (200, 0): (
        "c103dd818539c654622b154df320295140235140eada8ad7b03c8594a0c84dc8",
        "adf33a1ae24cf783187c8c1cac5bbcf4091a57c9afda46945f14902a3f1fab89",
    ),
    (200, 7): (
        "23509ef42042fac47edc3ee0112411662496baa331c3832ba64bededdae2b558",
        "e94e408e16bf0ed06a571160d6414245276d5fd8c5b579ec11bffb0eefa9dfbb",
    ),
    (4045, 0): (
        "b30c27b193a4767395665ce8ed90d22a7705d8e7aa0d08b5c4804193ff9a953a",
        "89b7888b19cd3c0f460d534d3db21b629e9535b4d29c4e29f189963896479bc1",
    ),
}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("n_subjects", "seed"), sorted(GOLDEN))
def test_population_files_match_golden_hashes(tmp_path, n_subjects, seed):
    csv_path = write_population(tmp_path, n_subjects=n_subjects, seed=seed)
    want_csv, want_truth = GOLDEN[(n_subjects, seed)]
    assert _sha256(csv_path) == want_csv
    assert _sha256(tmp_path / "truth.json") == want_truth


def test_parameters_come_from_the_packaged_data_file():
    from surveysim_evshift.synth import PARAMS_PATH, load_params

    assert PARAMS_PATH.name == "synth_params.yaml"
    params = load_params()
    # Spot values from the published tables (2020 census; the model's answer style).
    assert params["state_population_millions"]["california"] == 39.54
    assert params["answer_style"]["fifty_prob"] == 0.35
    assert params["intervention_groups"]["environmental"] == [21, 22]


def test_a_parameter_file_missing_a_table_is_named(tmp_path):
    import yaml
    from surveysim_evshift.synth import load_params

    from surveysim_core.errors import ConfigError

    params = load_params()
    del params["answer_style"]
    params["answer_stlye"] = {}
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params\.yaml.*answer_style.*answer_stlye"):
        load_params(bad)
