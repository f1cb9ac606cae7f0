"""plots.py: each SVG parses, holds its names as text, and shows the numbers it should."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from toolkit import plots

SVG = "{http://www.w3.org/2000/svg}"
CELL_VALUE = re.compile(r"^\d\.\d\d$")  # a cell of the confusion matrix, e.g. "0.67" (colour bar ticks are "0.2")


def svg_root(path):
    return ET.parse(path).getroot()


def svg_texts(path) -> list[str]:
    return ["".join(t.itertext()) for t in svg_root(path).iter(f"{SVG}text")]


def svg_width(path) -> float:
    return float(svg_root(path).attrib["width"].removesuffix("pt"))


def no_temporary_files_left(folder):
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def history(epochs, with_bacc=True, offset=0.0):
    frame = pd.DataFrame({
        "epoch": range(1, epochs + 1),
        "loss": np.linspace(2.0, 1.0, epochs) + offset,
        "acc": np.linspace(30.0, 70.0, epochs) - offset,
        "top5acc": np.linspace(60.0, 90.0, epochs),
        "lr": 0.1,
    })
    if with_bacc:
        frame["bacc"] = frame["acc"] - 10
    return frame


def test_training_curves_has_both_panels_and_legends(tmp_path):
    path = tmp_path / "curves.svg"
    plots.training_curves(history(3, with_bacc=False), history(3), path)
    texts = svg_texts(path)
    for expected in ["loss", "accuracy (%)", "epoch", "train", "valid", "train acc", "valid acc", "valid bacc",
                     "best valid acc"]:
        assert expected in texts
    assert no_temporary_files_left(tmp_path)


def test_training_curves_marks_the_lowest_loss_when_monitoring_loss(tmp_path):
    path = tmp_path / "curves.svg"
    plots.training_curves(history(3), history(3), path, monitor="loss")
    assert "best valid loss" in svg_texts(path)


def test_training_curves_without_bacc_has_no_bacc_line(tmp_path):
    path = tmp_path / "curves.svg"
    plots.training_curves(history(3, with_bacc=False), history(3, with_bacc=False), path)
    assert "valid acc" in svg_texts(path)
    assert "valid bacc" not in svg_texts(path)


def test_training_curves_with_one_epoch_draws_markers(tmp_path):
    path = tmp_path / "curves.svg"
    plots.training_curves(history(1), history(1), path)
    # a one-point line is invisible without markers; each marker is a <use> of a circle (a curved
    # path, unlike the straight tick marks): train/valid loss, train/valid acc, valid bacc, + legend
    root = svg_root(path)
    circles = {f"#{p.get('id')}" for p in root.iter(f"{SVG}path") if p.get("id") and " C " in p.get("d", "")}
    drawn = [u for u in root.iter(f"{SVG}use") if u.get("{http://www.w3.org/1999/xlink}href") in circles]
    assert len(drawn) >= 5


def test_confusion_matrix_shows_row_normalised_values(tmp_path):
    path = tmp_path / "cm.svg"
    counts = np.array([[2, 1, 0], [0, 3, 0], [1, 1, 1]])
    plots.confusion_matrix(counts, ["ant", "bee", "cow"], path)
    texts = svg_texts(path)
    assert {"ant", "bee", "cow", "true class", "predicted class"} <= set(texts)
    # rows: 2/3 1/3 (0 blank) | 3/3 | 1/3 1/3 1/3 -- normalised by row (column sums would give 0.67, 0.20, ...)
    assert sorted(t for t in texts if CELL_VALUE.match(t)) == ["0.33", "0.33", "0.33", "0.33", "0.67", "1.00"]
    assert no_temporary_files_left(tmp_path)


def test_confusion_matrix_row_without_samples_stays_zero(tmp_path):
    path = tmp_path / "cm.svg"
    plots.confusion_matrix(np.array([[1, 1], [0, 0]]), ["ant", "bee"], path)
    assert sorted(t for t in svg_texts(path) if CELL_VALUE.match(t)) == ["0.50", "0.50"]


def test_confusion_matrix_follows_the_order(tmp_path):
    path = tmp_path / "cm.svg"
    plots.confusion_matrix(np.eye(3, dtype=int), ["ant", "bee", "cow"], path, order=[2, 0, 1])
    names = [t for t in svg_texts(path) if t in {"ant", "bee", "cow"}]
    assert names == ["cow", "ant", "bee"] * 2  # x axis, then y axis


def test_class_names_with_dollar_signs_stay_literal(tmp_path):
    path = tmp_path / "cm.svg"
    plots.confusion_matrix(np.eye(2, dtype=int), ["$1 coin", "$2 coin"], path)
    assert {"$1 coin", "$2 coin"} <= set(svg_texts(path))


def test_confusion_matrix_with_many_classes_has_names_but_no_cell_values(tmp_path):
    path = tmp_path / "cm.svg"
    names = [f"class_{i:02d}" for i in range(40)]
    plots.confusion_matrix(np.eye(40, dtype=int) * 3 + 1, names, path)
    texts = svg_texts(path)
    assert set(names) <= set(texts)
    assert not [t for t in texts if CELL_VALUE.match(t)]
    assert "fraction of the true class" in texts  # the colour bar carries the values


def test_confusion_matrix_grows_with_the_number_of_classes(tmp_path):
    widths = {}
    for k in (10, 100):
        path = tmp_path / f"cm{k}.svg"
        plots.confusion_matrix(np.eye(k, dtype=int), [f"c{i}" for i in range(k)], path)
        widths[k] = svg_width(path)
    assert widths[100] > 3 * widths[10]


def test_reliability_diagram_shows_the_ece(tmp_path):
    path = tmp_path / "reliability.svg"
    bins = pd.DataFrame({"lo": [0.0, 50.0], "hi": [50.0, 100.0], "count": [0, 4],
                         "confidence": [np.nan, 80.0], "accuracy": [np.nan, 75.0]})
    plots.reliability_diagram(bins, 5.0, path)
    texts = svg_texts(path)
    assert "accuracy (ECE = 5.00%)" in texts
    assert {"perfect calibration", "confidence (%)", "samples"} <= set(texts)
    assert no_temporary_files_left(tmp_path)


def test_valid_curves_label_each_run_and_add_a_bacc_panel(tmp_path):
    path = tmp_path / "valid.svg"
    plots.valid_curves([("resnet18 / ce", history(4)), ("resnet18 / focal", history(4, offset=5))], path)
    texts = svg_texts(path)
    assert texts.count("resnet18 / ce") == 2 and texts.count("resnet18 / focal") == 2  # one legend per panel
    assert {"valid acc (%)", "valid bacc (%)"} <= set(texts)


def test_valid_curves_without_bacc_have_one_panel(tmp_path):
    path = tmp_path / "valid.svg"
    plots.valid_curves([("only run", history(2, with_bacc=False))], path)
    texts = svg_texts(path)
    assert texts.count("only run") == 1
    assert "valid bacc (%)" not in texts


def per_class_frame(classes, recalls):
    return pd.DataFrame({"class": classes, "recall": recalls})


def test_recall_table_aligns_runs_by_class_in_the_first_runs_order():
    first = per_class_frame(["dog", "cat", "eel"], [90.0, 50.0, 10.0])
    second = per_class_frame(["cat", "eel", "dog"], [60.0, 20.0, 80.0])
    table = plots.recall_table([("a", first), ("b", second)])
    assert table.index.tolist() == ["dog", "cat", "eel"]
    assert table["b"].tolist() == [80.0, 60.0, 20.0]


def test_per_class_recall_names_classes_in_order_and_runs(tmp_path):
    path = tmp_path / "recall.svg"
    classes = ["dog", "cat", "eel"]
    plots.per_class_recall([("run A", per_class_frame(classes, [90.0, 50.0, 10.0])),
                            ("run B", per_class_frame(classes[::-1], [20.0, 60.0, 80.0]))], path)
    texts = svg_texts(path)
    assert [t for t in texts if t in classes] == classes
    assert {"run A", "run B", "test recall (%)"} <= set(texts)
    assert no_temporary_files_left(tmp_path)


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "cm.svg"
    path.write_text("old")
    plots.confusion_matrix(np.eye(2, dtype=int), ["ant", "bee"], path)
    assert "ant" in svg_texts(path)
    assert [p.name for p in tmp_path.iterdir()] == ["cm.svg"]
