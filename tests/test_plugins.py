"""Loading connector plugins: throwaway plugins on a fresh manager, a fake installed distribution, and the real CLI."""

from __future__ import annotations

import inspect
import json
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import connectors.fal
from connector_sdk import __version__, hookimpl, hookspecs
from connector_sdk.connector import Connector
from connector_sdk.errors import UnknownConnector
from connector_sdk.models import AccountInfo, ConnectorConfig, Manifest
from connector_sdk.plugins import DISABLED_ENV, LoadError, PluginInfo, PluginLoadError, Plugins, get_plugin_manager
from tests.conftest import CliRunner

REGISTER = "connector_sdk_register_connectors"


@pytest.fixture(autouse=True)
def _no_disabled_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLED_ENV, raising=False)


class ToyConfig(ConnectorConfig):
    token: SecretStr


def toy_manifest(connector_id: str) -> Manifest:
    return Manifest(
        id=connector_id,
        display_name="Toy",
        vendor="Toy Inc.",
        description="A connector that exists only in this test.",
        version="9.9.9",
        category="testing",
        authentication={
            "type": "api_key",
            "header": "Authorization",
            "format": "Bearer {token}",
            "required_scope": "read",
            "secret_field": "token",
            "setup_steps": ["Create a token."],
        },
        config_schema=ToyConfig.model_json_schema(),
        poll_interval_seconds=3600,
        data_collected=[{"name": "usage", "description": "usage", "dimensions": ["model"], "measures": ["cost"]}],
        permissions={"read_only": True},
        initial_sync="instant",
    )


def make_connector(connector_id: str | None, *, manifest_id: str | None = None, config_model: Any = ToyConfig):
    """A tiny Connector subclass; ``connector_id=None`` leaves ``id`` unset."""

    class Toy(Connector):
        @classmethod
        def manifest(cls) -> Manifest:
            return toy_manifest(manifest_id or connector_id or "toy")

        def check(self) -> AccountInfo:
            return AccountInfo(account="toy-account")

        def sync(self, window, context):
            yield from ()

    Toy.config_model = config_model
    if connector_id is not None:
        Toy.id = connector_id
    Toy.__name__ = Toy.__qualname__ = f"Toy_{connector_id or 'noid'}"
    return Toy


class Plugin:
    """A plugin object whose register hook returns whatever ``registers`` gives."""

    def __init__(self, name: str, registers: Callable[[], Any]) -> None:
        self.__name__ = name
        self._registers = registers

    @hookimpl
    def connector_sdk_register_connectors(self) -> Any:
        return self._registers()


def providing(name: str, *classes: type) -> Plugin:
    return Plugin(name, lambda: list(classes))


def module_plugin(name: str, **functions: Callable[..., Any]) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, function in functions.items():
        setattr(module, attr, hookimpl(function))
    return module


def load(*plugins: object, **kwargs: Any) -> Plugins:
    return get_plugin_manager(load_entrypoints=False, plugins=plugins, **kwargs)


def error_text(loaded: Plugins) -> str:
    return "\n".join(f"{e.plugin}: {e.error}" for e in loaded.errors)


def boom() -> list[type[Connector]]:
    raise RuntimeError("the plugin's database is unreachable")


# -- finding connectors ----------------------------------------------------------------------------------------


def test_a_module_plugin_registers_its_connector_by_id() -> None:
    toy = make_connector("toy")
    loaded = load(module_plugin("toy_plugin", connector_sdk_register_connectors=lambda: [toy]))
    assert loaded.errors == []
    assert loaded.connector("toy") is toy
    assert loaded.connector_plugin == {"toy": "toy_plugin"}


def test_an_object_plugin_registers_its_connector_by_id() -> None:
    toy = make_connector("toy")
    loaded = load(providing("toy-object", toy))
    assert loaded.connectors == {"toy": toy}
    assert loaded.connector_plugin == {"toy": "toy-object"}


def test_a_plugin_may_register_several_connectors() -> None:
    one, two = make_connector("one"), make_connector("two")
    loaded = load(providing("pair", one, two))
    assert loaded.connectors == {"one": one, "two": two}
    assert loaded.errors == []


