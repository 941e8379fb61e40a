"""Experiment configs: ``configs/<paper>.py:<variant>`` files and ``--config.a.b=value`` overrides.

The repository's ``configs/`` folder installs as the package ``diffrl.configs`` (pyproject.toml maps it), so its files
are found after ``pip install .`` as in a checkout: a spec names a file that exists (relative to the working directory,
or absolute), or else a bundled config by its file name (``diffuser.py:...`` and ``configs/diffuser.py:...`` both
resolve to the bundled ``diffuser.py`` from any directory).

A config file defines ``VARIANTS`` (a tuple of task names) and ``get_config(variant) -> ConfigDict``. Every
error here is a :class:`ConfigError` whose message names the bad thing and what would be accepted.
"""

from __future__ import annotations

import ast
import difflib
import importlib.resources
import importlib.util
import json
import pathlib
import sys

import ml_collections


def _bundled_configs_dir() -> pathlib.Path:
    """The folder of the bundled configs: the installed (or, editable, mapped) package ``diffrl.configs``; from a
    checkout that is only on ``sys.path`` (not installed), the ``configs/`` folder next to ``diffrl/``."""
    try:
        return pathlib.Path(str(importlib.resources.files("diffrl.configs")))
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent / "configs"


CONFIGS_DIR = _bundled_configs_dir()


class ConfigError(ValueError):
    """A config spec, variant or override that cannot be used."""


def _resolve_file(path: str) -> pathlib.Path:
    candidate = pathlib.Path(path)
    if candidate.is_file():
        return candidate
    bundled = CONFIGS_DIR / candidate.name
    if not candidate.is_absolute() and bundled.is_file():
        return bundled
    available = sorted(p.name for p in CONFIGS_DIR.glob("*.py") if not p.name.startswith("_"))
    raise ConfigError(f"config file {path!r} not found"
                      + (f"; bundled configs: {', '.join(available)}" if available else ""))


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"configs/diffuser.py:pointmaze-umaze"`` -> the variant's ConfigDict (``config.name`` set to the spec)."""
    path, sep, variant = spec.partition(":")
    file = _resolve_file(path)
    module_name = f"diffrl_config_{file.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    variants = tuple(getattr(module, "VARIANTS", ()))
    if not hasattr(module, "get_config") or not variants:
        raise ConfigError(f"{file} defines no get_config(variant) and VARIANTS")
    if not sep or variant not in variants:
        what = f"unknown variant {variant!r}" if sep else "no variant given"
        raise ConfigError(f"{what} in {file.name}; choose one of: {', '.join(variants)} "
                          f"(as --config={path}:{variants[0]})")
    config = module.get_config(variant)
    config.name = f"{file.stem}:{variant}"
    return config


def _parse_value(key: str, text: str, current):
    """Parse ``text`` as the type of the field it replaces (bool, int, float, str, tuple, list, None-able)."""
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"override {key}={text!r}: expected a boolean (true/false)")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigError(f"override {key}={text!r}: expected {type(current).__name__}, got unparsable text") from None
    if current is None or value is None:
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(current)(value)
    if type(value) is not type(current):
        raise ConfigError(f"override {key}={text!r}: expected {type(current).__name__}, got {type(value).__name__}")
    return value


def _all_keys(config, prefix="") -> list[str]:
    keys = []
    for key, value in config.items():
        keys.append(prefix + key)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_all_keys(value, prefix + key + "."))
    return keys


# What every count, size, rate and probability in any method's config must be, by the key's last part or last
# parts (the schema is shared: ``train.steps`` and ``train.q.steps`` both end in "steps"). Other keys are free.
POSITIVE_INTS = frozenset({
    "steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints", "ema_every", "gradient_accumulation",
    "horizon", "num_steps", "eval.episodes", "sampler_steps", "num_candidates", "plan.candidates", "pool_size",
    "pool_batch",
    "pool_steps", "latent_dim", "dim", "embed_dim", "gru_layers", "q_hidden", "time_dim", "depth", "per_beta_every",
    "hidden", "dim_mults", "prior_hidden_dims", "prior_steps", "prior_width", "prior_layers", "prior_heads",
    "prior_time_dim", "lr_decay_epochs", "backup_samples", "critic_hidden", "critic_depth",
    "num_states", "stride", "num_critics", "latent_step", "width", "layers", "heads", "inverse_hidden",
    "return_hidden", "prior_dim", "prior_dim_mults", "embed_hidden", "energy_hidden", "energy_depth", "num_supports",
    "support_steps", "support_batch",
})
NON_NEGATIVE_INTS = frozenset({"eval.every", "ema_start", "extra_steps", "pool_extra_steps", "warm_start_steps",
                               "replan_every", "t_stopgrad", "n_guide_steps", "plot_episodes", "seed", "retries",
                               "subgoal_batch"})
