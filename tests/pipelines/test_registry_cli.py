"""`vision-pipelines registry list|show|promote|rollback|diff` on a local registry (and GCS)."""

import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from gcs_emulator import emulator_fixture  # noqa: E402

from components.registry import LocalRegistry, open_registry  # noqa: E402
from pipelines.cli import main  # noqa: E402

gcs = emulator_fixture(scope="module", bucket="cli-bucket")

CONFIG_A = "task:\n  model:\n    num_classes: 4\n  learning_rate: 0.1\n"
CONFIG_B = "task:\n  model:\n    num_classes: 4\n  learning_rate: 0.05\n"


def _populate(uri, tmp_path):
    """Two versions with different configs and metrics; returns the registry."""
    saved_model = tmp_path / "export"
    (saved_model / "variables").mkdir(parents=True)
    (saved_model / "saved_model.pb").write_bytes(b"graph")
    (saved_model / "variables" / "variables.index").write_bytes(b"index")
    registry = open_registry(uri)
    for text, metrics in (
        (CONFIG_A, {"mean_iou": 0.61, "iou/cat": 0.5, "iou/dog": None, "num_examples": 10}),
        (CONFIG_B, {"mean_iou": 0.72, "iou/cat": 0.7, "pixel_accuracy": 0.9, "num_examples": 12}),
    ):
        config = tmp_path / "experiment.yaml"
        config.write_text(text)
        registry.push("seg", str(saved_model), str(config), metrics, {})
    return registry


@pytest.fixture
def local(tmp_path):
    uri = str(tmp_path / "registry")
    return uri, _populate(uri, tmp_path)


def _run(capsys, *argv):
    code = main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show(local, capsys):
    uri, registry = local
    registry.set_alias("seg", "champion", 2)
    code, out, _ = _run(capsys, "list", uri, "seg")
    assert code == 0
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["v1", "v2"]
    assert lines[0].split("\t")[2:] == ["mean_iou=0.6100", ""]
    assert lines[1].split("\t")[2:] == ["mean_iou=0.7200", "champion"]

    code, out, _ = _run(capsys, "show", uri, "seg", "champion")
    assert code == 0
    record = json.loads(out)
    assert (record["version"], record["aliases"]) == (2, ["champion"])
    assert record["metrics"]["pixel_accuracy"] == 0.9


def test_promote_moves_the_alias_and_records_it(local, capsys):
    uri, registry = local
    assert _run(capsys, "promote", uri, "seg", "1") == (0, "seg: champion (unset) -> v1\n", "")
    assert _run(capsys, "promote", uri, "seg", "latest")[:2] == (0, "seg: champion v1 -> v2\n")
    # Any reference works as the target, another alias included.
    assert _run(capsys, "promote", uri, "seg", "champion", "--alias", "staging")[0] == 0
    assert registry.aliases("seg") == {"champion": 2, "staging": 2}
    history = registry.alias_history("seg", "champion")
    assert [(e["from"], e["to"], e["action"]) for e in history] == [
        (None, 1, "set"),
        (1, 2, "set"),
    ]
    assert "@" in history[0]["by"]


def test_promote_reports_a_concurrent_move_instead_of_undoing_it(local, capsys, monkeypatch):
    uri, registry = local
    registry.set_alias("seg", "champion", 1)
    set_alias = LocalRegistry.set_alias
    raced = []

    def someone_promotes_first(self, *args, **kwargs):
        if not raced:  # lands after the CLI read the alias, before its guarded move
            raced.append(True)
            set_alias(LocalRegistry(uri), "seg", "champion", 2)
        return set_alias(self, *args, **kwargs)

    monkeypatch.setattr(LocalRegistry, "set_alias", someone_promotes_first)
    code, out, err = _run(capsys, "promote", uri, "seg", "1", "--alias", "champion")
    assert code == 1 and out == ""
    assert "points at version 2, expected version 1" in err
    assert "moved after this command read it" in err
    monkeypatch.undo()
    assert registry.get_alias("seg", "champion") == 2

    code, _, err = _run(capsys, "promote", uri, "seg", "1", "--expect", "none")
    assert code == 1 and "expected nothing" in err
    assert _run(capsys, "promote", uri, "seg", "1", "--expect", "v2")[0] == 0