@pytest.mark.parametrize(
    "returns",
    [
        pytest.param(lambda toy: (toy,), id="tuple"),
        pytest.param(lambda toy: (c for c in [toy]), id="generator"),
        pytest.param(lambda toy: iter([toy]), id="iterator"),
    ],
)
def test_a_plugin_may_return_its_connectors_as_any_iterable(returns: Callable[[type], Any]) -> None:
    toy = make_connector("toy")
    loaded = load(Plugin("iterable", lambda: returns(toy)))
    assert loaded.errors == []
    assert loaded.connectors == {"toy": toy}


def test_a_plugin_returning_nothing_registers_no_connectors_and_no_error() -> None:
    loaded = load(Plugin("quiet", lambda: None), providing("toy", make_connector("toy")))
    assert loaded.errors == []
    assert list(loaded.connectors) == ["toy"]


def test_describe_lists_each_plugin_with_its_name_source_and_hooks() -> None:
    class Listener:
        __name__ = "listener"

        @hookimpl
        def connector_sdk_sync_finished(self, connection, run) -> None: ...

        @hookimpl
        def connector_sdk_rows_emitted(self, connection, rows) -> None: ...

    module = module_plugin("toy_module", connector_sdk_register_connectors=lambda: [make_connector("toy")])
    loaded = load(module, Listener())
    assert loaded.describe() == [
        PluginInfo(
            name="listener",
            version=None,
            source="listener",
            hooks=["connector_sdk_rows_emitted", "connector_sdk_sync_finished"],
        ),
        PluginInfo(name="toy_module", version=None, source="toy_module", hooks=[REGISTER]),
    ]


def test_asking_for_an_unknown_connector_names_the_loaded_ones() -> None:
    loaded = load(providing("toys", make_connector("alpha"), make_connector("beta")))
    with pytest.raises(UnknownConnector, match=r"'nope'.*loaded: alpha, beta"):
        loaded.connector("nope")


def test_a_manager_without_plugins_has_no_connectors() -> None:
    loaded = load()
    assert loaded.connectors == {} and loaded.errors == [] and loaded.describe() == []
    with pytest.raises(UnknownConnector, match="loaded: none"):
        loaded.connector("fal")


# -- broken plugins are reported, the rest still load --------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(lambda: Plugin("broken", boom), "RuntimeError: the plugin's database is unreachable", id="raises"),
        pytest.param(
            lambda: providing("broken", dict),
            "is not a subclass of connector_sdk.connector.Connector",
            id="not-a-class",
        ),
        pytest.param(
            lambda: providing("broken", "toy"), "'toy' is not a subclass of connector_sdk.connector.Connector", id="str"
        ),
        pytest.param(
            lambda: Plugin("broken", lambda: [object()]),
            "is not a subclass of connector_sdk.connector.Connector",
            id="instance",
        ),
        pytest.param(lambda: providing("broken", make_connector(None)), "Toy_noid has no connector id", id="no-id"),
        pytest.param(lambda: providing("broken", make_connector("")), "has no connector id", id="empty-id"),
        pytest.param(
            lambda: providing("broken", make_connector("toy", manifest_id="other")),
            "Toy_toy.manifest() must return a Manifest with id 'toy'",
            id="manifest-id-mismatch",
        ),
        pytest.param(
            lambda: providing("broken", make_connector("toy", config_model=dict)),
            "Toy_toy.config_model is not a ConnectorConfig subclass",
            id="bad-config-model",
        ),
        pytest.param(
            lambda: Plugin("broken", lambda: make_connector("toy")),
            "TypeError",
            id="a-class-instead-of-a-list",
        ),
    ],
)
def test_a_broken_plugin_is_reported_by_name_and_the_others_still_load(
    broken: Callable[[], object], message: str
) -> None:
    good_before, good_after = make_connector("before"), make_connector("after")
    loaded = load(providing("good-before", good_before), broken(), providing("good-after", good_after))
    assert [e.plugin for e in loaded.errors] == ["broken"]
    assert message in loaded.errors[0].error
    assert "Traceback" not in loaded.errors[0].error
    assert loaded.connectors == {"before": good_before, "after": good_after}


def test_a_plugin_with_one_bad_connector_registers_none_of_its_connectors() -> None:
    loaded = load(providing("mixed", make_connector("fine"), dict))
    assert loaded.connectors == {}
    assert [e.plugin for e in loaded.errors] == ["mixed"]


