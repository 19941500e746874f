"""The provider package: its metadata, its connection form, and the wheel ``pip wheel .`` builds."""

from __future__ import annotations

import importlib
import json
import sys
import types
from email.parser import Parser
from pathlib import Path

import pytest
from fixtures_provider import wheel_members

from github_collector import __version__, connection_form
from github_collector.get_provider_info import get_provider_info
from github_collector.hook import GitHubHook, parse_settings

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_WIDGETS = ("IntegerField", "PasswordField", "StringField", "BooleanField")


@pytest.mark.unit
def test_provider_info_has_the_required_keys_and_importable_modules():
    info = get_provider_info()
    assert info["package-name"] == "github-repo-users"
    assert info["name"] and info["description"] and info["versions"] == [__version__]
    for kind in ("hooks", "operators", "sensors"):
        modules = [m for entry in info[kind] for m in entry["python-modules"]]
        assert modules, kind
        for module in modules:
            importlib.import_module(module)
    [conn] = info["connection-types"]
    assert conn["connection-type"] == GitHubHook.conn_type == "github_repo_users"
    module, _, name = conn["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is GitHubHook
    assert conn["hook-name"] == GitHubHook.hook_name


@pytest.mark.unit
def test_provider_info_passes_airflows_own_schemas():
    """ProvidersManager validates the provider info, and drops a field behaviour its schema refuses."""
    import jsonschema
    from airflow import providers_manager

    info = get_provider_info()
    read = providers_manager._read_schema_from_resources_or_local_file
    jsonschema.validate(info, read("provider_info.schema.json"))
    behaviour = info["connection-types"][0]["ui-field-behaviour"]
    customized = {k.replace("-", "_"): v for k, v in behaviour.items()}
    jsonschema.validate(customized, read("customized_form_field_behaviours.schema.json"))


def _fake_form_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for wtforms / flask_appbuilder / flask_babel where Airflow (3.x) ships without
    them, as Airflow's own HookMetaService does: each field records its class, like wtforms'
    UnboundField. Only the four classes Airflow accepts exist, so using another one fails."""

    class Unbound:
        def __init__(self, field_class: type, *args: object, **kwargs: object) -> None:
            self.field_class, self.args, self.kwargs = field_class, args, kwargs

    def field(name: str) -> type:
        return type(name, (), {"__new__": lambda cls, *a, **k: Unbound(cls, *a, **k)})

    wtforms = types.ModuleType("wtforms")
    for name in ALLOWED_WIDGETS:
        setattr(wtforms, name, field(name))
    validators = types.ModuleType("wtforms.validators")
    validators.Optional = lambda *a, **k: ("Optional", a, k)
    widgets = types.ModuleType("flask_appbuilder.fieldwidgets")
    widgets.BS3TextFieldWidget = widgets.BS3PasswordFieldWidget = lambda: "widget"
    babel = types.ModuleType("flask_babel")
    babel.lazy_gettext = str
    return {
        "wtforms": wtforms,
        "wtforms.validators": validators,
        "flask_appbuilder": types.ModuleType("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": widgets,
        "flask_babel": babel,
    }


@pytest.fixture()
def form_widgets(monkeypatch) -> dict:
    try:
        import flask_appbuilder.fieldwidgets  # noqa: F401  (Airflow 2.x ships it)
        import wtforms  # noqa: F401
    except ImportError:
        for name, module in _fake_form_modules().items():
            monkeypatch.setitem(sys.modules, name, module)
    return GitHubHook.get_connection_form_widgets()


@pytest.mark.unit
def test_form_widgets_equal_the_conn_fields_and_use_only_allowed_classes(form_widgets):
    [conn] = get_provider_info()["connection-types"]
    assert set(form_widgets) == set(conn["conn-fields"])
    for key, widget in form_widgets.items():
        assert widget.field_class.__name__ in ALLOWED_WIDGETS, key
        sensitive = widget.field_class.__name__ == "PasswordField"
        assert sensitive == (conn["conn-fields"][key]["schema"].get("format") == "password"), key
    assert form_widgets["tokens"].field_class.__name__ == "PasswordField"
    assert form_widgets["private_key"].field_class.__name__ == "PasswordField"
    assert form_widgets["reserve"].field_class.__name__ == "IntegerField"
    # the same labels in both forms
    for key, spec in conn["conn-fields"].items():
        assert str(form_widgets[key].args[0]) == spec["label"], key


@pytest.mark.unit
def test_ui_field_behaviour_hides_relabels_and_agrees_with_the_provider_info():
    behaviour = GitHubHook.get_ui_field_behaviour()
    assert sorted(behaviour["hidden_fields"]) == ["login", "port", "schema"]
    assert set(behaviour["relabeling"]) == {"host", "password"}
    assert {"host", "password"} <= set(behaviour["placeholders"])
    [conn] = get_provider_info()["connection-types"]
    assert conn["ui-field-behaviour"] == {k.replace("_", "-"): v for k, v in behaviour.items()}


@pytest.mark.unit
def test_every_form_field_is_an_extra_the_hook_reads():
    """A field of the form that parse_settings ignored would be a setting that does nothing.
    The GitHub App fields work together (an App needs its id and key), so they are set together."""
    base = parse_settings("https://api.github.com", "tok-a", None)
    values = {
        "tokens": "tok-b",
        "reserve": 7,
        "timeout": "2.5",
        "max_inline_wait": "4",
        "resume_lead": "1.5",
        "rest_per_minute": 11,
        "graphql_per_minute": 13,
        "pace_window": "0.5",
        "secondary_default_wait": "2",
        "graphql_min_gap": "0.5",
    }
    used = {f.key for f in connection_form.FIELDS} - set(connection_form.APP_FIELDS)
    assert used == set(values)
    for key, value in values.items():
        assert parse_settings("https://api.github.com", "tok-a", {key: value}) != base, key
    pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
    app = {"app_id": "1", "private_key": pem}
    with_app = parse_settings("https://api.github.com", "tok-a", app)
    assert with_app != base and with_app["app"].app_id == "1"
    assert parse_settings("https://api.github.com", "tok-a", app | {"installation_id": "7"}) != with_app


# --- the wheel -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_wheel_holds_the_package_only_and_requires_no_graphql_core(provider_wheel):
    files = wheel_members(provider_wheel)
    packages = {name.split("/")[0] for name in files}
    assert packages == {"github_collector", f"github_repo_users-{__version__}.dist-info"}
    assert "github_collector/repositories.json" in files
    for name, data in files.items():
        assert "emulator" not in name.lower() and "test" not in name.lower() and "bench" not in name, name
        assert b"CRASH" not in data and b"github_emulator" not in data, name
    meta = Parser().parsestr(files[f"github_repo_users-{__version__}.dist-info/METADATA"].decode())
    requires = [r.lower() for r in meta.get_all("Requires-Dist") or []]
    assert not [r for r in requires if "graphql" in r]
    for dist in ("apache-airflow-providers-common-compat", "apache-airflow-providers-postgres", "requests"):
        assert any(r.startswith(dist) for r in requires), dist
    entry_points = files[f"github_repo_users-{__version__}.dist-info/entry_points.txt"].decode()
    assert "[apache_airflow_provider]" in entry_points
    assert "github_collector.get_provider_info:get_provider_info" in entry_points
    # the packaged default list is the repository's one copy of it
    packaged = json.loads(files["github_collector/repositories.json"])
    assert packaged == json.loads((ROOT / "plugins" / "github_collector" / "repositories.json").read_text())


@pytest.mark.integration
def test_every_third_party_module_the_package_imports_is_a_declared_requirement(provider_wheel):
    """A module imported by the production package is the standard library's, the package's own,
    or comes from a distribution the wheel requires (Airflow's tree is not a promise: a user
    installing the wheel beside another Airflow gets only what the wheel declares)."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    files = wheel_members(provider_wheel)
    meta = Parser().parsestr(files[f"github_repo_users-{__version__}.dist-info/METADATA"].decode())
    declared = {
        re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in meta.get_all("Requires-Dist") or []
    }
    owners = packages_distributions()
    imported: set[str] = set()
    for name, data in files.items():
        if name.endswith(".py"):
            for node in ast.walk(ast.parse(data)):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    # The connection form's widgets come from the UI that calls get_connection_form_widgets (the
    # providers' convention): they are imported there only, never by the product's work.
    ui = {"flask_appbuilder", "flask_babel", "wtforms"}
    third_party = imported - set(sys.stdlib_module_names) - {"github_collector", "__future__"} - ui
    assert "jwt" in third_party  # the check sees the App auth's import
    dists = {m: {d.lower().replace("_", "-") for d in owners.get(m, [m])} for m in third_party}
    undeclared = {m: sorted(d) for m, d in dists.items() if not d & declared}
    assert undeclared == {}
