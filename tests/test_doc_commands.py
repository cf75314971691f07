"""Every ``partseg ...`` command the documentation shows runs, in-process, with exit status 0.

Commands are taken from the fenced code blocks of README.md and docs/*.md (a line, or a part of
a ``&&`` chain, that starts with ``partseg ``) and from the header comments of configs/*.yaml
(comment lines indented like ``#   partseg ...``). Each source file gets its own working
folder, in which its commands run in order (later commands use what earlier ones wrote, e.g.
``predict runs/3d_context`` after ``train ... --out runs/3d_context``); the inputs the docs
assume (a BraTS folder, ``brats.zarr``, ...) are made there from the tiny fixtures of
:data:`INPUTS`, unless an earlier command of the file makes them (``partseg ingest SRC
brats.zarr``). Commands are shrunk, never rewritten otherwise: :data:`PLACEHOLDERS` fills
``<recipe>``, :data:`SHRINK` appends tiny-run arguments per subcommand (later overrides win),
:data:`SMALLER` replaces the values of size options, and a ``compare`` on a store trains only the
recipe's first variant (the recipe's ``--quick`` command, also documented, runs them all).
``demo`` and ``compare`` commands, whose outputs no later command reads, each run in a fresh
folder (the docs show them as alternatives writing the same default output folder) and once
per session even when several files show them; those another test already runs end to end
(:data:`COVERED`: every recipe's ``--quick`` run and ``demo --quick``; :data:`COVERED_OPTIONS`:
``train --nproc``) are parsed and their config loaded instead.
:data:`OFFLINE` lists the commands that cannot run here, with the reason (none today).

A failure names the file, the line, the command as documented and as run, and the output.

Commands written inline in the prose (`` `partseg plan CONFIG --gpu-mem SIZE` ``) are synopses
or fragments that cannot run; each is checked against the CLI's parsers instead: its
subcommand, every option it names and every literal value of an option with choices exist.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_recipes import RECIPES  # the recipes tests/test_recipes.py runs at --quick size

from partseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    "README.md",
    *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
    *sorted(f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")),
]

#: Inputs the docs assume -> the session fixture made in the working folder under that name.
INPUTS = {
    "BraTS2020_TrainingData": "brats_raw",
    "data/MICCAI_BraTS2020_TrainingData": "brats_raw",
    "data/BraTS2020_ValidationData": "brats_raw",
    "data/BraTS2023_ValidationData": "brats2023_raw",
    "data/Dataset137_BraTS2021": "nnunet_regions_raw",
    "brats.zarr": "brats_store",
    "my_data.zarr": "brats_store",
    "adam.zarr": "aneurysm_store",
    "pancreas.zarr": "pancreas_store",
}

#: Placeholders in documented commands -> what the test runs.
PLACEHOLDERS = {"<recipe>": "brats_3d"}

_TINY_MODEL = ("model.base_width=4", "model.depth=2", "partition.core=[8,16,16]")
_TINY_TRAIN = (
    *_TINY_MODEL,
    "partition.margin=[2,2,2]",
    "train.epochs=1",
    "train.steps_per_epoch=1",
    "train.batch_size=1",
    "train.val_batch_size=4",
    "train.workers=0",
    "train.device=cpu",
    "train.amp=off",
    "train.progress=false",
)
#: Arguments appended per subcommand to make a documented command a tiny run.
SHRINK: dict[str, tuple[str, ...]] = {
    "plan": _TINY_MODEL,
    "train": _TINY_TRAIN,
    "cv": _TINY_TRAIN,
    "compare": ("--quick", "--no-progress"),
    "demo": ("--quick", "--no-progress"),
}
#: (subcommand, option) -> the values the test passes instead of the documented ones.
SMALLER: dict[tuple[str, str], tuple[str, ...]] = {
    ("phantom", "--cases"): ("2",),
    ("phantom", "--shape"): ("16", "32", "32"),
    ("ingest", "--workers"): ("1",),  # worker pools are tested in tests/store
    ("compare", "base.train.epochs"): ("2",),  # a key=value override: the value after '='
    ("compare", "--budget"): ("2s",),  # a documented budget is minutes to hours
    ("train", "--budget"): ("2s",),
}
#: Documented commands that cannot run offline, with the reason.
OFFLINE: dict[str, str] = {}
#: Options of an optional extra -> the module it installs: a command using one runs where the
#: extra is installed and is left out elsewhere (its own tests check the error without it).
EXTRAS: dict[str, str] = {"--brats-lesionwise": "brats_evaluation"}


def needs_missing_extra(text: str) -> bool:
    """Whether a documented command uses an option whose extra is not installed here."""
    from importlib.util import find_spec

    return any(option in text.split() and find_spec(m) is None for option, m in EXTRAS.items())


#: Shrunk commands (``--out`` aside) another test already runs end to end -> that test. They
#: are parsed and their config is loaded here, not run a second time (it would double the
#: suite's slowest part).
COVERED: dict[tuple[str, ...], str] = {
    ("demo", "--quick", "--no-progress"): "tests/test_cli_demo.py (demo --quick, and its rerun)",
    **{
        ("compare", f"configs/{name}.yaml", "--quick", "--no-progress"): (
            "tests/test_recipes.py::test_recipe_runs_quick"
        )
        for name in RECIPES
    },
}

#: Options whose commands start processes another test runs end to end: such a command is
#: parsed and its config loaded here.
COVERED_OPTIONS: dict[str, str] = {
    "--nproc": "tests/train/test_distributed.py (slow: 2 CPU processes equal 1 process)",
}

#: Subcommands whose outputs no later command reads: run once per session.
TERMINAL = ("demo", "compare")


@dataclass(frozen=True)
class DocCommand:
    """One documented command: where it is shown and its text."""

    source: str
    line: int
    text: str

    def where(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"


def _fenced_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines of fenced blocks; a line ending in a backslash continues on the next one."""
    inside, pending, first = False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            stripped = line.strip()
            if not pending:
                first = number
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            yield first, pending + stripped
            pending = ""


