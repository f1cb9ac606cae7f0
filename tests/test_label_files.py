"""0_data_split.py --labels: a label file read and checked whole, the split by group, every bad input refused."""
import pandas as pd
import pytest
from conftest import write_images

from toolkit import demo_data, label_files


def labelled_source(folder, groups_per_class=12, views=3, classes=("cat", "dog", "owl")):
    """images/ with `views` images of each group, and labels.csv (path, label, scan) beside it."""
    rows = []
    for c, name in enumerate(classes):
        for g in range(groups_per_class):
            group = f"{name}-{g:02d}"
            write_images(folder / "images" / group, views, (80 * c, 40, 200 - 60 * c), seed=100 * c + g)
            rows += [{"path": f"images/{group}/img{v:03d}.png", "label": name, "scan": group} for v in range(views)]
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"


def split_of(data_root, name):
    return pd.read_csv(data_root / name / "split.csv", dtype=str)


def test_label_file_split_writes_class_folders_and_split_csv(roots, run):
    labels = labelled_source(roots.source / "pets")
    code, out, err = run("0_data_split", "--labels", labels, "--data-root", roots.data)
    assert code == 0, err
    table = split_of(roots.data, "pets")  # the dataset is named after the label file's folder by default
    assert list(table.columns) == ["path", "class", "split"]
    assert len(table) == 108 and sorted(table["path"]) == sorted(pd.read_csv(labels)["path"])
    # stratified per class as a folder split: 36 images -> 26 / 5 / 5
    assert table.groupby(["class", "split"]).size().unstack()[["train", "valid", "test"]].values.tolist() == \
        [[26, 5, 5]] * 3
    for _, row in table.iterrows():  # each image in its split's class folder, below its path in images/
        assert (roots.data / "pets" / row["split"] / row["class"] / row["path"].split("/", 1)[1]).is_file()
    assert "108 images, 3 classes" in out


def test_group_split_keeps_every_group_in_one_split_where_an_image_split_leaks(roots, run):
    labels = labelled_source(roots.source / "pets")
    groups = pd.read_csv(labels).set_index("path")["scan"]
    assert run("0_data_split", "--labels", labels, "--dataset", "by-image", "--data-root", roots.data)[0] == 0
    by_image = split_of(roots.data, "by-image")
    leaked = by_image.assign(group=by_image["path"].map(groups)).groupby("group")["split"].nunique()
    assert (leaked > 1).sum() > 5  # the image split puts views of one scan in two splits
    code, out, err = run("0_data_split", "--labels", labels, "--group-column", "scan", "--dataset", "by-group",
                         "--data-root", roots.data)
    assert code == 0, err
    by_group = split_of(roots.data, "by-group")
    assert list(by_group.columns) == ["path", "class", "split", "group"]
    assert (by_group["group"] == by_group["path"].map(groups)).all()
    assert by_group.groupby("group")["split"].nunique().max() == 1
    # stratified as far as groups allow: every class in every split, whole groups of 3
    counts = by_group.groupby(["class", "split"]).size().unstack()
    assert (counts > 0).all().all() and (counts % 3 == 0).all().all()
    assert "groups (scan) per split: train " in out and "0 groups in more than one split" in out


def test_group_split_is_seeded(roots, run):
    labels = labelled_source(roots.source / "pets")
    tables = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert run("0_data_split", "--labels", labels, "--group-column", "scan", "--dataset", name,
                   "--seed", seed, "--data-root", roots.data)[0] == 0
        tables.append(split_of(roots.data, name).sort_values("path")["split"].tolist())
    assert tables[0] == tables[1] != tables[2]


def test_tsv_and_named_columns(roots, run):
    folder = roots.source / "parts"
    write_images(folder / "all", 6, (10, 10, 10), seed=0)
    rows = [f"all/img{i:03d}.png\t{'ok' if i < 3 else 'bad'}" for i in range(6)]
    (folder / "list.tsv").write_text("file\tverdict\n" + "\n".join(rows) + "\n")
    code, _, err = run("0_data_split", "--labels", folder / "list.tsv", "--path-column", "file", "--label-column",
                       "verdict", "--ratio", "0.34", "0.33", "0.33", "--data-root", roots.data)
    assert code == 0, err
    assert split_of(roots.data, "parts").groupby("class").size().to_dict() == {"bad": 3, "ok": 3}


