"""Bad-input battery: every partseg command fed bad inputs, as a careless or hostile user would.

Each entry builds its inputs in a fresh folder (private copies of a tiny store, run and raw
dataset, edited as the entry says), runs one ``partseg`` command and classifies the outcome:

* ``clear_error``: exit status 2 and a last stderr line ``partseg <command>: error: ...``;
* ``traceback``: a Python traceback, or an exit status other than 0 and 2;
* ``wrong_exit_0``: the command succeeded although the input was bad;
* ``data_lost``: a guarded file changed (the private copies, unless the entry means to change
  them; the shared fixtures) or a path outside the output appeared (``/any/where``-style ids);
* ``unclear``: exit 2 without the one-line message, or an ``ok`` entry that did not succeed.

Entries marked ``ok`` are bad situations partseg must recover from (a stale lock, a symlinked
case folder) with exit 0. Entries marked ``depends="pipeline"`` need the predict pipeline work
(device validation, predict's lock); they are counted separately.

Usage::

    python tools/battery.py                       # every entry, as subprocesses; JSON counts
    python tools/battery.py --mode inprocess      # the same through partseg.cli.main (fast)
    python tools/battery.py --only ingest --list  # the entries of one command

The counts are printed as JSON (``cases``, ``clear_error``, ``traceback``, ``wrong_exit_0``,
``data_lost``, ``unclear``, ``ok``, ``by_command``, ``failures``). Full-disk entries replace one
low-level write with ``OSError(ENOSPC)`` (``--patched NAME -- ARGV`` runs one such command).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


# ---------------------------------------------------------------------------- fixtures


class Fixtures(dict):
    """The shared, read-only inputs, each built on first use under ``root``: raw NumPy cases,
    a store of them, a run trained on it, BraTS / MSD folders, label folders, a compare config.
    Each fixture's hash is taken when it is built, to prove at the end that nothing changed it.
    """

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.hashes: dict[str, str | None] = {}
        root.mkdir(parents=True, exist_ok=True)

    def __missing__(self, name: str) -> Path:
        path = getattr(self, f"_build_{name}")()
        self[name] = path
        self.hashes[name] = tree_hash(path)
        return path

    def _build_raw(self) -> Path:
        return write_numpy_cases(self.root / "raw", 4)

    def _build_store(self) -> Path:
        from partseg.cli import main

        store = self.root / "store.zarr"
        with quiet():
            argv = ["ingest", str(self["raw"]), str(store), "--chunks", "8", "8", "8"]
            assert main([*argv, "--no-progress"]) == 0
        return store

    def _build_run(self) -> Path:
        from partseg.cli import main

        run = self.root / "run"
        with quiet():
            argv = ["train", str(TINY), "--out", str(run), f"data.store={self['store']}"]
            assert main([*argv, "train.epochs=1"]) == 0
        return run

    def _build_brats(self) -> Path:
        return write_brats(self.root / "brats")

    def _build_msd(self) -> Path:
        return write_msd(self.root / "msd")

    def _build_pred(self) -> Path:
        return write_label_folders(self.root)[0]

    def _build_gt(self) -> Path:
        return write_label_folders(self.root)[1]

    def _build_cmp(self) -> Path:
        return write_compare(self.root / "compare.yaml", self["store"])


def write_numpy_cases(root: Path, n: int, shape: tuple[int, ...] = (16, 16, 16)) -> Path:
    """``n`` NumPy cases, 2 channels, labels {0, 1, 2}: the shape ``configs/tiny.yaml`` trains."""
    root.mkdir(parents=True, exist_ok=True)
    z, y, x = np.indices(shape)
    for i in range(n):
        rng = np.random.default_rng(i)
        radius = np.sqrt(sum((a - s // 2) ** 2 for a, s in zip((z, y, x), shape, strict=True)))
        label = (radius < 5).astype(np.uint8) + (radius < 2.5)
        image = rng.normal(2.0, 0.3, (2, *shape)).astype(np.float32) + label
        np.save(root / f"case{i}.npy", image)
        np.save(root / f"case{i}_label.npy", label)
    return root


def save_nifti(path: Path, zyx: np.ndarray) -> Path:
    import nibabel as nib

    data = zyx.transpose(2, 1, 0) if zyx.ndim == 3 else zyx.transpose(3, 2, 1, 0)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), np.eye(4)), str(path))
    return path


def write_brats(root: Path, ids: Sequence[str] = ("B_001", "B_002")) -> Path:
    for k, case in enumerate(ids):
        folder = root / case
        folder.mkdir(parents=True, exist_ok=True)
        label = np.zeros((8, 10, 12), np.int16)
        label[2:5, 3:6, 4:8] = 1
        label[3:4, 4:5, 5:6] = 4
        for c, name in enumerate(("t1", "t1ce", "t2", "flair")):
            save_nifti(folder / f"{case}_{name}.nii.gz", np.full(label.shape, 10.0 + c + k))
        save_nifti(folder / f"{case}_seg.nii.gz", label)
    return root


def write_msd(root: Path) -> Path:
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, case in enumerate(("p_00", "p_01")):
        save_nifti(root / "imagesTr" / f"{case}.nii.gz", np.full((2, 6, 8, 8), 5.0 + k))
        label = np.zeros((6, 8, 8), np.int16)
        label[2:4, 2:5, 2:5] = 1
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label)
    meta = {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "p"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_label_folders(root: Path) -> tuple[Path, Path]:
    pred, gt = root / "pred", root / "gt"
    if (gt / "c2_seg.nii.gz").is_file():
        return pred, gt
    for folder in (pred, gt):
        folder.mkdir(parents=True, exist_ok=True)
    for case in ("c1", "c2"):
        label = np.zeros((6, 8, 8), np.int16)
        label[1:4, 2:6, 2:6] = 2
        label[2:3, 3:5, 3:5] = 4
        save_nifti(gt / f"{case}_seg.nii.gz", label)
        label[1, 2, 2] = 1
        save_nifti(pred / f"{case}.nii.gz", label)
    return pred, gt


def write_compare(path: Path, store: Path, variants: Sequence[str] = ("a",)) -> Path:
    import yaml

    base = yaml.safe_load(TINY.read_text())
    base["train"].update(epochs=1, val_every=0)
    config = {
        "store": str(store),
        "base": base,
        "evaluation": {"test_fraction": 0.25, "seam": False, "overlay_slices": 1},
        "variants": [{"name": n} for n in variants],
    }
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------- one entry


#: An entry's private copies: placeholder -> (shared fixture, folder name in the entry).
COPIES = {"s": ("store", "s.zarr"), "r": ("run", "r"), "src": ("raw", "src"),
          "b": ("brats", "b"), "m": ("msd", "m"), "p": ("pred", "p")}  # fmt: skip


@dataclass
class Ctx:
    """An entry's folder and its private copies (``ctx.s``, ``ctx.r``... made on first use)."""

    d: Path
    fx: Fixtures

    def __getattr__(self, key: str) -> Path:
        if key not in COPIES:
            raise AttributeError(key)
        name, folder = COPIES[key]
        dest = self.d / folder
        if not dest.exists():
            shutil.copytree(self.fx[name], dest, symlinks=True)
        return dest

    @property
    def file(self) -> Path:
        path = self.d / "a_file"
        if not path.exists():
            path.write_text("I am a file, not a folder\n")
        return path

    def copies(self) -> list[Path]:
        return [self.d / f for _, f in COPIES.values() if (self.d / f).exists()]

    def format(self, text: str) -> str:
        keys: dict[str, Any] = {"d": self.d, "tiny": TINY}
        for key in (*COPIES, "file", *SHARED):
            if "{" + key + "}" in text:
                keys[key] = self.fx[key] if key in SHARED else getattr(self, key)
        return text.format(**{k: str(v) for k, v in keys.items()})