def test_a_connector_whose_manifest_cannot_be_built_is_reported() -> None:
    class Unbuildable(make_connector("toy")):
        @classmethod
        def manifest(cls) -> Manifest:
            return Manifest.model_validate({"id": "toy"})

    loaded = load(providing("unbuildable", Unbuildable), providing("fine", make_connector("fine")))
    assert [e.plugin for e in loaded.errors] == ["unbuildable"]
    assert "ValidationError" in loaded.errors[0].error
    assert list(loaded.connectors) == ["fine"]


def test_two_plugins_claiming_one_connector_id_are_both_named_and_the_first_keeps_it() -> None:
    first, second = make_connector("toy"), make_connector("toy")
    loaded = load(providing("plugin-one", first), providing("plugin-two", second))
    assert loaded.connector("toy") is first
    assert loaded.connector_plugin == {"toy": "plugin-one"}
    assert len(loaded.errors) == 1
    text = error_text(loaded)
    assert "plugin-one" in text and "plugin-two" in text and "'toy'" in text


def test_a_plugin_claiming_the_fal_id_does_not_replace_the_built_in_connector() -> None:
    impostor = make_connector("fal")
    loaded = load(connectors.fal, providing("impostor", impostor))
    assert loaded.connector("fal").__module__ == "connectors.fal.connector"
    assert [e.plugin for e in loaded.errors] == ["impostor"]
    assert "'connectors.fal'" in loaded.errors[0].error


def test_a_misspelled_hook_is_reported_and_its_plugin_unregistered() -> None:
    typo = module_plugin("typo_plugin", connector_sdk_register_conectors=lambda: [make_connector("typo")])
    good = make_connector("good")
    loaded = load(typo, providing("good", good))
    assert [e.plugin for e in loaded.errors] == ["typo_plugin"]
    assert "connector_sdk_register_conectors" in loaded.errors[0].error
    assert not loaded.manager.has_plugin("typo_plugin")
    assert [info.name for info in loaded.describe()] == ["good"]
    assert loaded.connectors == {"good": good}


def test_every_plugin_with_a_misspelled_hook_is_reported_and_unregistered() -> None:
    first = module_plugin("typo_one", connector_sdk_register_conectors=lambda: [])
    second = module_plugin("typo_two", connector_sdk_rows_emited=lambda connection, rows: None)
    loaded = load(first, second, providing("good", make_connector("good")))
    assert sorted(e.plugin for e in loaded.errors) == ["typo_one", "typo_two"]
    assert not loaded.manager.has_plugin("typo_one")
    assert not loaded.manager.has_plugin("typo_two")
    assert list(loaded.connectors) == ["good"]


def test_a_hook_with_unknown_arguments_is_reported_and_never_half_registered() -> None:
    class WrongArguments:
        __name__ = "wrong-args"

        @hookimpl
        def connector_sdk_register_connectors(self) -> list[type[Connector]]:
            return [make_connector("never")]

        @hookimpl
        def connector_sdk_sync_finished(self, connection, run, colour) -> None: ...

    loaded = load(WrongArguments(), providing("good", make_connector("good")))
    assert [e.plugin for e in loaded.errors] == ["wrong-args"]
    assert "colour" in loaded.errors[0].error
    assert not loaded.manager.has_plugin("wrong-args")
    assert list(loaded.connectors) == ["good"]
    assert loaded.hook.connector_sdk_sync_finished.get_hookimpls() == []


def test_a_second_plugin_with_a_taken_name_is_reported_and_the_first_keeps_working() -> None:
    first = module_plugin("same_name", connector_sdk_register_connectors=lambda: [make_connector("first")])
    second = module_plugin("same_name", connector_sdk_register_connectors=lambda: [make_connector("second")])
    loaded = load(first, second)
    assert loaded.manager.get_plugin("same_name") is first
    assert list(loaded.connectors) == ["first"]
    assert [e.plugin for e in loaded.errors] == ["same_name"]
    assert "already registered" in loaded.errors[0].error


def test_the_same_plugin_given_twice_keeps_its_first_registration() -> None:
    toy = make_connector("toy")
    plugin = providing("toy", toy)
    loaded = load(plugin, plugin)
    assert loaded.connectors == {"toy": toy}
    assert loaded.manager.get_plugin("toy") is plugin


