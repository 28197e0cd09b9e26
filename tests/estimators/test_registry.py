"""The generic registry: spec strings, option checking, close matches, entry points."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estimators import ESTIMATORS, Estimator, EstimatorInfo, Option, SpecError
from estimators.registry import Registry, format_value, parse_value, split_spec
from problems import PROBLEMS


def test_names_lists_every_builtin():
    assert {"reinforce", "gumbel-softmax", "st-gumbel-softmax", "straight-through", "exact"} <= set(
        ESTIMATORS.names()
    )
    assert {"bernoulli-toy", "categorical-linear"} <= set(PROBLEMS.names())


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("reinforce", "reinforce:baseline=none,set_probability=auto"),
        ("reinforce:baseline=loo", "reinforce:baseline=loo,set_probability=auto"),
        (" gumbel-softmax : temperature = 2 ", "gumbel-softmax:temperature=2.0"),
        ("gumbel-softmax:temperature=1e-3", "gumbel-softmax:temperature=0.001"),
        ("straight-through", "straight-through"),
    ],
)
def test_estimator_specs_round_trip(spec, canonical):
    made = ESTIMATORS.make(spec)
    assert made.spec == canonical == ESTIMATORS.canonical(spec)
    assert ESTIMATORS.make(made.spec).spec == made.spec


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("bernoulli-toy", "bernoulli-toy:dim=1,target=0.45,logit=0.0"),
        ("bernoulli-toy:logit=-1,dim=4", "bernoulli-toy:dim=4,target=0.45,logit=-1.0"),
        ("categorical-linear:k=100", "categorical-linear:k=100,seed=0"),
    ],
)
def test_problem_specs_round_trip(spec, canonical):
    made = PROBLEMS.make(spec)
    assert made.spec == canonical == PROBLEMS.canonical(spec)
    assert PROBLEMS.make(made.spec).spec == made.spec


def test_values_parse_as_bool_int_float_string():
    assert split_spec("x:a=true,b=False,c=3,d=-2.5,e=loo") == (
        "x", {"a": True, "b": False, "c": 3, "d": -2.5, "e": "loo"}
    )


@given(st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.from_regex(r"[a-z]+", fullmatch=True)))
def test_value_text_round_trips(value):
    parsed = parse_value(format_value(value))
    if isinstance(value, str) and value.lower() in ("true", "false", "inf", "infinity", "nan"):
        return  # words that are also values of another type
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("gumbel-sofmax", "did you mean 'gumbel-softmax'"),
        ("reinforce:baselin=loo", "unknown option 'baselin' for 'reinforce'; valid options: baseline=none"),
        ("reinforce:baseline=mean", "expected one of none, loo"),
        ("gumbel-softmax:temperature=0", "expected a finite number > 0"),
        ("gumbel-softmax:temperature=-1", "expected a finite number > 0"),
        ("gumbel-softmax:temperature=nan", "expected a finite number > 0"),
        ("gumbel-softmax:temperature=hot", "expected a number"),
        ("gumbel-softmax:temperature", "expected key=value pairs"),
        ("gumbel-softmax:temperature=1,temperature=2", "given twice"),
        ("", "empty spec"),
    ],
)
def test_bad_estimator_specs_say_what_is_allowed(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ESTIMATORS.make(spec)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bernoulli-toy:dim=0", "expected an integer >= 1"),
        ("bernoulli-toy:dim=1.5", "expected an integer"),
        ("bernoulli-toy:logit=inf", "expected a finite number"),
        ("categorical-linear:k=1", "expected an integer >= 2"),
        ("bernouli-toy", "did you mean 'bernoulli-toy'"),
    ],
)
def test_bad_problem_specs_say_what_is_allowed(spec, message):
    with pytest.raises(SpecError, match=message):
        PROBLEMS.make(spec)


def test_direct_construction_is_checked_too():
    with pytest.raises(SpecError, match="temperature"):
        ESTIMATORS.get("gumbel-softmax")(temperature=0.0)


def test_duplicate_names_are_refused():
    registry = Registry("thing", "estibench.test-things")

    class A(Estimator):
        info = EstimatorInfo(name="dup", description="", families=("bernoulli",),
                             unbiased=True, pathwise=False)

    class B(Estimator):
        info = A.info

    registry.register(A)
    registry.register(A)  # the same class again is harmless
    with pytest.raises(ValueError, match="already registered"):
        registry.register(B)


def _plugin_module():
    """A stand-in for a third-party package that defines an estimator."""
    module = types.ModuleType("estibench_test_plugin")

    class HalfReinforce(Estimator):
        info = EstimatorInfo(
            name="plugin-estimator", description="A third-party estimator.",
            families=("bernoulli",), unbiased=False, pathwise=False,
            options=(Option("scale", 0.5),),
        )

    module.HalfReinforce = HalfReinforce
    return module


def test_third_party_entries_come_in_through_entry_points(monkeypatch):
    monkeypatch.setitem(sys.modules, "estibench_test_plugin", _plugin_module())
    entry = importlib.metadata.EntryPoint(
        name="plugin-estimator", value="estibench_test_plugin:HalfReinforce",
        group="estibench.test-plugins",
    )
    real = importlib.metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == "estibench.test-plugins":
            return importlib.metadata.EntryPoints([entry])
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    registry = Registry("estimator", "estibench.test-plugins")
    assert registry.names() == ["plugin-estimator"]
    made = registry.make("plugin-estimator:scale=2")
    assert made.spec == "plugin-estimator:scale=2.0"


def test_a_broken_plugin_warns_and_is_skipped(monkeypatch):
    entry = importlib.metadata.EntryPoint(
        name="broken", value="no_such_module_anywhere:Thing", group="estibench.test-broken"
    )
    monkeypatch.setattr(
        importlib.metadata, "entry_points",
        lambda **kw: importlib.metadata.EntryPoints([entry] if kw.get("group") == "estibench.test-broken" else []),
    )
    registry = Registry("estimator", "estibench.test-broken")
    with pytest.warns(UserWarning, match="could not load estimator plug-in 'broken'"):
        assert registry.names() == []


def test_integers_beyond_64_bits_are_refused_by_name():
    """torch takes sizes and seeds as 64-bit integers: 2^64 would be a TypeError inside it."""
    with pytest.raises(SpecError, match="an integer that fits in 64 bits"):
        PROBLEMS.make("bernoulli-toy:dim=18446744073709551616")
