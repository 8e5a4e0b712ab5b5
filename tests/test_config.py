"""The configuration: defaults, YAML merge, and one-line errors for settings that do not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from ards_rag.config import DEFAULTS, resolve_config
from ards_rag.errors import ConfigError
from ards_rag.training import check_ludwig_keys

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_resolve_and_pass_ludwigs_keys(path: Path) -> None:
    cfg = resolve_config(path)
    check_ludwig_keys(cfg)
    assert set(cfg) == set(DEFAULTS)


def test_defaults_equal_configs_default_yaml() -> None:
    assert resolve_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml") == DEFAULTS


@pytest.mark.parametrize(("overrides", "message"), [
    ({"retrieval": {"fusoin": "max"}}, r"unknown setting retrieval\.fusoin \(did you mean retrieval\.fusion\?\)"),
    ({"chunking": {"zzz": 1}}, r"unknown setting chunking\.zzz \(known: max_tokens"),
    ({"retrieval": "max"}, r"retrieval must be a mapping"),
    ({"seed": "7"}, r"seed must be an integer"),
    ({"seed": True}, r"seed must be an integer"),
    ({"retreival": {}}, r"unknown section\(s\) retreival"),
])
def test_unknown_or_malformed_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(overrides=overrides)


def test_the_yaml_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("retrieval:\n  day_in_heading: true\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown setting retrieval\.day_in_heading "
                                          r"\(did you mean retrieval\.day_in_header\?\)"):
        resolve_config(path)


@pytest.mark.parametrize(("ludwig", "message"), [
    ({"trainer": {"epoch": 2}}, r"ludwig\.trainer\.epoch; did you mean ludwig\.trainer\.epochs\?"),
    ({"trainr": {"epochs": 2}}, r"ludwig\.trainr; did you mean ludwig\.trainer\?"),
    ({"trainer": 3}, r"ludwig\.trainer must be a mapping"),
])
def test_unknown_ludwig_settings_are_refused(ludwig: dict, message: str) -> None:
    cfg = resolve_config(overrides={"ludwig": ludwig})
    with pytest.raises(ConfigError, match=message):
        check_ludwig_keys(cfg)


def test_zero_shot_trainer_is_not_checked_as_a_fine_tune() -> None:
    check_ludwig_keys(resolve_config(overrides={"ludwig": {"trainer": {"type": "none"}}}))