# -- strict mode ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(lambda: Plugin("broken", boom), "database is unreachable", id="hook-raises"),
        pytest.param(lambda: providing("broken", dict), "not a subclass", id="not-a-connector"),
        pytest.param(
            lambda: module_plugin("broken", connector_sdk_register_conectors=lambda: []),
            "connector_sdk_register_conectors",
            id="misspelled-hook",
        ),
        pytest.param(
            lambda: providing("broken", make_connector("good")), "already registered by plugin 'good'", id="dup-id"
        ),
    ],
)
def test_strict_mode_raises_instead_of_reporting(broken: Callable[[], object], message: str) -> None:
    with pytest.raises(PluginLoadError, match="plugin 'broken' failed to load") as raised:
        load(providing("good", make_connector("good")), broken(), strict=True)
    assert message in str(raised.value)


def test_strict_mode_loads_healthy_plugins_normally() -> None:
    toy = make_connector("toy")
    assert load(providing("toy", toy), strict=True).connectors == {"toy": toy}


# -- blocking ---------------------------------------------------------------------------------------------------


def test_a_blocked_plugin_is_not_loaded_and_not_an_error() -> None:
    kept = make_connector("kept")
    loaded = load(providing("unwanted", make_connector("unwanted")), providing("kept", kept), blocked=["unwanted"])
    assert loaded.connectors == {"kept": kept}
    assert loaded.errors == []
    assert [info.name for info in loaded.describe()] == ["kept"]


def test_the_disabled_plugins_variable_blocks_plugins_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLED_ENV, " unwanted , ,also-unwanted")
    kept = make_connector("kept")
    loaded = load(
        providing("unwanted", make_connector("unwanted")),
        providing("also-unwanted", make_connector("also")),
        providing("kept", kept),
    )
    assert loaded.connectors == {"kept": kept}
    assert loaded.errors == []


def test_blocked_names_and_the_variable_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLED_ENV, "from-env")
    loaded = load(
        providing("from-env", make_connector("a")),
        providing("from-arg", make_connector("b")),
        providing("kept", make_connector("c")),
        blocked=["from-arg"],
    )
    assert list(loaded.connectors) == ["c"]


def test_a_blocked_broken_plugin_is_never_even_called() -> None:
    called: list[str] = []

    def register() -> list[type[Connector]]:
        called.append("yes")
        raise RuntimeError("should not run")

    loaded = load(Plugin("broken", register), blocked=["broken"])
    assert called == [] and loaded.errors == []


# -- entry points ------------------------------------------------------------------------------------------------

GOODMOD = """
from pydantic import SecretStr

from connector_sdk import hookimpl
from connector_sdk.connector import Connector
from connector_sdk.models import AccountInfo, ConnectorConfig, Manifest


class FakeConfig(ConnectorConfig):
    token: SecretStr


class FakeConnector(Connector):
    id = "fake"
    config_model = FakeConfig

    @classmethod
    def manifest(cls):
        return Manifest(
            id="fake",
            display_name="Fake",
            vendor="Fake plc",
            description="An installed third-party connector made up by a test.",
            version="1.0",
            category="testing",
            authentication={
                "type": "api_key",
                "header": "Authorization",
                "format": "Bearer {token}",
                "required_scope": "read",
                "secret_field": "token",
                "setup_steps": ["Make a token."],
            },
            config_schema=FakeConfig.model_json_schema(),
            poll_interval_seconds=3600,
            data_collected=[{"name": "usage", "description": "-", "dimensions": [], "measures": []}],
            permissions={"read_only": True},
            initial_sync="instant",
        )

    def check(self):
        return AccountInfo(account="fake")

    def sync(self, window, context):
        yield from ()


@hookimpl
def connector_sdk_register_connectors():
    return [FakeConnector]
"""

