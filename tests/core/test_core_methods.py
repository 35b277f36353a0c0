"""The registries of the extension points: named entries, duplicates refused, lookups that list names."""
import pytest

from dm3d_exp.core.methods import METHODS, OPTIONAL_SETTINGS, Method, get_method, register_method
from dm3d_exp.core.registry import Registry


def test_registry_refuses_duplicates_and_names_the_registered_entries():
    reg = Registry("widget")
    reg.add("a", 1)
    reg.register("b")(2)
    assert reg.names() == ("a", "b") and reg.get("b") == 2 and "a" in reg and len(reg) == 2
    with pytest.raises(ValueError, match="widget 'a' is already registered .1.; registered: a, b"):
        reg.add("a", 3)
    assert reg.get("a") == 1  # the first registration stays
    with pytest.raises(KeyError, match="unknown widget 'c', expected one of: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="non-empty string"):
        reg.add("", 4)


def test_every_shipped_method_is_registered_with_what_it_allocates_by():
    methods = {name: m for name, m in METHODS.items()}
    assert set(methods) == {"dm3d", "rd_measured", "uniform", "uniform_plus", "global_magnitude", "lamp", "erk", "dense"}
    assert methods["dm3d"].curves == "configured" and methods["rd_measured"].curves == "measured"
    assert {n for n, m in methods.items() if m.rule} == {"uniform", "uniform_plus", "global_magnitude", "lamp", "erk"}
    assert not methods["dense"].prunes and all(m.prunes for n, m in methods.items() if n != "dense")
    # only the DP over curves reads the optional settings
    assert {n for n, m in methods.items() if m.honours} == {"dm3d", "rd_measured"}
    assert set(methods["dm3d"].honours) == set(OPTIONAL_SETTINGS)


def test_methods_are_checked_when_defined_and_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="curves='fisher', expected None, 'configured' or 'measured'"):
        Method("x", "doc", curves="fisher")
    with pytest.raises(ValueError, match="by curves or by a rule, not both"):
        Method("x", "doc", curves="measured", rule=lambda *a: None)
    with pytest.raises(ValueError, match=r"honours \['units'\]"):
        Method("x", "doc", honours=("units",))
    with pytest.raises(ValueError, match="'lamp' is already registered"):
        register_method(Method("lamp", "a second lamp"))
    assert get_method("lamp").doc == "one global LAMP-score threshold"
