"""One registry type: names, did-you-mean, the duplicate rule, every kind of entry, and plugins."""

import sys
import textwrap

import pytest

from editscope.registry import DuplicateNameError, PluginError, Registry, UnknownNameError, load_plugins

pytestmark = pytest.mark.usefixtures("tmp_cache")


def test_names_are_normalised_and_unknown_ones_get_the_nearest():
    r: Registry[int] = Registry("colour", {"dark_red": 1, "sky-blue": 2})
    assert r["DARK-RED"] == 1 and r[" Sky_Blue "] == 2 and "dark-red" in r and "green" not in r
    assert list(r) == ["dark_red", "sky-blue"] and len(r) == 2 and r.resolve("SKY_BLUE") == "sky-blue"
    assert r.get("green") is None and r.get("green", 0) == 0 and dict(r.items()) == {"dark_red": 1, "sky-blue": 2}
    with pytest.raises(UnknownNameError) as e:
        r["dark_rad"]
    assert str(e.value) == "unknown colour 'dark_rad'. Did you mean 'dark_red'? Known: dark_red, sky-blue"
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(UnknownNameError, match=r"unknown colour 'x'\. Known: dark_red, sky-blue$"):
        r["x"]


def test_one_duplicate_rule():
    r: Registry[object] = Registry("thing")
    a, b = object(), object()
    assert r.register("a", a) is a and r.register("A", a) is a  # the same entry again: nothing happens
    with pytest.raises(DuplicateNameError, match="a thing named 'a' is already registered.*overwrite=True"):
        r.register("a", b)
    assert r.register("a", b, overwrite=True) is b and r["a"] is b
    r.unregister("A")
    assert "a" not in r
    with pytest.raises(ValueError, match="non-blank"):
        r.register(" padded ", a)


def test_every_named_kind_is_a_registry():
    from editscope.interventions import INTERVENTION_TYPES
    from editscope.methods.base import METHODS
    from editscope.metrics import CORPORA, TASKS
    from editscope.metrics.edit_metrics import METRICS
    from editscope.models.arch import ARCH_SPECS
    from editscope.probes.registry import SUITES

    for reg, name in [(METHODS, "ft-l"), (SUITES, "counterfact"), (METRICS, "answer_unchanged"), (TASKS, "piqa"),
                      (CORPORA, "me_ppl_50"), (ARCH_SPECS, "gemma3_text"), (INTERVENTION_TYPES, "grace")]:
        assert isinstance(reg, Registry) and name in reg, (reg.kind, name)
        assert name.upper().replace("_", "-") in reg  # the same normalisation everywhere
    with pytest.raises(UnknownNameError, match="Did you mean 'lambada'"):
        TASKS["lambda"]


def test_method_names_and_hyperparameters_are_checked_when_the_study_is_read():
    from editscope.runner import ConfigError, build_plan, parse_config

    base = {"name": "t", "model": "tiny:llama", "edits": [{"prompt": "2+2=", "target_new": "5", "subject": "2+2"}],
            "probes": [{"suite": "arithmetic", "args": {"n": 3}}]}
    cfg = parse_config({**base, "methods": ["FT_L", {"method": "Rome", "hparams": {"layer": 1}}]})
    plan = build_plan(cfg)
    assert [m.name for m in cfg.all_methods()] == ["FT_L", "Rome"] and plan.units
    for methods, match in [(["ft_k"], r"unknown edit method 'ft_k'\. Did you mean 'ft-m' or 'ft-l'"),
                           ([{"method": "rome", "hparams": {"layr": 1}}], r"hparams\.layr.*Did you mean 'layer'"),
                           ([{"method": "ft-m", "hparams": {"lr": -1}}], r"hparams\.lr")]:
        with pytest.raises(ConfigError, match=match):
            parse_config({**base, "methods": methods})


PLUGIN = '''
from editscope.methods.base import register_method
from editscope.methods.finetune import FTM
from editscope.probes.registry import register_suite
from editscope.requests import Probe, ProbeSet


@register_method
class MyFT(FTM):
    name = "my-ft"
    summary = "a lab's fine-tuning variant"


register_suite("my-facts", "two facts", lambda **kw: ProbeSet([Probe(prompt="1+1=", target="2", category="general"),
                                                                Probe(prompt="3+3=", target="6", category="general")]))
'''


def test_plugins_register_methods_and_suites_before_the_study_is_checked(tmp_path, monkeypatch):
    from editscope.methods.base import METHODS
    from editscope.probes.registry import SUITES
    from editscope.runner import ConfigError, parse_config, run_study

    (tmp_path / "mylab_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (tmp_path / "broken_plugin.py").write_text("import not_a_module_anywhere\n")
    (tmp_path / "clash_plugin.py").write_text("from editscope.methods.base import register_method\n"
                                              "from editscope.methods.finetune import FTM\n"
                                              "@register_method\nclass Rome2(FTM):\n    name = 'rome'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = {"name": "plug", "model": "tiny:llama", "edits": [{"prompt": "2+2=", "target_new": "5"}],
            "methods": ["my-ft"], "probes": ["my-facts"]}
    with pytest.raises(ConfigError, match="unknown edit method 'my-ft'"):
        parse_config(base)
    try:
        cfg = parse_config({**base, "plugins": ["mylab_plugin"]})
        assert cfg.model_dump()["plugins"] == ["mylab_plugin"]
        run = run_study(cfg, tmp_path / "run", progress=False)
        from editscope.report.data.results import load_results

        res = load_results(run)
        assert res.methods == ["my-ft"] and {r["category"] for r in res.rows} == {"general"}
        assert len(res.final_rows("my-ft")) == 2 and not res.partial  # the plugin's method edited, its suite probed
    finally:
        METHODS.unregister("my-ft")
        SUITES.unregister("my-facts")
        sys.modules.pop("mylab_plugin", None)
    for plugin, match in [("broken_plugin", r"plugins: plugin 'broken_plugin' does not import: ModuleNotFoundError"),
                          ("clash_plugin", r"plugins: plugin 'clash_plugin' registers a name that is taken: a edit method|"
                                           r"plugin 'clash_plugin' registers a name that is taken"),
                          ("no_such_plugin", "does not import")]:
        with pytest.raises(ConfigError, match=match):
            parse_config({**base, "methods": ["ft-m"], "probes": ["facts"], "plugins": [plugin]})
    with pytest.raises(ConfigError, match="plugins: give a list of module names"):
        parse_config({**base, "plugins": "mylab_plugin"})
    # a study without plugins keeps the config hash it always had (the key is left out)
    assert "plugins" not in parse_config({**base, "methods": ["ft-m"], "probes": ["facts"]}).model_dump()


def test_entry_point_plugins_load_once(monkeypatch):
    import editscope.registry as registry

    calls = []

    class EP:
        name, value = "lab", "lab.plugin:setup"

        def load(self):
            calls.append(1)

    class Bad(EP):
        name = "bad"

        def load(self):
            raise RuntimeError("boom")

    monkeypatch.setattr(registry, "_loaded", set())
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [EP()] if group == registry.ENTRY_POINT_GROUP else [])
    assert load_plugins() == ["lab (lab.plugin:setup)"] and load_plugins() == [] and calls == [1]
    monkeypatch.setattr(registry, "_loaded", set())
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [Bad()])
    with pytest.raises(PluginError, match=r"plugin 'bad \(lab.plugin:setup\)' does not import: RuntimeError: boom"):
        load_plugins()