Setup = Callable[[Ctx], Any]
#: The shared fixtures' placeholders.
SHARED = ("raw", "store", "run", "brats", "msd", "pred", "gt", "cmp")


@dataclass
class Entry:
    name: str
    command: str
    argv: list[str]
    setups: tuple[Setup, ...] = ()
    expect: str = "error"  # or "ok"
    patch: str | None = None
    mutates: bool = False  # the private copies may change (a resumed ingest, a training)
    keep: tuple[str, ...] = ()  # more paths that must not change
    absent: tuple[str, ...] = ()  # paths that must not appear
    depends: str = ""  # "pipeline": needs the predict pipeline's branch
    stderr: str = ""  # text the stderr must contain (ok entries: the warning)


@dataclass
class Outcome:
    entry: str
    command: str
    verdict: str
    code: int
    last_line: str
    seconds: float
    depends: str = ""
    detail: str = ""


def run_entry(entry: Entry, fx: Fixtures, work: Path, mode: str) -> Outcome:
    ctx = Ctx(work / entry.name, fx)
    ctx.d.mkdir(parents=True)
    for setup in entry.setups:
        setup(ctx)
    argv = [ctx.format(a) for a in entry.argv]
    guarded = [] if entry.mutates else ctx.copies()
    guarded += [Path(ctx.format(k)) for k in entry.keep]
    before = {p: tree_hash(p) for p in guarded}
    start = time.perf_counter()
    code, stderr = (run_subprocess if mode == "subprocess" else run_inprocess)(argv, entry.patch)
    seconds = round(time.perf_counter() - start, 2)
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    lost = [str(p) for p in guarded if tree_hash(p) != before[p]]
    lost += [a for a in (ctx.format(x) for x in entry.absent) if os.path.lexists(a)]
    clear = code == 2 and last.startswith(f"partseg {entry.command}: error: ")
    if "Traceback (most recent call last)" in stderr or code not in (0, 2):
        verdict, detail = "traceback", stderr[-2000:]
    elif lost:
        verdict, detail = "data_lost", ", ".join(lost)
    elif entry.expect == "error":
        verdict = "clear_error" if clear else ("wrong_exit_0" if code == 0 else "unclear")
        detail = "" if clear else stderr[-1000:]
    else:
        good = code == 0 and entry.stderr in stderr
        verdict, detail = ("ok", "") if good else ("unclear", stderr[-1000:])
    return Outcome(
        entry.name, entry.command, verdict, code, last[:300], seconds, entry.depends, detail
    )


