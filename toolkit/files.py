"""Files written whole or not at all: every writer goes through a temporary name and a rename."""
import contextlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from toolkit.cli import UserError


def write_atomically(path: Path, write):
    """Call write(tmp) on a temporary file beside `path`, then rename it over `path`; a failed write
    leaves `path` as it was. An OSError becomes a UserError naming the file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e}); free disk space or fix permissions") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_written_whole(target: Path, what: str, replaces=None):
    """Build a folder whole or not at all: yields a staging folder beside `target` to fill; when the
    block ends without error the staging folder takes target's place. With `replaces` (entries of an
    existing target), only those entries are removed and the staging folder's entries moved in, so
    the rest of target stays (a dataset's .cache/). An error leaves target as it was; an OSError is a
    UserError naming `what`."""
    target = Path(target)
    staging = target.parent / f".{target.name}.staging{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        yield staging
        if replaces is not None and target.is_dir():
            for old in replaces:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
            for item in staging.iterdir():
                os.replace(item, target / item.name)
        elif target.exists():
            old = target.parent / f".{target.name}.old{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as e:
        raise UserError(f"cannot write {what} into {target} ({e.strerror or e}); nothing was changed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: Path, value):
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2, default=str) + "\n"))


def write_csv(path: Path, rows: list, columns=None):
    frame = pd.DataFrame(rows, columns=columns)
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))


def save_tensors(path: Path, state: dict):
    """torch.save through write_atomically; torch reports a failed write as a RuntimeError."""
    def write(tmp):
        try:
            torch.save(state, tmp)
        except RuntimeError:
            raise OSError("the write failed; is the disk full?") from None
    write_atomically(path, write)