def _header_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("#"):
            return
        if re.match(r"#\s{2,}partseg ", line):
            yield number, line[1:].strip()


def doc_commands(source: str) -> list[DocCommand]:
    """The ``partseg`` commands ``source`` shows, in order."""
    text = (ROOT / source).read_text()
    lines = _header_lines(text) if source.endswith(".yaml") else _fenced_lines(text)
    found = []
    for number, line in lines:
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("partseg "):
                found.append(DocCommand(source, number, part))
    return found


def test_commands_are_found_in_every_kind_of_source() -> None:
    readme = [c.text for c in doc_commands("README.md")]
    assert "partseg demo" in readme  # the tail of the install line's && chain
    assert any(c.startswith("partseg ingest BraTS2020_TrainingData") for c in readme)
    header = [c.text for c in doc_commands("configs/brats_3d_context.yaml")]
    assert header[0].startswith("partseg plan configs/brats_3d_context.yaml --variant")
    assert not doc_commands("configs/tiny.yaml")


def to_argv(command: DocCommand) -> list[str]:
    """The argv the test runs for a documented command (placeholders filled, shrunk)."""
    text = command.text
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    argv = shlex.split(text, comments=True)[1:]  # drop "partseg"; "# ..." is a comment
    sub = argv[0]
    for (name, option), values in SMALLER.items():
        if name != sub:
            continue
        for i, token in enumerate(argv):
            if token == option:
                argv[i + 1 : i + 1 + len(values)] = values
            elif token.startswith(f"{option}="):
                argv[i] = f"{option}={values[0]}"
    if sub == "compare" and "--store" in argv and "--variants" not in argv:
        argv += ["--variants", first_variant(argv[1])]
    shrink = [a for a in SHRINK.get(sub, ()) if a not in argv]
    if "partition.spatial_dims=2" in argv:  # a 2D core is one voxel thick on the slice axis
        shrink = [a.replace("[8,16,16]", "[1,16,16]") for a in shrink]
    return [*argv, *shrink]


