"""Each layout adapter on a tiny copy of its published layout, and every structural bad input."""

import shutil

import numpy as np
import pytest

from chest_layouts import (box_mask, gradient, save, write_csv_dataset, write_jsrt, write_kermany,
                           write_montgomery, write_nih, write_shenzhen)
from mmdist.data.adapters import index_dataset
from mmdist.data.adapters.kermany import kermany_patient
from mmdist.data.imageset import NO_LABEL
from mmdist.data.records import DatasetError


def by_name(index):
    return {r.name: r for r in index.records}


# ------------------------------------------------------------------------------------- kermany

def test_kermany_labels_patients_and_splits(tmp_path):
    write_kermany(tmp_path)
    records = by_name(index_dataset("kermany", tmp_path))  # the parent of chest_xray/ also works
    assert len(records) == 9 and ".DS_Store" not in str(list(records))
    assert records["train/NORMAL/IM-0001-0001.jpeg"].label == 0
    assert records["test/PNEUMONIA/person7_virus_4.jpeg"].label == 1
    assert records["test/PNEUMONIA/person7_virus_4.jpeg"].patient == "person7"
    assert records["train/PNEUMONIA/person7_bacteria_1.jpeg"].patient == "person7"
    assert records["train/NORMAL/IM-0001-0001-0002.jpeg"].patient == "IM-0001-0001"
    only_test = index_dataset("kermany", tmp_path / "chest_xray", splits=["test"])
    assert len(only_test.records) == 3


def test_kermany_patient_names():
    assert kermany_patient("person1003_bacteria_2934") == "person1003"
    assert kermany_patient("NORMAL2-IM-1345-0001-0002") == "NORMAL2-IM-1345-0001"
    assert kermany_patient("IM-0115-0001") == "IM-0115-0001"
    assert kermany_patient("scan") == ""


def test_kermany_missing_class_folder_and_empty_class(tmp_path):
    base = write_kermany(tmp_path)
    for path in (base / "test" / "NORMAL").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match=r"test/NORMAL holds no images"):
        index_dataset("kermany", base)
    shutil.rmtree(base / "test" / "NORMAL")
    with pytest.raises(DatasetError, match=r"missing folder: .*test/NORMAL"):
        index_dataset("kermany", base)
    with pytest.raises(DatasetError, match="no train/, val/ or test/"):
        index_dataset("kermany", base / "train")
    with pytest.raises(DatasetError, match="unknown option"):
        index_dataset("kermany", base, views=["PA"])


def test_kermany_unknown_class_folder(tmp_path):
    base = write_kermany(tmp_path)
    save(base / "train" / "COVID19" / "x.jpeg", gradient(20, 20))
    with pytest.raises(DatasetError, match=r"unknown class folder .*train/COVID19"):
        index_dataset("kermany", base)


# ---------------------------------------------------------------------------------------- jsrt

def test_jsrt_pairs_left_and_right_scr_masks(tmp_path):
    write_jsrt(tmp_path)
    index = index_dataset("jsrt", tmp_path)
    assert [r.name for r in index.records] == ["All247images/JPCLN001.IMG",
                                                "All247images/JPCLN002.IMG"]
    first = index.records[0]
    assert len(first.masks) == 2 and "left lung" in first.masks[0] and "right lung" in first.masks[1]
    assert first.label == NO_LABEL and first.patient == "JPCLN001"


def test_jsrt_orphan_and_half_masks(tmp_path):
    write_jsrt(tmp_path)
    orphan = save(tmp_path / "scratch/fold1/masks/left lung/JPCLN099.gif", box_mask(8, 8, 0, 0, 1, 1))
    with pytest.raises(DatasetError, match=r"JPCLN099.gif cannot be matched to an image"):
        index_dataset("jsrt", tmp_path)
    orphan.unlink()
    next(tmp_path.rglob("right lung/JPCLN002.gif")).unlink()
    with pytest.raises(DatasetError, match=r"JPCLN002.IMG has a left lung mask but no right lung"):
        index_dataset("jsrt", tmp_path)
    shutil.rmtree(tmp_path / "scratch")
    with pytest.raises(DatasetError, match="no SCR 'left lung' and 'right lung'"):
        index_dataset("jsrt", tmp_path)
    assert len(index_dataset("jsrt", tmp_path, require_masks=False).records) == 2


