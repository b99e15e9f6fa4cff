"""Hook implementations of the standard plugin. Every object is registered lazily."""

from surveysim_core import hookimpl

_M = "surveysim_std"


@hookimpl
def register_answer_types(register):
    register("integer", f"{_M}.answer_types:IntegerAnswer")
    register("categorical", f"{_M}.answer_types:CategoricalAnswer")


@hookimpl
def register_parsers(register):
    register("first_integer", f"{_M}.parsers:first_integer")
    register("choice", f"{_M}.parsers:choice")


@hookimpl
def register_metrics(register):
    for name, cls in [
        ("kl", "KL"),
        ("rmse", "RMSE"),
        ("success_rate", "SuccessRate"),
        ("wasserstein", "Wasserstein"),
        ("representativeness", "Representativeness"),
        ("accuracy", "Accuracy"),
        ("nll", "NegativeLogLikelihood"),
        ("pearson", "Pearson"),
        ("spread", "Spread"),
    ]:
        register(name, f"{_M}.metrics:{cls}")


@hookimpl
def register_samplers(register):
    register("test_split", f"{_M}.samplers:TestSplitSampler")
    register("marginals", f"{_M}.samplers:MarginalSampler")
    register("file", f"{_M}.samplers:FileSampler")


@hookimpl
def register_baselines(register):
    register("random", f"{_M}.baselines:RandomBaseline")
    register("marginal", f"{_M}.baselines:MarginalBaseline")


@hookimpl
def register_decoders(register):
    register("sample", f"{_M}.decoders:SampleDecoder")
    register("exact", f"{_M}.decoders:ExactDecoder")


@hookimpl
def register_data_formats(register):
    register("csv", f"{_M}.formats:read_csv")
    register("parquet", f"{_M}.formats:read_parquet")
    register("jsonl", f"{_M}.formats:read_jsonl")
