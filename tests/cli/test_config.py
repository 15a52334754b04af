"""Settings models are the one home of each default: flags, --config files and `ghostbox config` agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli.config_cmd import DEFAULTS
from pipeline.cli.detector_flags import detector_config
from pipeline.cli.finetune_cmd import finetune_job
from pipeline.cli.main import _parser, main
from pipeline.cli.proxies_cmd import proxy_settings
from pipeline.cli.run_cmd import graph_from_args
from pipeline.detect.config import DetectorConfig
from pipeline.errors import GhostboxError
from pipeline.finetune.training_run import FinetuneSettings
from pipeline.proxies import ProxySettings
from pipeline.stream.config import graph_from_dict, load_graph

# each command that reads a config file: (argv without --config, how it gets its settings from the args)
COMMANDS = {
    "detect": (["detect", "a.jpg", "--out", "o"], detector_config),
    "calibrate": (["calibrate", "--id", "i", "--method", "energy", "--out", "f.filter.safetensors"], detector_config),
    "eval": (["eval", "--id", "i", "--ood", "o", "--out", "o"], detector_config),
    "proxies": (["proxies", "--id", "i", "--strategies", "paste", "--out", "o"], proxy_settings),
    "finetune": (["finetune", "--id", "i", "--proxies", "p", "--out", "o"], finetune_job),
    "run": (["run", "--source", "a.mp4"], graph_from_args),
}


def _defaults_file(command: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> Path:
    assert main(["config", command]) == 0
    path = tmp_path / f"{command}.yaml"
    path.write_text(capsys.readouterr().out)
    return path


def _with_config(argv: list[str], config: Path) -> list[str]:
    if argv[0] == "run":
        return [argv[0], str(config), *argv[1:]]
    return [*argv, "--config", str(config)]


def test_every_command_with_a_config_file_has_defaults_to_print() -> None:
    with_config = {name for name, action in _subparsers().items()
                   if any(o == "--config" for a in action._actions for o in a.option_strings)}
    assert with_config | {"run"} == set(DEFAULTS) - {"bench"}, "give `ghostbox config` these commands' defaults"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_printed_defaults_read_back_as_no_config(command: str, tmp_path: Path, capsys) -> None:
    argv, settings_of = COMMANDS[command]
    config = _defaults_file(command, tmp_path, capsys)
    parser = _parser()
    assert settings_of(parser.parse_args(_with_config(argv, config))) == settings_of(parser.parse_args(argv))


def test_stage_defaults_with_sources_read_back_as_the_bare_graph(tmp_path: Path, capsys) -> None:
    config = _defaults_file("stage", tmp_path, capsys)
    sources = [{"id": "cam", "uri": "a.mp4"}]
    config.write_text(config.read_text() + yaml.safe_dump({"sources": sources}))
    assert load_graph(config) == graph_from_dict({"sources": sources}, "bare")


def test_flags_win_over_the_file_and_the_model_fills_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("proxies:\n  count: 7\n  seed: 3\n  rules: {max_iou: 0.2}\n  flip: 0.0\n"
                      "detector:\n  conf: 0.4\n")
    args = _parser().parse_args(["proxies", "--id", "i", "--strategies", "paste", "--out", "o", "--config",
                                 str(config), "--seed", "5", "--tries", "9"])
    settings, detector = proxy_settings(args)
    assert (settings.count, settings.seed, settings.flip, settings.conf) == (7, 5, 0.0, 0.4)
    assert (settings.rules.max_iou, settings.rules.tries) == (0.2, 9)
    assert settings.rules.max_cover == ProxySettings.model_fields["rules"].default_factory().max_cover
    assert settings.mine_images == ProxySettings.model_fields["mine_images"].default and detector.conf == 0.4

    config = tmp_path / "f.yaml"
    config.write_text("finetune:\n  proxy_ratio: 0.5\n  training: {epochs: 2, lr0: 0.01}\n")
    args = _parser().parse_args(["finetune", "--id", "i", "--proxies", "p", "--out", "o", "--config", str(config),
                                 "--epochs", "3"])
    job = finetune_job(args)
    assert (job.proxy_ratio, job.training.epochs, job.training.lr0) == (0.5, 3, 0.01)
    assert job.training.batch == FinetuneSettings.model_fields["batch"].default


@pytest.mark.parametrize(("command", "text", "words"), [
    ("proxies", "proxies:\n  cuont: 5\n", ["p.yaml", "proxies.cuont", "5"]),
    ("proxies", "proxy:\n  count: 5\n", ["p.yaml", "'proxy'", "{'count': 5}"]),
    ("proxies", "proxies:\n  count: 0\n", ["p.yaml", "proxies.count", "greater than or equal to 1", "got 0"]),
    ("proxies", "proxies:\n  rules: {max_cover: 2}\n", ["p.yaml", "proxies.rules.max_cover", "got 2"]),
    ("proxies", "proxies:\n  conf: 0.3\n", ["p.yaml", "proxies.conf", "detector: conf", "0.3"]),
    ("proxies", "detector:\n  cnof: 0.3\n", ["p.yaml", "detector.cnof", "0.3"]),
    ("finetune", "finetune:\n  epocs: 2\n", ["p.yaml", "finetune.epocs", "2"]),
    ("finetune", "finetune:\n  training: {epochs: 0}\n", ["p.yaml", "finetune.training.epochs", "got 0"]),
    ("finetune", "training:\n  epochs: 2\n", ["p.yaml", "'training'", "finetune"]),
])
def test_unknown_or_bad_keys_name_file_key_and_value(command: str, text: str, words: list[str],
                                                     tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(text)
    argv, settings_of = COMMANDS[command]
    with pytest.raises(GhostboxError) as exc:
        settings_of(_parser().parse_args(_with_config(argv, config)))
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_bad_flags_are_named_by_the_flag(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    config.write_text("proxies:\n  count: 0\n")
    argv = ["proxies", "--id", "i", "--strategies", "paste", "--out", "o", "--config", str(config)]
    with pytest.raises(GhostboxError, match=r"^--max-iou: .*less than 1 \(got 1.5\)"):
        proxy_settings(_parser().parse_args([*argv, "--count", "2", "--max-iou", "1.5"]))
    with pytest.raises(GhostboxError, match=r"^--strategies: unknown fly"):
        proxy_settings(_parser().parse_args(["proxies", "--id", "i", "--strategies", "fly", "--out", "o"]))
    with pytest.raises(GhostboxError, match=r"^--id: Field required"):
        proxy_settings(_parser().parse_args(["proxies", "--strategies", "paste", "--out", "o"]))
    with pytest.raises(GhostboxError, match=r"^--lrf: .*less than or equal to 1 \(got 2.0\)"):
        finetune_job(_parser().parse_args([*COMMANDS["finetune"][0], "--lrf", "2"]))
    with pytest.raises(GhostboxError, match=r"^--filter-params: not valid JSON"):
        finetune_job(_parser().parse_args([*COMMANDS["finetune"][0], "--filter-params", "{k: 1"]))
    with pytest.raises(GhostboxError, match=r"^--conf: .*less than or equal to 1 \(got 2.0\)"):
        detector_config(_parser().parse_args([*COMMANDS["detect"][0], "--conf", "2"]))


def test_help_shows_the_models_defaults_and_flags_have_none_of_their_own(capsys) -> None:
    parsers = _subparsers()
    for command, flag, model, field in [("proxies", "--count", ProxySettings, "count"),
                                        ("proxies", "--conf", DetectorConfig, "conf"),
                                        ("detect", "--iou", DetectorConfig, "iou")]:
        action = next(a for a in parsers[command]._actions if flag in a.option_strings)
        assert action.default is None
        assert f"(default {model.model_fields[field].default})" in action.help, (command, flag)
    # models whose modules load torch: their defaults are read only when help is printed
    for command, line in [("calibrate", "--tpr TPR ID true-positive rate the thresholds keep (default 0.95)"),
                          ("finetune", "--epochs EPOCHS training epochs (default "
                                       f"{FinetuneSettings.model_fields['epochs'].default})"),
                          ("finetune", "--id SPEC labelled ID training data (dataset SPEC) --proxies")]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert line in " ".join(capsys.readouterr().out.split()), line


def _subparsers() -> dict:
    parser = _parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)


def _differences(given: object, default: object, path: str = "") -> list[str]:
    if isinstance(given, dict) and isinstance(default, dict):
        return [d for key in given for d in _differences(given[key], default.get(key), f"{path}.{key}")]
    return [] if given == default else [f"{path}: {given!r} (the model's default: {default!r})"]


# the hand-written example configs name a model and its size; every other value they state is the model's default
EXAMPLE_VALUES = {".detector.model", ".detector.imgsz"}


def test_the_example_graph_config_states_the_models_defaults() -> None:
    """configs/pipeline.yaml is documentation of the defaults: a default changed in the model must change there."""
    path = Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml"
    data = yaml.safe_load(path.read_text())
    stated = load_graph(path).model_dump()
    defaults = graph_from_dict({key: data[key] for key in ("sources", "sinks") if key in data}, "defaults").model_dump()
    wrong = [d for d in _differences(stated, defaults) if d.split(":")[0] not in EXAMPLE_VALUES]
    assert not wrong, "configs/pipeline.yaml states values that are not the defaults:\n" + "\n".join(wrong)


def test_the_example_detect_config_states_the_models_defaults() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "detect.yaml"
    stated = yaml.safe_load(path.read_text())
    defaults = DetectorConfig(model=stated["detector"]["model"]).model_dump()
    wrong = [d for d in _differences(stated, {"detector": defaults})
             if d.split(":")[0] not in EXAMPLE_VALUES]
    assert not wrong, "configs/detect.yaml states values that are not the defaults:\n" + "\n".join(wrong)