TYPOMOD = """
from connector_sdk import hookimpl


@hookimpl
def connector_sdk_register_conectors():
    return []
"""


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution ``fakeplug 1.0`` with entry points good (works), bad (missing) and typo."""
    info = tmp_path / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[connector_sdk]\ngood = goodmod\nbad = badmod_missing\ntypo = typomod\n\n[console_scripts]\nx = goodmod:y\n"
    )
    (tmp_path / "goodmod.py").write_text(GOODMOD)
    (tmp_path / "typomod.py").write_text(TYPOMOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("goodmod", "typomod", "badmod_missing"):
        sys.modules.pop(name, None)


def test_installed_plugins_load_from_entry_points_and_a_broken_one_does_not_take_the_host_down(
    fake_dist: Path,
) -> None:
    loaded = get_plugin_manager()
    infos = {info.name: info for info in loaded.describe()}

    assert loaded.connector("fake").__module__ == "goodmod"
    assert loaded.connector_plugin["fake"] == "good"
    assert infos["good"] == PluginInfo(
        name="good", version="1.0", source="fakeplug (entry point)", hooks=["connector_sdk_register_connectors"]
    )

    errors = {e.plugin: e.error for e in loaded.errors}
    assert set(errors) == {"bad", "typo"}
    assert errors["bad"].startswith("ModuleNotFoundError") and "badmod_missing" in errors["bad"]
    assert "connector_sdk_register_conectors" in errors["typo"]
    assert "typo" not in infos and "bad" not in infos

    assert loaded.connector("fal").__module__ == "connectors.fal.connector"
    assert infos["fal"].version == __version__
    assert infos["fal"].source == "connector-host (entry point)"


def test_entry_point_plugins_can_be_disabled_by_name(fake_dist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLED_ENV, "bad,typo,anthropic,fal,openai,sinks")
    loaded = get_plugin_manager()
    assert loaded.errors == []
    assert list(loaded.connectors) == ["fake"]
    assert [info.name for info in loaded.describe()] == ["good"]


def test_an_explicit_plugin_takes_precedence_over_an_entry_point_of_the_same_name(fake_dist: Path) -> None:
    replacement = make_connector("replacement")
    loaded = get_plugin_manager(plugins=[providing("good", replacement)])
    assert "fake" not in loaded.connectors
    assert loaded.connector("replacement") is replacement
    assert {e.plugin for e in loaded.errors} == {"bad", "typo"}


def test_strict_mode_refuses_a_missing_entry_point_module(fake_dist: Path) -> None:
    with pytest.raises(PluginLoadError, match=r"plugin 'bad' failed to load: ModuleNotFoundError"):
        get_plugin_manager(strict=True, blocked=["typo"])


# -- the real CLI -----------------------------------------------------------------------------------------------


def test_the_plugins_command_lists_fal_with_its_version_and_no_errors(cli: CliRunner) -> None:
    result = cli("plugins", "--format", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["errors"] == []
    assert listed["plugins"] == [
        {
            "name": "anthropic",
            "version": __version__,
            "source": "connector-host (entry point)",
            "hooks": [REGISTER],
            "connectors": ["anthropic"],
        },
        {
            "name": "fal",
            "version": __version__,
            "source": "connector-host (entry point)",
            "hooks": [REGISTER],
            "connectors": ["fal"],
        },
        {
            "name": "openai",
            "version": __version__,
            "source": "connector-host (entry point)",
            "hooks": [REGISTER],
            "connectors": ["openai"],
        },
        {
            "name": "sinks",
            "version": __version__,
            "source": "connector-host (entry point)",
            "hooks": ["connector_sdk_register_sinks"],
            "connectors": [],
        },
    ]


def test_the_plugins_command_lists_nothing_when_fal_is_disabled(cli: CliRunner) -> None:
    result = cli("plugins", "--format", "json", env={DISABLED_ENV: "anthropic,fal,openai,sinks"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"plugins": [], "errors": []}


def test_the_plugins_table_names_fal(cli: CliRunner) -> None:
    result = cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "fal" in result.stdout and __version__ in result.stdout


# -- every hook has a test -------------------------------------------------------------------------------------


def test_every_hook_spec_is_mentioned_in_some_test() -> None:
    specs = sorted(
        name
        for name, function in vars(hookspecs).items()
        if callable(function) and hasattr(function, f"{hookspecs.hookspec.project_name}_spec")
    )
    assert len(specs) >= 4, specs
    own_source = inspect.getsource(test_every_hook_spec_is_mentioned_in_some_test)
    texts = []
    for path in sorted(Path(__file__).parent.glob("**/*.py")):
        text = path.read_text(encoding="utf-8")
        texts.append(text.replace(own_source, "") if path.resolve() == Path(__file__).resolve() else text)
    corpus = "\n".join(texts)
    untested = [name for name in specs if name not in corpus]
    assert untested == [], f"hooks without a test: {untested}"


def test_load_errors_are_plain_records() -> None:
    loaded = load(Plugin("broken", boom))
    assert loaded.errors == [LoadError(plugin="broken", error="RuntimeError: the plugin's database is unreachable")]