# ------------------------------------------------------------------------ montgomery, shenzhen

def test_montgomery_and_its_missing_mask_folder(tmp_path):
    base = write_montgomery(tmp_path)
    records = index_dataset("montgomery", tmp_path).records
    assert [len(r.masks) for r in records] == [2, 2]
    assert "leftMask" in records[0].masks[0] and "rightMask" in records[0].masks[1]
    shutil.rmtree(base / "ManualMask" / "rightMask")
    with pytest.raises(DatasetError, match=r"missing folder: .*ManualMask/rightMask"):
        index_dataset("montgomery", base)


def test_montgomery_image_without_mask(tmp_path):
    base = write_montgomery(tmp_path)
    save(base / "CXR_png" / "MCUCXR_0003_1.png", gradient(20, 20))
    with pytest.raises(DatasetError, match="MCUCXR_0003_1.png has no mask"):
        index_dataset("montgomery", base)


def test_shenzhen_partial_masks_and_orphans(tmp_path):
    base = write_shenzhen(tmp_path)
    index = index_dataset("shenzhen", base)
    assert [bool(r.masks) for r in index.records] == [True, True, False]
    assert index.notes["images_without_mask"] == 1
    save(base / "mask" / "CHNCXR_0042_1_mask.png", box_mask(8, 8, 0, 0, 1, 1))
    with pytest.raises(DatasetError, match=r"CHNCXR_0042_1_mask.png cannot be matched"):
        index_dataset("shenzhen", base)
    shutil.rmtree(base / "mask")
    with pytest.raises(DatasetError, match="mask/ or masks/"):
        index_dataset("shenzhen", base)


# ----------------------------------------------------------------------------------------- nih

def test_nih_default_labels_keep_every_view_and_follow_up(tmp_path):
    write_nih(tmp_path)
    index = index_dataset("nih", tmp_path)
    labels = {r.name.split("/")[-1]: r.label for r in index.records}
    assert labels == {"00000001_000.png": NO_LABEL, "00000001_001.png": 1,
                      "00000002_000.png": 0, "00000003_000.png": 1, "00000003_001.png": 0,
                      "00000004_000.png": NO_LABEL}
    assert {r.patient for r in index.records} == {"1", "2", "3", "4"}
    assert index.records[4].name.startswith("images_002/images/")


def test_nih_filters(tmp_path):
    write_nih(tmp_path)
    names = lambda **kw: [r.name.split("/")[-1] for r in index_dataset("nih", tmp_path, **kw).records]
    assert names(others="drop") == ["00000001_001.png", "00000002_000.png", "00000003_000.png",
                                    "00000003_001.png"]
    assert names(views=["PA"], others="drop") == ["00000001_001.png", "00000002_000.png"]
    assert names(max_per_patient=1) == ["00000001_000.png", "00000002_000.png",
                                        "00000003_000.png", "00000004_000.png"]
    assert names(positive="Effusion", negative="Cardiomegaly", others="drop") == \
        ["00000001_000.png", "00000004_000.png"]


