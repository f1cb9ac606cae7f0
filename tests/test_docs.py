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
    python_files = sorted(p.name for p in REPO.glob("*.py"))
    assert python_files == ["0_data_split.py", "1_train.py", "2_test.py", "4_report.py", "5_predict.py", "6_active.py", "7_search.py",
                            "criterion.py", "get_model.py"]


def test_the_plans_train_every_objective_of_the_table():
    import criterion
    line = next(line for line in (REPO / "3_run.sh").read_text().splitlines() if line.startswith("OBJECTIVES="))
    assert line.split('"')[1].split() == criterion.objective_names()


def test_nothing_below_the_scripts_imports_a_numbered_script():
    """The package, the tables and the benchmarks never reach up to a script: what several scripts
    share (the training plan, for one) lives in toolkit/."""
    reaching_up = re.compile(r"""(import_module|__import__|run_path|run_module|spec_from_file_location)\([^)]*["'][^"']*\d_\w+""")
    below = [*REPO.glob("toolkit/*.py"), *REPO.glob("losses/*.py"), *REPO.glob("models/*.py"),
             *REPO.glob("benchmarks/*.py"), REPO / "criterion.py", REPO / "get_model.py"]
    offenders = sorted(p.relative_to(REPO).as_posix() for p in below if reaching_up.search(p.read_text()))
    assert not offenders, f"these import a numbered script: {offenders}"
