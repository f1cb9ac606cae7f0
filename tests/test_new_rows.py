"""A new row is one row: an objective and two models added to a copy of the repository exactly as
docs/architecture.md's "How to add" says, and nothing else edited, are picked up by every
table-driven check, which passes for them (and still for every other row)."""
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO

NOT_COPIED = (".git", "a_datasets", "c_original_dataset", "logs", "__pycache__", ".pytest_cache")

# "an objective: ... a class in losses/ deriving from PerSampleLoss, @declare(...) above it"
OBJECTIVE = '''

@declare("TOYCE", "k times the cross-entropy, a row added by tests/test_new_rows.py (--toyce-k)", hyper_parameters=[
    HyperParameter("--toyce-k", 2.0, type=non_negative_float, search=Uniform(1.0, 3.0),
                   help="TOYCE: the factor k (default: %(default)s)")])
class ToyCrossEntropy(PerSampleLoss):
    """TOYCE: k times the cross-entropy (with DRW, its weighted mean from --drw on)."""

    def __init__(self, k: float, **drw):
        super().__init__(**drw)
        self.k = k

    @classmethod
    def from_plan(cls, class_counts, args):
        return cls(args.toyce_k, **deferred_reweighting(class_counts, args))

    def per_sample(self, logits, targets):
        return self.k * F.cross_entropy(logits, targets, reduction="none")
'''

# "a model: write it in models/ (it takes num_classes, pools adaptively), import it in models/__init__.py"
OWN_MODEL = '''"""ToyNet: a throwaway architecture added by tests/test_new_rows.py."""
from torch import nn


class ToyNet(nn.Sequential):
    def __init__(self, num_classes: int):
        super().__init__(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))
'''
MODEL_ROWS = ('    ModelSpec("ToyNet", models.ToyNet, 1),\n', '    tv("mobilenet_v3_small", 1),\n')

# the table-driven checks, and the checks that once named every row (a selection: the whole
# suite on a copy would take as long as the suite)
CHECKS = ["tests/test_criterion.py", "tests/test_docs.py", "tests/test_models.py", "tests/test_alrp.py",
          "tests/test_augment.py", "tests/test_bad_input.py", "tests/test_objectives_training.py"]
SELECTED = ("test_criterion or test_docs or toyce or toynet or mobilenet_v3_small or main_prints or unknown_index "
            "or unique or table_builds or lambda_1 or unknown_model_index or unknown_objective")
# (a parametrised check, the new row it must have run on)
PICKED_UP = [(f"test_criterion.{check}", "TOYCE") for check in (
    "test_every_objective_that_takes_drw_switches_it_on", "test_gradients_are_finite",
    "test_bf16_logits_give_the_float32_value", "test_state_dict_round_trip_gives_the_same_next_losses",
    "test_every_declared_search_range_holds_its_default")] + [
    ("test_objectives_training.test_short_training_lowers_the_training_loss", "TOYCE"),
    ("test_models.test_every_model_classifies_at_32_or_its_min_size", "ToyNet"),
    ("test_models.test_every_model_classifies_at_32_or_its_min_size", "mobilenet_v3_small")]


def append_to_tuple(text: str, name: str, row: str) -> str:
    """`row` added as the last entry of the tuple `NAME = (...)` of a table file."""
    start = text.index(f"\n{name} = (")
    end = text.index("\n)\n", start)
    return text[:end + 1] + row + text[end + 1:]


def add_rows(repo):
    losses = repo / "losses" / "cross_entropy.py"
    losses.write_text(losses.read_text() + OBJECTIVE)
    table = repo / "criterion.py"
    text = re.sub(r"(from losses\.cross_entropy import [^\n]+)", r"\1, ToyCrossEntropy", table.read_text())
    table.write_text(append_to_tuple(text, "TABLE", "    ToyCrossEntropy,\n"))

    (repo / "models" / "toy_net.py").write_text(OWN_MODEL)
    package = repo / "models" / "__init__.py"
    package.write_text(package.read_text().replace("\n__all__ = [",
                                                   '\nfrom models.toy_net import ToyNet\n\n__all__ = [\n    "ToyNet",'))
    models = repo / "get_model.py"
    text = models.read_text()
    for row in MODEL_ROWS:
        text = append_to_tuple(text, "MODELS", row)
    models.write_text(text)


def test_a_row_added_the_documented_way_passes_the_table_driven_checks(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns(*NOT_COPIED))
    add_rows(repo)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                             "--junitxml", str(tmp_path / "results.xml"), "-k", SELECTED, *CHECKS],
                            cwd=repo, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    cases = ET.parse(tmp_path / "results.xml").iter("testcase")
    passed = [f"{case.get('classname')}.{case.get('name')}" for case in cases
              if not list(case)]  # a passed case has no failure, error or skipped child
    missing = [(check, row) for check, row in PICKED_UP if not any(check in name and row in name for name in passed)]
    assert not missing, f"these checks did not run the new row: {missing}"
