"""Config loading: both one-of forms, dotted overrides, and errors that name the dotted path."""

import dataclasses
from typing import Literal

import pytest

from vision_core.hyperparams import (
    Config,
    ConfigError,
    OneOfConfig,
    get_subconfig,
    parse_dotted,
    parse_override_string,
    read_yaml,
    save_yaml,
)


@dataclasses.dataclass
class Res(Config):
    model_id: Literal[18, 50] = 50
    se_ratio: float = 0.0
    stem_type: Literal["v0", "v1"] = "v0"


@dataclasses.dataclass
class Spine(Config):
    model_id: Literal["49", "96"] = "49"


@dataclasses.dataclass
class Backbone(OneOfConfig):
    type: str | None = "resnet"
    resnet: Res = dataclasses.field(default_factory=Res)
    spinenet: Spine | None = None


@dataclasses.dataclass
class Model(Config):
    backbone: Backbone = dataclasses.field(default_factory=Backbone)
    input_size: list[int] = dataclasses.field(default_factory=list)
    name: str = "m"
    use_bn: bool = True


def test_nested_and_flat_one_of_forms_give_the_same_config():
    nested = Model.from_dict({"backbone": {"type": "resnet", "resnet": {"model_id": 18}}})
    flat = Model.from_dict({"backbone": {"type": "resnet", "model_id": 18}})
    assert nested == flat
    assert nested.backbone.get().model_id == 18


def test_one_of_fills_in_a_default_sub_config_for_the_chosen_type():
    cfg = Model.from_dict({"backbone": {"type": "spinenet", "model_id": 96}})
    assert isinstance(cfg.backbone.get(), Spine)
    assert cfg.backbone.get().model_id == "96"  # YAML 96 and '96' mean the same id


def test_free_form_config_like_the_tutorial():
    cfg = Config(type="spinenet", model_id="143", min_level=3, max_level=7)
    assert get_subconfig(cfg) is cfg
    assert cfg.model_id == "143" and cfg.as_dict()["max_level"] == 7


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"backbone": {"type": "resnett"}},
            "backbone.type: unknown type 'resnett'. Allowed types: "
            "resnet, spinenet. Did you mean 'resnet'?",
        ),
        (
            {"backbone": {"resnet": {"model_id": 19}}},
            "backbone.resnet.model_id: invalid value 19. Allowed values: 18, 50.",
        ),
        ({"backbone": {"resnet": {"modelid": 18}}}, "backbone.resnet.modelid: unknown key"),
        (
            {"backbone": {"resnet": {"se_ratio": "high"}}},
            "backbone.resnet.se_ratio: expected a number, got 'high'",
        ),
        ({"input_size": "128"}, "input_size: expected a list"),
        ({"input_size": [128, "x"]}, "input_size[1]: expected an integer"),
        ({"use_bn": "yes"}, "use_bn: expected true or false"),
        ({"nmae": "x"}, "Did you mean 'name'?"),
    ],
)
def test_errors_name_the_dotted_path_and_what_was_expected(data, message):
    with pytest.raises(ConfigError) as err:
        Model.from_dict(data)
    assert message in str(err.value)


def test_dotted_overrides_parse_yaml_scalars():
    assert parse_dotted(["a.b=18", "a.c=0.5", "d=true", "e=[1, 2]", "f=null", "g=abc"]) == {
        "a": {"b": 18, "c": 0.5},
        "d": True,
        "e": [1, 2],
        "f": None,
        "g": "abc",
    }
    with pytest.raises(ConfigError, match="expected dotted.path=value"):
        parse_dotted(["a.b"])


def test_params_override_string_forms(tmp_path):
    assert parse_override_string("a.b=1,c=[1,2]") == {"a": {"b": 1}, "c": [1, 2]}
    assert parse_override_string("{a: {b: 2}}") == {"a": {"b": 2}}
    path = tmp_path / "o.yaml"
    path.write_text("a:\n  b: 3\n")
    assert parse_override_string(str(path)) == {"a": {"b": 3}}


def test_override_applies_and_validates_in_place():
    cfg = Model()
    cfg.override(parse_dotted(["backbone.resnet.model_id=18"]))
    assert cfg.backbone.resnet.model_id == 18
    with pytest.raises(ConfigError, match="backbone.resnet.model_id"):
        cfg.override({"backbone": {"resnet": {"model_id": 7}}})
    cfg.override({"unknown": 1}, is_strict=False)  # Model Garden's lenient mode drops it.


def test_attribute_assignment_is_validated():
    cfg = Model()
    cfg.backbone.resnet.model_id = 18
    with pytest.raises(ConfigError, match="invalid value 7"):
        cfg.backbone.resnet.model_id = 7
    with pytest.raises(ConfigError, match="unknown key"):
        cfg.backbone.resnet.modelid = 18


def test_yaml_round_trip_and_file_errors(tmp_path):
    cfg = Model.from_dict({"backbone": {"type": "resnet", "resnet": {"model_id": 18}}})
    path = tmp_path / "sub" / "cfg.yaml"
    save_yaml(cfg, str(path))
    assert Model.from_dict(read_yaml(str(path))) == cfg
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=str(bad)):
        read_yaml(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(str(tmp_path / "missing.yaml"))