def first_variant(config: str) -> str:
    """The first variant of a recipe: a compare command on a store trains just that one (its
    ``--quick`` alternative on phantoms, also documented, runs every variant)."""
    raw = yaml.safe_load((ROOT / config).read_text())
    return raw["variants"][0]["name"]


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny inputs, made once: a BraTS-layout folder and stores of three kinds."""
    from partseg.experiments import CompareConfig, PhantomSpec, Variant, prepare_store
    from partseg.phantom import write_phantoms
    from partseg.store.ingest import IngestSettings, ingest

    root = tmp_path_factory.mktemp("doc_inputs")
    raw = root / "brats_raw"
    write_phantoms(raw, 5, (16, 32, 32), prefix="BraTS20_Training", progress=False)
    ingest(raw, root / "brats.zarr", IngestSettings(), progress=False)
    made = {"brats_raw": raw, "brats_store": root / "brats.zarr"}
    made["brats2023_raw"] = brats2023_folder(raw, root / "brats2023_raw")
    made["nnunet_regions_raw"] = nnunet_regions_folder(raw, root / "nnunet_regions_raw")
    specs = {
        "aneurysm_store": PhantomSpec(kind="aneurysm", cases=5, shape=(24, 32, 32)),
        "pancreas_store": PhantomSpec(
            cases=5, shape=(16, 32, 32), target="whole_tumor", channels=("flair",)
        ),
    }
    for name, spec in specs.items():
        config = CompareConfig(variants=(Variant("x"),), phantom=spec)
        made[name] = Path(prepare_store(config, root / name, progress=False))
    return made


_BRATS23 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}


def brats2023_folder(brats2020: Path, root: Path) -> Path:
    """The BraTS 2020 phantoms under BraTS 2023 names (``<id>-t1n.nii.gz``, labels 1, 2, 3)."""
    import nibabel as nib

    for path in sorted(brats2020.glob("*/*.nii.gz")):
        case, modality = path.name[: -len(".nii.gz")].rsplit("_", 1)
        target = root / case / f"{case}-{_BRATS23[modality]}.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        image = nib.load(path)
        data = np.asarray(image.dataobj)
        if modality == "seg":
            data = np.where(data == 4, 3, data).astype(data.dtype)
        nib.save(nib.Nifti1Image(data, image.affine), target)
    return root


def nnunet_regions_folder(brats2020: Path, root: Path) -> Path:
    """The phantoms as nnU-Net converts BraTS (Dataset137): ``imagesTr/<id>_0000.nii.gz`` ...,
    labels edema 1, necrosis 2, enhancing 3, the region-based ``dataset.json``; the last case
    also as a flat ``imagesTs/`` (no dataset.json there, no label)."""
    import json

    import nibabel as nib

    cases = sorted(p.name for p in brats2020.iterdir() if p.is_dir())
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)
    for case in cases:
        images = "imagesTs" if case == cases[-1] else "imagesTr"
        for c, modality in enumerate(("t1", "t1ce", "t2", "flair")):
            path = brats2020 / case / f"{case}_{modality}.nii.gz"
            shutil.copyfile(path, root / images / f"{case}_{c:04d}.nii.gz")
        if images == "imagesTr":
            seg = nib.load(brats2020 / case / f"{case}_seg.nii.gz")
            data = np.asarray(seg.dataobj)
            data = np.select([data == 2, data == 1, data == 4], [1, 2, 3], 0).astype(np.uint8)
            nib.save(nib.Nifti1Image(data, seg.affine), root / "labelsTr" / f"{case}.nii.gz")
    meta = {
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
        "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
                   "enhancing_tumor": 3},
        "regions_class_order": [1, 2, 3],
        "numTraining": len(cases) - 1,
        "file_ending": ".nii.gz",
    }  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


#: Subcommand -> the position of the positional argument naming what it writes.
_WRITES = {"ingest": 2, "phantom": 1}


def _made_by_a_command(name: str, argvs: list[list[str]]) -> bool:
    return any(len(a) > _WRITES.get(a[0], 99) and a[_WRITES[a[0]]] == name for a in argvs)


def prepare_folder(folder: Path, commands: list[list[str]], made: dict[str, Path]) -> None:
    """``configs/`` and the inputs the commands name, under their documented names."""
    folder.mkdir(parents=True)
    (folder / "configs").symlink_to(ROOT / "configs")
    used = {token for argv in commands for token in argv}
    used |= {token.split("=", 1)[1] for token in used if token.startswith("data.store=")}
    for name, fixture in INPUTS.items():
        if name not in used or _made_by_a_command(name, commands):
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".zarr"):
            shutil.copytree(made[fixture], target)  # commands may write into a store
        else:
            target.symlink_to(made[fixture])


_TERMINAL_DONE: set[tuple[str, ...]] = set()


def alternative_folder(folder: Path, index: int) -> Path:
    """A fresh folder seeing ``folder``'s entries, for a demo or compare command.

    The docs show such commands as alternatives (on your store, or a quick phantom run) that
    write the same default output folder; each runs apart, as a reader runs one of them.
    """
    alternative = folder.parent / f"alternative_{index}"
    alternative.mkdir()
    for entry in folder.iterdir():
        (alternative / entry.name).symlink_to(entry)
    return alternative


def covered_elsewhere(argv: list[str]) -> bool:
    """Whether another test runs this command end to end (:data:`COVERED`,
    :data:`COVERED_OPTIONS`)."""
    if any(option in argv for option in COVERED_OPTIONS):
        return True
    key, skip = [], False
    for token in argv:
        if skip or token == "--out":
            skip = not skip
            continue
        key.append(token)
    return tuple(key) in COVERED


def check_covered(argv: list[str]) -> None:
    """Parse a covered command and load its config (what would fail before it ran)."""
    from partseg.cli import build_parser
    from partseg.experiments import load_compare_config
    from partseg.recipes import recipe_path, resolve_config

    args = build_parser().parse_args(argv)
    if argv[0] in ("train", "cv"):
        from partseg.cli.train import load_run_config, train_overrides

        load_run_config(args, train_overrides(args, args.overrides))
        return
    path = recipe_path("demo") if argv[0] == "demo" else resolve_config(args.config)
    load_compare_config(path, quick=True)


def run_command(command: DocCommand, argv: list[str], capsys) -> str | None:
    """Run one command in the current folder; None when it exits 0, else the failure text."""
    try:
        if covered_elsewhere(argv):
            check_covered(argv)
            status = 0
        else:
            status = main(argv)
    except SystemExit as stop:  # argparse rejected the command line
        status = stop.code
    except Exception as err:  # a covered command's config failed to load
        status = f"{type(err).__name__}: {err}"
    output = capsys.readouterr()
    if status == 0:
        return None
    return (
        f"{command.where()}\n  ran as: partseg {shlex.join(argv)}\n  exit status {status}; "
        f"last output:\n{(output.out + output.err)[-3000:]}\n(if it names an input the docs "
        "assume, map it in INPUTS of tests/test_doc_commands.py)"
    )


def test_a_failure_names_the_file_line_and_command(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    command = DocCommand("docs/user_guide.md", 42, "partseg train configs/nope.yaml")
    message = run_command(command, to_argv(command), capsys)
    assert message is not None
    assert message.startswith("docs/user_guide.md:42: partseg train configs/nope.yaml\n")
    assert "exit status 2" in message and "configs/nope.yaml not found" in message
    argv = ["train", "--no-such-option"]
    assert "exit status 2" in (run_command(command, argv, capsys) or "")


@pytest.mark.parametrize("source", SOURCES)
def test_documented_commands_run(
    source: str, fixtures, tmp_path: Path, monkeypatch, capsys
) -> None:
    commands = [
        c for c in doc_commands(source) if c.text not in OFFLINE and not needs_missing_extra(c.text)
    ]
    if not commands:
        return
    argvs = [to_argv(c) for c in commands]
    folder = tmp_path / "work"
    prepare_folder(folder, argvs, fixtures)
    monkeypatch.chdir(folder)
    for i, (command, argv) in enumerate(zip(commands, argvs, strict=True)):
        terminal = argv[0] in TERMINAL
        if terminal and tuple(argv) in _TERMINAL_DONE:
            continue
        if terminal:
            monkeypatch.chdir(alternative_folder(folder, i))
        failure = run_command(command, argv, capsys)
        monkeypatch.chdir(folder)
        if failure:
            pytest.fail(failure, pytrace=False)
        if terminal:
            _TERMINAL_DONE.add(tuple(argv))


def test_covered_commands_are_still_parsed_and_loaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    argv = to_argv(DocCommand("x.md", 1, "partseg compare configs/demo.yaml --out demo-run"))
    assert covered_elsewhere(argv)  # --out aside, tests/test_recipes.py runs it
    check_covered(argv)
    assert not covered_elsewhere([*argv, "--variants", "2d"])
    with pytest.raises(SystemExit):
        check_covered(["compare", "configs/demo.yaml", "--quick", "--bogus"])
    from partseg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"nope\.yaml not found"):
        check_covered(["compare", "configs/nope.yaml", "--quick", "--no-progress"])


# -- inline commands: `partseg ...` spans in the prose ---------------------------------------------
#: Inline spans are synopses (``partseg plan CONFIG --gpu-mem SIZE``) or fragments
#: (``partseg predict ... --margin exact``): they cannot run, but their subcommand, every option
#: they name and every literal value of an option with choices must exist.
_INLINE = re.compile(r"(?<!`)`(partseg [^`]+)`(?!`)")


def inline_commands(source: str) -> list[DocCommand]:
    """The ``partseg`` commands written inline (single backticks) outside fenced blocks; a
    span may wrap onto the next line."""
    kept, inside = [], False
    for line in (ROOT / source).read_text().splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        kept.append("" if inside or line.lstrip().startswith("```") else line)
    text = "\n".join(kept)
    return [
        DocCommand(source, text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split()))
        for m in _INLINE.finditer(text)
    ]


def _subparsers() -> dict[str, object]:
    import argparse

    from partseg.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def inline_problems(command: DocCommand, subparsers: dict) -> list[str]:
    """What in an inline command does not exist: the subcommand, an option, a choice."""
    tokens = [t.strip("[]") for t in command.text.split()[1:]]
    if tokens and tokens[0].startswith("<"):  # `partseg <command>: error: ...`, a message form
        return []
    if not tokens or tokens[0] not in subparsers:
        return [f"no subcommand {tokens[:1]}"]
    options = subparsers[tokens[0]]._option_string_actions
    problems = []
    for i, token in enumerate(tokens[1:], start=1):
        if not token.startswith("-") or token in ("-", "--"):
            continue
        name, _, inline_value = token.partition("=")
        action = options.get(name)
        if action is None:
            problems.append(f"no option {name}")
            continue
        value = inline_value or (tokens[i + 1] if i + 1 < len(tokens) else "")
        literal = value and not value.isupper() and value != "..." and "<" not in value
        choices = [str(c) for c in action.choices or ()]
        if choices and action.nargs != 0 and literal and value not in choices:
            problems.append(f"{name} {value}: not one of {choices}")
    return problems


INLINE = [c for source in SOURCES if source.endswith(".md") for c in inline_commands(source)]


def test_inline_commands_are_found_and_a_wrong_option_is_named() -> None:
    assert any(c.text.startswith("partseg plan CONFIG --gpu-mem") for c in INLINE)
    wrapped = [c for c in INLINE if c.text.endswith("--seam-reference REF_DIR")]
    assert wrapped and wrapped[0].source == "docs/stitching.md"  # a span wrapping onto two lines
    subparsers = _subparsers()
    bad = DocCommand("x.md", 1, "partseg predict RUN --margn 3 --partition gird")
    modes = list(subparsers["predict"]._option_string_actions["--partition"].choices)
    assert inline_problems(bad, subparsers) == [
        "no option --margn",
        f"--partition gird: not one of {modes}",
    ]
    assert inline_problems(DocCommand("x.md", 1, "partseg fly"), subparsers) == [
        "no subcommand ['fly']"
    ]


def test_inline_commands_name_real_subcommands_options_and_choices() -> None:
    subparsers = _subparsers()
    wrong = [
        f"{c.where()}: {'; '.join(p)}" for c in INLINE if (p := inline_problems(c, subparsers))
    ]
    assert not wrong, "\n".join(wrong)