def test_rollback(local, capsys):
    uri, registry = local
    registry.set_alias("seg", "champion", 1)
    registry.set_alias("seg", "champion", 2)
    assert _run(capsys, "rollback", uri, "seg") == (0, "seg: champion v2 -> v1 (rollback)\n", "")
    code, _, err = _run(capsys, "rollback", uri, "seg")
    assert code == 1 and "no earlier target" in err
    assert _run(capsys, "rollback", uri, "seg", "--to", "v2")[:2] == (
        0,
        "seg: champion v1 -> v2 (rollback)\n",
    )
    code, _, err = _run(capsys, "rollback", uri, "seg", "--alias", "best")
    assert code == 1 and "has no alias 'best'; aliases: champion -> v2" in err


def test_diff_prints_metric_deltas_and_the_config_diff(local, capsys):
    uri, _ = local
    code, out, _ = _run(capsys, "diff", uri, "seg", "1", "v2")
    assert code == 0
    table, config_diff = out.split("\n\n", 1)
    rows = [line.split() for line in table.splitlines()]
    assert rows == [
        ["metric", "v1", "v2", "v2-v1"],
        ["iou/cat", "0.5000", "0.7000", "+0.2000"],
        ["iou/dog", "n/a", "-"],
        ["mean_iou", "0.6100", "0.7200", "+0.1100"],
        ["num_examples", "10", "12", "+2"],
        ["pixel_accuracy", "-", "0.9000"],
    ]
    assert config_diff.splitlines() == [
        "--- v1/config.yaml",
        "+++ v2/config.yaml",
        "@@ -1,4 +1,4 @@",
        " task:",
        "   model:",
        "     num_classes: 4",
        "-  learning_rate: 0.1",
        "+  learning_rate: 0.05",
    ]
    code, out, _ = _run(capsys, "diff", uri, "seg", "2", "latest")
    assert code == 0 and out.endswith("config.yaml: identical in v2 and v2\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["list", "{uri}", "nope"], "model 'nope' has no versions in registry"),
        (["show", "{uri}", "nope", "1"], "has no model 'nope' (no complete versions); models: seg"),
        (["show", "{uri}", "seg", "7"], "has no complete version 7; versions: 1, 2"),
        (["show", "{uri}", "seg", "champion"], "has no alias 'champion'; aliases: none"),
        (["promote", "{uri}", "seg", "9"], "has no complete version 9"),
        (["diff", "{uri}", "seg", "1", "best"], "has no alias 'best'"),
    ],
)
def test_unknown_models_versions_and_aliases_exit_with_1(local, capsys, argv, message):
    uri, _ = local
    code, out, err = _run(capsys, *[a.format(uri=uri) for a in argv])
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_promote_rollback_and_diff_on_gcs(gcs, tmp_path, capsys):
    uri = f"gs://{gcs.bucket}/cli"
    registry = _populate(uri, tmp_path)
    assert _run(capsys, "promote", uri, "seg", "1")[0] == 0
    assert _run(capsys, "promote", uri, "seg", "2")[:2] == (0, "seg: champion v1 -> v2\n")
    assert _run(capsys, "rollback", uri, "seg")[:2] == (0, "seg: champion v2 -> v1 (rollback)\n")
    assert registry.get_alias("seg") == 1
    code, out, _ = _run(capsys, "diff", uri, "seg", "1", "2")
    assert code == 0 and "+  learning_rate: 0.05" in out.splitlines()
    code, out, _ = _run(capsys, "list", uri, "seg")
    assert code == 0 and out.splitlines()[0].endswith("champion")
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs.url  # the CLI really went to the emulator