def tree_hash(path: Path) -> str | None:
    """Hash of a file or of every file below a folder (partseg's lock file excluded)."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file.name.startswith(".partseg.lock"):
            continue
        digest.update(str(file.relative_to(path.parent)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    err = io.StringIO()
    logger = logging.getLogger("partseg")
    for handler in list(logger.handlers):  # the CLI adds one bound to the current stderr
        logger.removeHandler(handler)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        yield err
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def run_inprocess(argv: list[str], patch: str | None) -> tuple[int, str]:
    from partseg.cli import main

    with quiet() as err, patched(patch):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # a traceback, as the console script would print it
            traceback.print_exc(file=err)
            code = 1
    return int(code or 0), err.getvalue()


def run_subprocess(argv: list[str], patch: str | None) -> tuple[int, str]:
    command = [sys.executable, "-m", "partseg", *argv]
    if patch:
        command = [sys.executable, __file__, "--patched", patch, "--", *argv]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    return done.returncode, done.stderr


# ---------------------------------------------------------------------------- patches


@contextlib.contextmanager
def patched(name: str | None) -> Iterator[None]:
    """Replace one low-level write with a full disk (ENOSPC) for the block."""
    if name is None:
        yield
        return
    from unittest import mock

    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    if name == "enospc_zarr":
        import zarr.storage._local as local

        put = local._put

        def put_full(path: Any, value: Any, exclusive: bool = False) -> Any:
            if "/c/" in str(path):  # chunk files: the bulk of every store write
                full()
            return put(path, value, exclusive)

        target: Any = mock.patch.object(local, "_put", put_full)
    elif name == "enospc_atomic":
        target = mock.patch("partseg.atomic.os.replace", full)
    elif name == "enospc_checkpoint":
        import torch

        save = torch.save

        def save_full(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> Any:
            if ".pt." in str(getattr(handle, "name", "")):  # best.pt or last.pt, whichever first
                full()
            return save(obj, handle, *args, **kwargs)

        target = mock.patch.object(torch, "save", save_full)
    elif name == "enospc_nibabel":
        target = mock.patch("nibabel.save", full)
    else:
        raise ValueError(f"unknown patch {name!r}")
    with target:
        yield


# ---------------------------------------------------------------------------- setups


def edit_json(template: str, **attrs: Any) -> Setup:
    """Set ``attributes`` of a zarr.json (``{s}/zarr.json``, ``{s}/cases/case0/zarr.json``)."""

    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        meta = json.loads(path.read_text())
        meta["attributes"].update({k: _placed(ctx, v) for k, v in attrs.items()})
        path.write_text(json.dumps(meta))

    return setup


def _placed(ctx: Ctx, value: Any) -> Any:
    """``value`` with ``{d}``-style placeholders of its strings filled in."""
    if isinstance(value, str) and value.startswith("{d}"):
        return ctx.format(value)
    if isinstance(value, list):
        return [_placed(ctx, v) for v in value]
    return value


def drop_json(template: str, key: str) -> Setup:
    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        meta = json.loads(path.read_text())
        del meta["attributes"][key]
        path.write_text(json.dumps(meta))

    return setup


def write(template: str, content: str | bytes) -> Setup:
    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def npy(template: str, array: np.ndarray) -> Setup:
    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array) if path.suffix == ".npy" else np.savez(path, **{"image": array})

    return setup


def nifti(template: str, array: np.ndarray) -> Setup:
    return lambda ctx: save_nifti(Path(ctx.format(template)), array)


def remove(template: str) -> Setup:
    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return setup


def truncate(template: str, keep: float = 0.5) -> Setup:
    def setup(ctx: Ctx) -> None:
        path = Path(ctx.format(template))
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return setup


def delete_chunk(array: str, case: str = "case1") -> Setup:
    def setup(ctx: Ctx) -> None:
        chunks = sorted(p for p in (ctx.s / "cases" / case / array / "c").rglob("*") if p.is_file())
        chunks[len(chunks) // 2].unlink()

    return setup


def lock(template: str, live: bool = True, host: str | None = None) -> Setup:
    """A lock file held by a live process (this battery) or by a dead one."""

    def setup(ctx: Ctx) -> None:
        import socket

        folder = Path(ctx.format(template))
        folder.mkdir(parents=True, exist_ok=True)
        pid = os.getpid() if live else dead_pid()
        holder = {
            "pid": pid,
            "host": host or socket.gethostname(),
            "since": "2024-01-01T00:00",
            "command": "ingest",
            "argv": "partseg ingest raw store",
            "token": "battery",
        }
        (folder / ".partseg.lock").write_text(json.dumps(holder))

    return setup


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def symlink(template: str, target: str) -> Setup:
    def setup(ctx: Ctx) -> None:
        link, dest = Path(ctx.format(template)), Path(ctx.format(target))
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "keep.txt").write_text("outside data")
        link.symlink_to(dest)

    return setup


def call(func: Callable[[Ctx], Any]) -> Setup:
    return func


# ---------------------------------------------------------------------------- entries


def entries() -> list[Entry]:
    """Every entry, from ``tools/battery_entries.py`` (the list is long: its own module)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from battery_entries import all_entries

    return all_entries()