def write_label_file(folder, text, images=3):
    write_images(folder / "images", images, (50, 60, 70), seed=0)
    (folder / "labels.csv").write_text(text)
    return folder / "labels.csv"


GOOD = "images/img000.png,a\nimages/img001.png,b\nimages/img002.png,b\n"


@pytest.mark.parametrize("text, extra, message", [
    (None, [], "no label file"),
    ("file,label\n" + GOOD, [], "has no column --path-column 'path'; its columns: 'file', 'label'"),
    ("path,label\n" + GOOD, ["--group-column", "site"], "no column --group-column 'site'"),
    ("path,label\n" + GOOD + "images/x1.png,a\nimages/x2.png,a\nimages/x3.png,b\nimages/x4.png,b\n", [],
     "4 listed paths of "),
    ("path,label\n" + GOOD + "images/img000.png,b\n", [], "two labels, 'a' and 'b'"),
    ("path,label\nimages/img000.png,\nimages/img001.png,b\nimages/img002.png,b\n", [], "line 2: label '' is empty"),
    ("path,label\nimages/img000.png,a/b\nimages/img001.png,b\nimages/img002.png,b\n", [], "holds '/'"),
    ("path,label\nimages/img000.png,..\nimages/img001.png,b\nimages/img002.png,b\n", [], "starts with '.'"),
    ("path,label\nimages/img000.png,b\nimages/img001.png,b\nimages/img002.png,b\n", [], "has 1 class ('b')"),
    ("path,label\n", [], "lists no images"),
    ("path,label,site\n" + GOOD.replace(",a\n", ",a,s1\n").replace(",b\n", ",b,\n"), ["--group-column", "site"],
     "the group column 'site' is empty"),
])
def test_bad_label_files_are_one_error_and_write_nothing(roots, run, text, extra, message):
    folder = roots.source / "set"
    labels = write_label_file(folder, text) if text is not None else folder / "labels.csv"
    code, out, err = run("0_data_split", "--labels", labels, *extra, "--data-root", roots.data)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert list(roots.data.iterdir()) == []


def test_missing_paths_name_how_many_and_the_first_three(tmp_path):
    labels = write_label_file(tmp_path, "path,label\n" + GOOD + "".join(f"gone/{i}.png,a\n" for i in range(5)))
    with pytest.raises(label_files.UserError, match=r"5 listed paths of .* do not exist, e\.g\. gone/0\.png, "
                                                    r"gone/1\.png, gone/2\.png \(relative"):
        label_files.read_labels(labels)


def test_option_mistakes(roots, run):
    labels = labelled_source(roots.source / "pets", groups_per_class=2)
    for argv, message in [(["--dataset", "pets", "--group-column", "scan"], "add --labels FILE"),
                          (["--labels", labels, "--demo"], "leave out --demo"),
                          (["--labels", labels, "--group-column", "scan", "--long-tail", "10"], "drop one of them")]:
        code, _, err = run("0_data_split", *argv, "--source-root", roots.source, "--data-root", roots.data)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_folder_of_one_class_is_refused_naming_the_label_file_beside_it(roots, run):
    labels = labelled_source(roots.source / "pets", groups_per_class=2)
    code, _, err = run("0_data_split", "--dataset", "pets", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 2 and err.count("\n") == 1
    assert "would split into 1 class ('images')" in err and f"--labels {labels}" in err
    labels.unlink()  # no label file: still refused, with the two ways in
    code, _, err = run("0_data_split", "--dataset", "pets", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 2 and "would split into 1 class" in err and "--labels FILE" in err
    assert list(roots.data.iterdir()) == []


def test_group_folds_hold_out_about_the_share():
    assert label_files.group_folds(100, 0.15) == 7
    assert label_files.group_folds(100, 0.5) == 2
    assert label_files.group_folds(3, 0.1) == 3  # never more folds than groups


def test_demo_labels_is_digits_lt_in_three_views_split_by_scan(roots, run):
    code, out, err = run("0_data_split", "--demo-labels", "--source-root", roots.source, "--data-root", roots.data)
    assert code == 0, err
    labels = pd.read_csv(roots.source / "digits-labels" / "labels.csv", dtype=str)
    assert list(labels.columns) == ["path", "label", "scan"]
    assert labels.groupby("label").size().tolist() == [3 * n for n in demo_data.long_tail_counts()]
    table = split_of(roots.data, "digits-labels")
    assert len(table) == len(labels) and (table.groupby("group").size() == 3).all()
    assert table.groupby("group")["split"].nunique().max() == 1
