"""200 random corruptions of image files: never a traceback, always exit 0 (file skipped or still
readable) or 2 (the file named), and the source folder is never modified by the toolkit.

The `run` fixture turns an exception escaping a script into a traceback on stderr and exit code 1,
as the command line would show it; test_a_crash_shows_as_a_traceback proves the checks catch one."""
import hashlib
import random
import shutil

import pytest
from conftest import make_source

from toolkit import data

CORRUPTIONS = ("truncate", "random_bytes", "overwrite_middle", "empty", "wrong_extension", "swap_format")
# --dry-run reads and checks everything training would, then stops before the (slow, irrelevant) training
TRAIN = ["--model_index", "41", "--height", "8", "--width", "8", "--dry-run", "--no-progress"]


def corrupt(path, kind, rng):
    """Damage one image; returns the file name an error message should mention."""
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[:rng.randrange(1, len(data))])
    elif kind == "random_bytes":
        path.write_bytes(rng.randbytes(rng.randrange(1, 400)))
    elif kind == "overwrite_middle":
        at = rng.randrange(8, len(data) - 8)
        path.write_bytes(data[:at] + rng.randbytes(8) + data[at + 8:])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong_extension":
        path = path.rename(path.with_suffix(rng.choice([".txt", ".jpg", ".bmp", ".tif"])))
    elif kind == "swap_format":  # PNG bytes under a JPEG name, or a JPEG header glued to PNG data
        path.write_bytes(b"\xff\xd8\xff\xe0" + data[4:])
    return path.name


def fingerprint(folder):
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.filterwarnings("ignore:skipped")
@pytest.mark.parametrize("block", range(4))
def test_corrupted_images_never_crash(roots, run, block):
    pristine = make_source(roots.source / "pristine", counts={"alpha": 4, "beta": 4, "gamma": 4})
    rng = random.Random(block)
    for case in range(50):
        source = roots.source / "fuzz"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(pristine, source)
        victims = rng.sample(sorted(source.rglob("*.png")), rng.choice([1, 1, 2]))
        names = [corrupt(v, rng.choice(CORRUPTIONS), rng) for v in victims]
        before = fingerprint(source)
        code, _, err = run("0_data_split", "--dataset", "fuzz", "--source-root", source.parent,
                           "--data-root", roots.data, "--overwrite")
        if code == 0:
            code, _, err = run("1_train", *TRAIN, "--dataset", "fuzz", "--data-root", roots.data,
                               "--logs-root", roots.logs)
        assert "Traceback" not in err, (case, names, err)
        assert code in (0, 2), (case, names, code, err)
        if code == 2:
            message = [line for line in err.splitlines() if line.startswith("error: ")]
            assert len(message) == 1, err
            assert any(name in message[0] for name in names) or "holds no images" in message[0], (names, err)
        assert fingerprint(source) == before


def test_a_crash_shows_as_a_traceback(tiny, run, monkeypatch):
    """The fuzz checks above can fail: a bug in decoding surfaces as a traceback and exit 1."""
    from toolkit import images

    def broken_decoder(path, height, width):
        raise ZeroDivisionError("a bug, not a user mistake")
    monkeypatch.setattr(images, "decode_image", broken_decoder)
    monkeypatch.setattr(data, "decode_image", broken_decoder)
    code, _, err = run("1_train", *TRAIN, *tiny.data_args)
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err
