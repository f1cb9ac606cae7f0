"""docs/architecture.md stays true: every module it names exists, and every module it owns is named."""
import re

from conftest import REPO

MAP = (REPO / "docs" / "architecture.md").read_text()


def named_modules() -> set:
    return set(re.findall(r"`((?:toolkit/|losses/|models/)?[\w/]+\.py)`", MAP))


def test_every_module_the_map_names_exists():
    names = named_modules()
    assert len(names) > 25
    missing = sorted(name for name in names if not (REPO / name).is_file())
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_module_of_the_package_and_the_losses_is_on_the_map():
    names = named_modules()
    owned = [p.relative_to(REPO).as_posix() for folder in ("toolkit", "losses") for p in (REPO / folder).glob("*.py")
             if p.name != "__init__.py"]
    unmapped = sorted(name for name in owned if name not in names)
    assert not unmapped, f"add these modules to docs/architecture.md: {unmapped}"


def test_the_root_holds_only_the_scripts_and_the_two_tables():
    """Numbered scripts, numbered in a row from 0 (a new one takes the next number), and the two tables."""
    python_files = {p.name for p in REPO.glob("*.py")}
    scripts = sorted(p.name for p in REPO.glob("[0-9]_*") if p.suffix in (".py", ".sh"))
    assert python_files - set(scripts) == {"criterion.py", "get_model.py"}
    assert [int(name.split("_")[0]) for name in scripts] == list(range(len(scripts)))


def plan_commands(plan: str, tmp_path) -> list:
    """The python command lines a plan of 3_run.sh runs, recorded by a stand-in `python` (which
    runs criterion.py itself: the plans read the table from it)."""
    import os
    import subprocess
    import sys
    shim = tmp_path / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nif [ "$1" = criterion.py ]; then exec {sys.executable} "$@"; fi\n'
                    f'echo "$@" >> {tmp_path / "commands"}\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(REPO / "3_run.sh"), plan], env=env, check=True, timeout=60)
    return (tmp_path / "commands").read_text().splitlines()


def test_the_objectives_plan_trains_every_objective_of_the_table(tmp_path):
    import criterion
    trained = [c.split("--objective=")[1].split()[0] for c in plan_commands("objectives", tmp_path)
               if c.startswith("1_train.py")]
    assert trained == criterion.objective_names() + ["LDAM"]  # then LDAM-DRW


def test_nothing_below_the_scripts_imports_a_numbered_script():
    """The package, the tables and the benchmarks never reach up to a script: what several scripts
    share (the training plan, for one) lives in toolkit/."""
    reaching_up = re.compile(r"""(import_module|__import__|run_path|run_module|spec_from_file_location)\([^)]*["'][^"']*\d_\w+""")
    below = [*REPO.glob("toolkit/*.py"), *REPO.glob("losses/*.py"), *REPO.glob("models/*.py"),
             *REPO.glob("benchmarks/*.py"), REPO / "criterion.py", REPO / "get_model.py"]
    offenders = sorted(p.relative_to(REPO).as_posix() for p in below if reaching_up.search(p.read_text()))
    assert not offenders, f"these import a numbered script: {offenders}"


def project_imports(path) -> set:
    """The modules of this project a file imports: toolkit.cli, losses.base, criterion, ..."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:  # from a package: its modules imported
            package = (REPO / node.module.replace(".", "/")).is_dir()
            names = [f"{node.module}.{a.name}" for a in node.names] if package else [node.module]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in ("toolkit", "losses", "models", "criterion", "get_model")}
    return found


def test_the_layers_below_the_machinery_import_only_the_base():
    """The map's layers: toolkit/cli.py and toolkit/space.py at the base, then losses/ and models/,
    then the two tables; none of them reaches into the rest of toolkit/ (which reads the tables)."""
    base = {"toolkit.cli", "toolkit.space"}
    assert project_imports(REPO / "toolkit" / "cli.py") == set()
    assert project_imports(REPO / "toolkit" / "space.py") <= {"toolkit.cli"}
    for path in [*REPO.glob("losses/*.py"), *REPO.glob("models/*.py"), REPO / "criterion.py", REPO / "get_model.py"]:
        toolkit = {name for name in project_imports(path) if name.startswith("toolkit")}
        assert toolkit <= base, f"{path.relative_to(REPO)} imports {sorted(toolkit - base)}"
        if path.parent.name in ("losses", "models"):
            assert not project_imports(path) & {"criterion", "get_model"}, path


def test_the_readme_stays_readable():
    """README.md: at most 450 lines, none over 300 characters; details live in docs/."""
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 450, f"README.md has {len(lines)} lines; move details into a docs/ page"
    long = [number for number, line in enumerate(lines, start=1) if len(line) > 300]
    assert not long, f"README.md lines over 300 characters: {long}"
