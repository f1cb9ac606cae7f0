"""Files written whole or not at all: every writer goes through a temporary name and a rename."""
import json
import os
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
