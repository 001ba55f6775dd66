"""Checks of config values before any work starts, as a table of rules per key.

The types are yacs's business (an override of the wrong type is already refused); these rules check ranges
and names, whose violations otherwise surface late and far from the cause: a negative iteration count
trains nothing and evaluates a random model, a zero batch fails inside the DataLoader. Every violation is
one error naming the key, the bad value and what is allowed.
"""
import math
from collections.abc import Callable, Mapping

from fvcore.common.config import CfgNode

from .config import ConfigError


class Rule:
    """What one key allows; ``problem(value)`` is None or ``(exception type, text)`` to report.

    ``not_implemented`` recognises values that are meaningful (Detectron2 accepts them) but not built here:
    those are a NotImplementedError, anything else failing ``test`` a ConfigError. ``note``, added to both,
    says what limits the allowed values.
    """

    def __init__(self, allowed: str, test: Callable[[object], bool],
                 not_implemented: Callable[[object], bool] | None = None, note: str = ""):
        self.allowed, self.test, self.not_implemented, self.note = allowed, test, not_implemented, note

    def problem(self, value):
        if self.not_implemented is not None and self.not_implemented(value):
            return NotImplementedError, f"is not implemented yet ({self.note}); supported: {self.allowed}"
        if not self.test(value):
            return ConfigError, f"must be {self.allowed}" + (f" ({self.note})" if self.note else "")
        return None


def _member(value, options) -> bool:
    """``value in options`` without 1 == True == 1.0: a value must also have the option's type."""
    return any(type(value) is type(option) and value == option for option in options)


def choice(*allowed, planned=(), note: str = "") -> Rule:
    """One of ``allowed``; one of ``planned`` is known but not implemented."""
    return Rule("one of " + ", ".join(map(repr, allowed)), lambda value: _member(value, allowed),
                (lambda value: _member(value, planned)) if planned else None, note)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule:
    if maximum is None:
        return Rule(f"an integer >= {minimum}", lambda v: is_int(v) and v >= minimum)
    return Rule(f"an integer from {minimum} to {maximum}", lambda v: is_int(v) and minimum <= v <= maximum)


def number(low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number within the bounds given (open bounds exclude the bound itself)."""
    def test(value):
        return (is_number(value)
                and (low is None or (value > low if low_open else value >= low))
                and (high is None or (value < high if high_open else value <= high)))
    if low is not None and high is not None:
        allowed = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"a number {'>' if low_open else '>='} {low}"
    elif high is not None:
        allowed = f"a number {'<' if high_open else '<='} {high}"
    else:
        allowed = "a finite number"
    return Rule(allowed, test)


def sequence(allowed: str, item: Rule, length: int | None = None, min_length: int = 0, order=None,
             not_implemented: Callable[[object], bool] | None = None, note: str = "") -> Rule:
    """A list or tuple of items passing ``item``, ``length`` of them (or at least ``min_length``); ``order``
    (e.g. ``operator.lt``) must hold between neighbours."""
    def test(value):
        return (isinstance(value, (list, tuple))
                and (len(value) == length if length is not None else len(value) >= min_length)
                and all(item.test(v) for v in value)
                and (order is None or all(order(a, b) for a, b in zip(value, value[1:]))))
    return Rule(allowed, test, not_implemented, note)


BOOLEAN = Rule("True or False", lambda v: isinstance(v, bool))
STRING = Rule("a string", lambda v: isinstance(v, str))


def get_key(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def leaf_keys(cfg: CfgNode, prefix: str = "") -> list:
    """Every key that holds a value (not a sub-node), dotted: what a rule table must cover."""
    keys = []
    for name, value in cfg.items():
        if isinstance(value, CfgNode):
            keys += leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def fail(key: str, value, text: str, error: type = ConfigError):
    raise error(f"{key} {value!r}: {text}")


def check_rules(cfg: CfgNode, rules: Mapping[str, Rule]) -> None:
    """Raise for the first key (in ``rules`` order) whose value breaks its rule."""
    for key in rules:
        value = get_key(cfg, key)
        problem = rules[key].problem(value)
        if problem is not None:
            error, text = problem
            fail(key, value, text, error)