def test_nih_missing_image_unknown_finding_and_missing_folder(tmp_path):
    write_nih(tmp_path)
    next(tmp_path.rglob("00000002_000.png")).unlink()
    with pytest.raises(DatasetError, match=r"Data_Entry_2017.csv line 4: image 00000002_000.png"):
        index_dataset("nih", tmp_path)
    assert index_dataset("nih", tmp_path, missing="skip").notes["rows_without_image"] == 1
    text = (tmp_path / "Data_Entry_2017.csv").read_text().replace("Effusion|", "Covid|")
    (tmp_path / "Data_Entry_2017.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"line 7: unknown finding 'Covid'"):
        index_dataset("nih", tmp_path, missing="skip")
    with pytest.raises(DatasetError, match="not a ChestX-ray14 finding"):
        index_dataset("nih", tmp_path, positive="Pneumonitis")
    for folder in tmp_path.glob("images_*"):
        shutil.rmtree(folder)
    with pytest.raises(DatasetError, match=r"missing folder: .*images\*/"):
        index_dataset("nih", tmp_path)


# ------------------------------------------------------------------------------- csv, folder

def test_csv_manifest(tmp_path):
    write_csv_dataset(tmp_path)
    with pytest.warns(UserWarning, match=r"labels.csv has 2 of 6 rows with an empty 'patient' "
                                         r"cell: each such image is split as a patient of its own"):
        records = index_dataset("csv", tmp_path).records
    assert [r.label for r in records] == [0, 1, 1, NO_LABEL, 0, 1]
    assert [len(r.masks) for r in records] == [2, 2, 2, 0, 0, 0]
    assert [r.patient for r in records] == ["p0", "p0", "p1", "p1", "", ""]
    assert records[0].source == tmp_path.name
    with pytest.warns(UserWarning, match="2 of 6 rows"):
        assert len(index_dataset("csv", tmp_path / "labels.csv").records) == 6


def test_csv_warns_only_when_patients_are_missing(tmp_path):
    """Every patient cell filled: no warning; no patient column: a warning saying so."""
    import csv
    import warnings

    write_csv_dataset(tmp_path)
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    for i, row in enumerate(rows):
        row["patient"] = row["patient"] or f"q{i}"
    write_csv_dataset(tmp_path, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(index_dataset("csv", tmp_path).records) == 6
    write_csv_dataset(tmp_path, [{k: v for k, v in row.items() if k != "patient"} for row in rows])
    with pytest.warns(UserWarning, match=r"labels.csv has no 'patient' column \(6 images\)"):
        index_dataset("csv", tmp_path)


@pytest.mark.parametrize("edit,message", [
    (lambda rows: rows[2].update(image="images/gone.png"), r"line 4: image images/gone.png not found"),
    (lambda rows: rows[1].update(label="covid"), r"line 3: unknown label 'covid'"),
    (lambda rows: rows[0].update(right_mask=""), r"line 2: a left_mask needs its right_mask"),
    (lambda rows: rows[0].update(left_mask="masks/none.png"), r"line 2: left_mask masks/none.png not found"),
    (lambda rows: rows[5].update(image=rows[0]["image"]), r"line 7: image images/im0.png is already listed on line 2"),
])
def test_csv_bad_rows_are_named(tmp_path, edit, message):
    write_csv_dataset(tmp_path)
    import csv

    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    edit(rows)
    write_csv_dataset(tmp_path, rows)
    with pytest.raises(DatasetError, match=message):
        index_dataset("csv", tmp_path)


def test_csv_missing_columns_and_file(tmp_path):
    with pytest.raises(DatasetError, match="labels.csv not found"):
        index_dataset("csv", tmp_path)
    (tmp_path / "labels.csv").write_text("path,label\na.png,0\n")
    with pytest.raises(DatasetError, match="no 'image' column"):
        index_dataset("csv", tmp_path)


def test_folder_pool_and_empty_folder(tmp_path):
    save(tmp_path / "a" / "x.png", gradient(10, 10))
    save(tmp_path / "b" / "y.jpg", gradient(10, 10))
    (tmp_path / "notes.txt").write_text("not an image")
    records = index_dataset("folder", tmp_path).records
    assert [r.name for r in records] == ["a/x.png", "b/y.jpg"]
    assert all(r.label == NO_LABEL and r.patient == "" for r in records)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        index_dataset("folder", tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        index_dataset("folder", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        index_dataset("mimic", tmp_path)