POSITIVE_FLOATS = frozenset({"learning_rate", "min_snr_gamma", "prior_min_snr_gamma", "grad_clip", "beta_min",
                             "beta_max", "too_far", "reach", "straight_distance",
                             "lcb_coef", "intrinsic_length", "guidance_weight", "energy_scale", "beta", "kl_weight"})
UNIT_INTERVAL = frozenset({"discount", "temperature", "ema_decay", "target_rate", "per_beta_start", "per_beta_end",
                           "lr_decay_rate", "tau", "subgoal_p"})  # (0, 1]
PROBABILITIES = frozenset({"drop_prob"})  # [0, 1)


def _invalid(value, key: str) -> str | None:
    """What is wrong with ``value`` for the dotted ``key`` (None when it is acceptable)."""
    def rule(names):
        return any(key == name or key.endswith("." + name) for name in names)

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    def is_number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if rule(POSITIVE_INTS):
        items = value if isinstance(value, (tuple, list)) else (value,)
        if (isinstance(value, (tuple, list)) and not value) or not all(is_int(x) and x > 0 for x in items):
            return "must be a positive integer" + (" (or a non-empty tuple of them)" if isinstance(value, (
                tuple, list)) else "")
    elif rule(NON_NEGATIVE_INTS):
        if not (is_int(value) and value >= 0):
            return "must be an integer >= 0"
    elif rule(POSITIVE_FLOATS):
        if value is not None and not (is_number(value) and value > 0):
            return "must be a number > 0"
    elif rule(UNIT_INTERVAL):
        if not (is_number(value) and 0 < value <= 1):
            return "must be in (0, 1]"
    elif rule(PROBABILITIES):
        if not (is_number(value) and 0 <= value < 1):
            return "must be in [0, 1)"
    return None


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Check every count, size, rate and probability of ``config`` (:data:`POSITIVE_INTS` and friends); the
    first bad value raises a ConfigError naming its key. Returns ``config``."""
    for key in _all_keys(config):
        value = config
        for part in key.split("."):
            value = value[part]
        if isinstance(value, ml_collections.ConfigDict):
            continue
        problem = _invalid(value, key)
        if problem:
            raise ConfigError(f"config key {key}={value!r} {problem}")
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply ``["train.batch_size=64", ...]`` in place and :func:`validate` the result; unknown keys, mistyped and
    out-of-range values raise ConfigError."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form --config.KEY=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
            if not isinstance(child, ml_collections.ConfigDict):
                node = None
                break
            node = child
        if node is None or leaf not in node:
            close = difflib.get_close_matches(key, _all_keys(config), n=3)
            raise ConfigError(f"unknown config key {key!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        if isinstance(node[leaf], ml_collections.ConfigDict):
            raise ConfigError(f"config key {key!r} is a group; override one of its fields ({key}.FIELD=VALUE)")
        with node.unlocked():
            node[leaf] = _parse_value(key, text, node[leaf])
    return validate(config)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.KEY=VALUE`` / ``--config.KEY VALUE`` from the other arguments."""
    rest, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise ConfigError(f"override {arg} has no value; write {arg}=VALUE")
                body, i = f"{body}={argv[i + 1]}", i + 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json(indent=2, sort_keys=True)


def config_from_json(text: str) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_json`; JSON lists come back as tuples (configs use tuples for shapes)."""

    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuples(json.loads(text)))


def mismatched_keys(saved: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                    keys) -> list[tuple[str, object, object]]:
    """``(key, saved value, new value)`` for each dotted key whose JSON value differs; a missing group reads None."""

    def value_at(root, key):
        for part in key.split("."):
            root = root.get(part) if root is not None else None
        return json.loads(root.to_json()) if isinstance(root, ml_collections.ConfigDict) else root

    found = []
    for key in keys:
        old, new = value_at(saved, key), value_at(config, key)
        if json.dumps(old, sort_keys=True, default=list) != json.dumps(new, sort_keys=True, default=list):
            found.append((key, old, new))
    return found