# ---------------------------------------------------------------------------- main


def run_battery(
    selected: Sequence[Entry],
    mode: str = "subprocess",
    work: Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Build the fixtures, run ``selected``, return the counts (see the module docstring)."""
    base = Path(work or tempfile.mkdtemp(prefix="partseg-battery-"))
    fx = Fixtures(base / "fixtures")
    outcomes = [run_entry(e, fx, base / "entries", mode) for e in selected]
    for name, digest in fx.hashes.items():
        if tree_hash(fx[name]) != digest:
            outcomes.append(Outcome(f"fixture:{name}", "-", "data_lost", 0, "", 0.0))
    return summarize(outcomes, mode, verbose)


def summarize(outcomes: Sequence[Outcome], mode: str, verbose: bool = False) -> dict[str, Any]:
    counts = Counter(o.verdict for o in outcomes)
    by_command: dict[str, dict[str, int]] = {}
    for o in outcomes:
        by_command.setdefault(o.command, Counter())[o.verdict] += 1  # type: ignore[index]
    bad = [o for o in outcomes if o.verdict not in ("clear_error", "ok")]
    return {
        "mode": mode,
        "cases": len(outcomes),
        **{k: counts.get(k, 0) for k in VERDICTS},
        "failures_needing_pipeline": sum(o.depends == "pipeline" for o in bad),
        "by_command": {k: dict(v) for k, v in sorted(by_command.items())},
        "seconds": round(sum(o.seconds for o in outcomes), 1),
        "failures": [
            {
                "entry": o.entry,
                "verdict": o.verdict,
                "code": o.code,
                "last_line": o.last_line,
                "depends": o.depends,
                "detail": o.detail[-600:],
            }
            for o in bad
        ],
        **({"entries": {o.entry: o.last_line for o in outcomes}} if verbose else {}),
    }


VERDICTS = ("clear_error", "ok", "traceback", "wrong_exit_0", "data_lost", "unclear")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("subprocess", "inprocess"), default="subprocess")
    parser.add_argument("--only", default=None, help="entries whose name starts with this")
    parser.add_argument("--list", action="store_true", help="list the entries and stop")
    parser.add_argument("--verbose", action="store_true", help="add every entry's last line")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temp)")
    parser.add_argument("--patched", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.patched:  # one command with a patch: the subprocess side of run_subprocess
        from partseg.cli import main as partseg_main

        with patched(args.patched):
            return partseg_main([a for a in rest if a != "--"])
    selected = [e for e in entries() if not args.only or e.name.startswith(args.only)]
    if args.list:
        for e in selected:
            print(f"{e.name:50s} {' '.join(e.argv)}")
        return 0
    result = run_battery(selected, args.mode, args.work, args.verbose)
    print(json.dumps(result, indent=1))
    bad = result["traceback"] + result["wrong_exit_0"] + result["data_lost"] + result["unclear"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
