"""Bad user input through the CLI: exit status 2, one line naming the file or key, no traceback.

Every case fails while the input is loaded (no training, no SCF). The tables feed 36 bad inputs:

- ten broken configs, each given to ``mfjax train``, ``mfjax check-data`` and ``mfjax ablate``
  (30 cases; realistic configs from ``configs/quickstart.yaml`` and ``experiments/ablation/config.yaml``
  with absolute dataset paths):

  ============== ==================================================== ============================
  case           input                                                the line names
  ============== ==================================================== ============================
  yaml-tab       a tab-indented line under ``train:``                 ``config.yaml:LINE:1``
  yaml-indent    a line indented deeper than its siblings             ``config.yaml:LINE:COL``
  yaml-bracket   an unclosed ``[`` in ``train:``                      ``config.yaml:LINE:COL``
  set-yaml       ``--set 'train.lr=[1,'``                             the override text
  directory      a directory as the config                            the directory
  missing        a config file that does not exist                    the file
  top-level      a YAML list instead of a mapping                     the file
  max-graphs     ``train.batch.max_graphs: 0``                        ``train.batch.max_graphs``
  loss-weight    ``train.loss.energy_weight: -1``                     ``train.loss.energy_weight``
  unknown-key    ``train.epoch`` (typo of ``epochs``)                 ``train.epoch``
  ============== ==================================================== ============================

- four malformed ``--set`` overrides given to ``mfjax train`` (4 cases), each named in the line:
  no ``=`` (``train.lr``), an empty key (``=1``), a list index out of range
  (``data.datasets.5.fidelity=x``), a key below a number (``train.lr.x=1``);
- ``mfjax check-data`` on an extxyz whose frame 1 has ``stress=`` with 7 values: the file, frame 1
  and field ``stress``;
- ``mfjax label`` with a basis typo (``pbe/def2-svpx``): the unknown basis, before any calculation.

``train`` and ``ablate`` must also leave no run directory behind.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mfjax.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
ABLATION = ROOT / "experiments" / "ablation" / "config.yaml"


def _base(command: str, tmp_path: Path) -> dict:
    """A realistic config for ``command`` with absolute dataset paths and output under tmp_path."""
    source = ABLATION if command == "ablate" else QUICKSTART
    cfg = yaml.safe_load(source.read_text())
    for entry in cfg["data"]["datasets"]:
        entry["path"] = str((source.parent / entry["path"]).resolve())
    cfg["output"]["dir"] = str(tmp_path / "run")
    return cfg


def _write(tmp_path: Path, cfg: dict | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return path


def _insert_under_train(tmp_path: Path, cfg: dict, line: str) -> tuple[Path, int]:
    """The config with ``line`` inserted right after ``train:``; returns (path, its line number)."""
    text = yaml.safe_dump(cfg, sort_keys=False)
    number = text.splitlines().index("train:") + 2
    return _write(tmp_path, text.replace("train:\n", f"train:\n{line}\n", 1)), number


def _tab(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    path, number = _insert_under_train(tmp_path, cfg, "\tseed: 1")
    return path, [], f"config.yaml:{number}:1: found character '\\t'"


def _indent(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    path, number = _insert_under_train(tmp_path, cfg, "      seed: 1")  # deeper than its siblings
    return path, [], f"config.yaml:{number + 1}:"


def _bracket(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    path, number = _insert_under_train(tmp_path, cfg, "  seed: [1, 2")
    return path, [], f"config.yaml:{number + 1}:"


def _set_yaml(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    return _write(tmp_path, cfg), ["--set", "train.lr=[1,"], "--set 'train.lr=[1,'"


def _directory(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    folder = tmp_path / "configs.d"
    folder.mkdir()
    return folder, [], "configs.d' is a directory"


def _missing(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    return tmp_path / "nope.yaml", [], "nope.yaml' does not exist"


def _top_level(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
    return _write(tmp_path, "- data\n- model\n"), [], "config.yaml: the top level must be a mapping"


def _edit(change: Callable[[dict], None], needle: str) -> Callable[[Path, dict], tuple[Path, list[str], str]]:
    def build(tmp_path: Path, cfg: dict) -> tuple[Path, list[str], str]:
        cfg = copy.deepcopy(cfg)
        change(cfg)
        return _write(tmp_path, cfg), [], needle

    return build


CONFIG_CASES: dict[str, Callable[[Path, dict], tuple[Path, list[str], str]]] = {
    "yaml-tab": _tab,
    "yaml-indent": _indent,
    "yaml-bracket": _bracket,
    "set-yaml": _set_yaml,
    "directory": _directory,
    "missing": _missing,
    "top-level": _top_level,
    "max-graphs": _edit(lambda c: c["train"]["batch"].update(max_graphs=0), "train.batch.max_graphs must be >= 1"),
    "loss-weight": _edit(lambda c: c["train"]["loss"].update(energy_weight=-1.0),
                         "train.loss.energy_weight must be >= 0"),
    "unknown-key": _edit(lambda c: c["train"].update(epoch=3), "unknown config key 'train.epoch'"),
}
COMMANDS = ("train", "check-data", "ablate")


def _assert_one_line_error(command: str, rc: int, capsys: pytest.CaptureFixture, needle: str) -> None:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mfjax {command}: error: ") and needle in lines[0], lines[0]


@pytest.mark.parametrize("case", list(CONFIG_CASES))
@pytest.mark.parametrize("command", COMMANDS)
def test_broken_config_is_one_line(command: str, case: str, tmp_path: Path, capsys) -> None:
    path, extra, needle = CONFIG_CASES[case](tmp_path, _base(command, tmp_path))
    rc = main([command, str(path), *extra])
    _assert_one_line_error(command, rc, capsys, needle)
    assert not (tmp_path / "run").exists()  # rejected before any run directory is made


OVERRIDE_CASES = {
    "no-equals": ("train.lr", "--set 'train.lr': expected key=value"),
    "empty-key": ("=1", "--set '=1': the key '' is empty"),
    "index-range": ("data.datasets.5.fidelity=x", "'5' is not an index of a list of 2"),
    "through-scalar": ("train.lr.x=1", "cannot set 'x' inside the value 0.005"),
}


@pytest.mark.parametrize("case", list(OVERRIDE_CASES))
def test_malformed_override_is_one_line(case: str, tmp_path: Path, capsys) -> None:
    override, needle = OVERRIDE_CASES[case]
    rc = main(["train", str(_write(tmp_path, _base("train", tmp_path))), "--set", override])
    _assert_one_line_error("train", rc, capsys, needle)
    assert not (tmp_path / "run").exists()


def test_check_data_stress_with_seven_values(tmp_path: Path, capsys) -> None:
    frame = (
        "2\n"
        'Lattice="6 0 0 0 6 0 0 0 6" Properties=species:S:1:pos:R:3:forces:R:3 energy=-30.0 '
        'stress="{}" pbc="T T T"\n'
        "H 0.0 0.0 0.0 0.0 0.0 0.1\nH 0.74 0.0 0.0 0.0 0.0 -0.1\n"
    )
    data = tmp_path / "bad_stress.extxyz"
    data.write_text("".join(frame.format(s) for s in ("1 2 3 4 5 6", "1 2 3 4 5 6 7", "1 2 3 4 5 6")))
    cfg = _base("check-data", tmp_path)
    cfg["data"]["datasets"] = [{"path": str(data), "fidelity": "pbe"}]
    rc = main(["check-data", str(_write(tmp_path, cfg))])
    _assert_one_line_error("check-data", rc, capsys, "bad_stress.extxyz, frame 1, field 'stress'")


def test_label_basis_typo(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyscf")
    structures = tmp_path / "h2.xyz"
    structures.write_text("2\nProperties=species:S:1:pos:R:3\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n")
    out = tmp_path / "labelled.extxyz"
    rc = main(["label", str(structures), "--level", "pbe/def2-svpx", "--out", str(out), "--no-progress"])
    _assert_one_line_error("label", rc, capsys, "unknown basis 'def2-svpx'")
    assert not out.exists()
