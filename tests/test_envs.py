"""The conda environments of the rule groups carry pyproject.toml's pins, torch only where training runs."""

from __future__ import annotations

import tomllib

import yaml

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pip_pins(name: str) -> list[str]:
    spec = yaml.safe_load((REPO / "envs" / f"{name}.yaml").read_text())
    (pip,) = [item["pip"] for item in spec["dependencies"] if isinstance(item, dict)]
    assert "python =3.11" in spec["dependencies"]
    return pip


def test_the_core_environment_has_the_core_pins_and_no_torch():
    assert pip_pins("mammoscale") == PROJECT["dependencies"]
    assert not any(pin.startswith("torch") for pin in PROJECT["dependencies"])


def test_the_training_environment_adds_the_train_extra():
    assert pip_pins("train") == PROJECT["dependencies"] + PROJECT["optional-dependencies"]["train"]


def test_every_rule_uses_an_environment_that_exists_and_training_the_torch_one():
    for rules in (REPO / "rules").glob("*.smk"):
        text = rules.read_text()
        for line in text.splitlines():
            if "../envs/" in line:
                name = line.strip().strip('"').removeprefix("../envs/")
                assert (REPO / "envs" / name).is_file(), f"{rules.name}: {name}"
                assert (REPO / "envs" / name.replace(".yaml", ".post-deploy.sh")).is_file()
    assert '"../envs/train.yaml"' in (REPO / "rules" / "train.smk").read_text()
