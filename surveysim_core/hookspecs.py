"""Every hook that surveysim plugins can implement.

Registration hooks receive a ``register(name, obj)`` callback owned by the core. ``obj`` may be
the object itself or a ``"module:attribute"`` string that is imported on first use, so that a
plugin with heavy dependencies (torch, scikit-learn) costs nothing until it is used. An object
that takes options may also be registered as ``register(name, obj, options="module:Model")`` (or
``options=None``: it takes none), so that validating a configuration imports only the options
model. Registering a name twice raises an error that names both plugins.

Hooks are always called with keyword arguments; an implementation may accept fewer arguments than
the specification lists.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("surveysim")
hookimpl = pluggy.HookimplMarker("surveysim")


@hookspec
def register_surveys(register):
    """Register questionnaires: ``register(name, Survey)``."""


@hookspec
def register_templates(register):
    """Register Jinja prompt or report templates: ``register(name, source_text)``."""


@hookspec
def register_answer_types(register):
    """Register answer types (integer scale, categorical, ...): ``register(name, class)``."""


@hookspec
def register_parsers(register):
    """Register answer parsers that turn generated text into an answer: ``register(name, parser)``."""


@hookspec
def register_decoders(register):
    """Register decoders, the ways an answer is drawn from a model: ``register(name, decoder)``."""


@hookspec
def register_samplers(register):
    """Register population samplers that draw virtual participants' demographics."""


@hookspec
def register_losses(register):
    """Register fine-tuning losses: ``register(name, loss_class_or_path)``."""


@hookspec
def register_metrics(register):
    """Register metrics comparing model answers with human answers: ``register(name, metric)``."""


@hookspec
def register_backends(register):
    """Register model backends that fine-tune and answer: ``register(name, backend_class_or_path)``."""


@hookspec
def register_baselines(register):
    """Register baselines that predict answers without a language model."""


@hookspec
def register_data_formats(register):
    """Register readers for long-format survey files: ``register(suffix, reader)``."""


@hookspec
def register_commands(cli):
    """Add click commands or groups to the ``surveysim`` command line."""


@hookspec
def surveysim_write_report(run):
    """Write extra outputs (figures, tables) into a finished run's directory."""
