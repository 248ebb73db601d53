"""The CXR14 index: label table, image discovery, joins and the patient split."""

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrnb.data import index as data_index
from cxrnb.data.index import (
    data_source,
    find_label_table,
    label_matrix,
    load_index,
    locate_images,
    read_labels,
    resolve_root,
    split_by_patient,
)
from cxrnb.errors import CxrnbError
from cxrnb.labels import LABELS

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
          "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
ROWS = [  # image, labels, follow-up, patient, view
    ("00000001_000.png", "Cardiomegaly", 0, 1, "PA"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, 1, "PA"),
    ("00000002_000.png", "No Finding", 0, 2, "AP"),
    ("00000003_000.png", "Hernia|Mass|Effusion", 0, 3, "PA"),
    ("00000004_000.png", "No Finding", 0, 4, "AP"),
]


def write_table(path, rows=ROWS):
    lines = [HEADER] + [f"{im},{lab},{fu},{pid},50,F,{view},2048,2500,0.143,0.143"
                        for im, lab, fu, pid, view in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


@pytest.fixture
def nested_root(tmp_path):
    """The official archive layout: images_001/images/, images_002/images/ (one image absent)."""
    write_table(tmp_path / "Data_Entry_2017.csv")
    for i, (name, *_) in enumerate(ROWS[:4]):
        write_png(tmp_path / f"images_00{1 + i // 2}" / "images" / name, value=i)
    return tmp_path


# ---------------------------------------------------------------- label table

@pytest.fixture(scope="module")
def full_table():
    return read_labels()


def test_packaged_table_is_complete(full_table):
    assert len(full_table) == 112_120
    assert full_table["image"].is_unique
    assert full_table["patient"].nunique() == 30_805          # Wang et al. (2017)
    assert set(full_table["view"]) == {"PA", "AP"}
    assert list(full_table.columns[:7]) == ["image", "labels", "follow_up", "patient", "age",
                                           "sex", "view"]
    assert all(full_table[name].dtype == np.uint8 for name in LABELS)


def test_label_columns_agree_with_the_raw_strings(full_table):
    """Independent recount: a regex over the untouched "Finding Labels" column of the file."""
    raw = pd.read_csv(data_index.packaged_table(), usecols=["Finding Labels"])["Finding Labels"]
    for name in LABELS:
        expected = raw.str.contains(rf"(?:^|\|){name}(?:\||$)", regex=True).sum()
        assert full_table[name].sum() == expected, name
    # "No Finding" is exclusive and every image has at least one label
    hot = label_matrix(full_table)
    assert (hot[:, -1] * hot[:, :-1].sum(1)).sum() == 0
    assert hot.sum(1).min() == 1


def test_read_labels_of_a_given_table(tmp_path):
    df = read_labels(write_table(tmp_path / "t.csv"))
    assert list(df["image"]) == [r[0] for r in ROWS]
    assert df.loc[3, ["Hernia", "Mass", "Effusion"]].tolist() == [1, 1, 1]
    assert df.loc[3, list(LABELS)].sum() == 3
    assert df.loc[2, "No Finding"] == 1 and df.loc[2, list(LABELS)].sum() == 1


def test_read_labels_gzipped(tmp_path):
    plain = write_table(tmp_path / "t.csv")
    gz = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    pd.testing.assert_frame_equal(read_labels(gz), read_labels(plain))
    assert find_label_table(tmp_path) == gz


def test_unknown_label_is_named(tmp_path):
    rows = ROWS + [("00000009_000.png", "Pneumonia|COVID-19", 0, 9, "PA")]
    with pytest.raises(CxrnbError, match="COVID-19"):
        read_labels(write_table(tmp_path / "t.csv", rows))


def test_missing_or_wrong_table(tmp_path):
    with pytest.raises(CxrnbError, match="does not exist"):
        read_labels(tmp_path / "nope.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CxrnbError, match="lacks the CXR14 columns"):
        read_labels(tmp_path / "other.csv")
    with pytest.raises(CxrnbError, match="no Data_Entry_2017.csv"):
        find_label_table(tmp_path)


# ---------------------------------------------------------------- images and the join

def test_locate_images_flat_and_nested(nested_root):
    write_png(nested_root / "images" / "extra.png")
    (nested_root / "images" / "notes.txt").write_text("not an image")
    found = locate_images(nested_root)
    assert sorted(found) == sorted([r[0] for r in ROWS[:4]] + ["extra.png"])
    assert found["00000003_000.png"] == nested_root / "images_002" / "images" / "00000003_000.png"
    assert all(p.is_file() for p in found.values())


def test_load_index_skips_absent_images_with_a_count(nested_root):
    with pytest.warns(UserWarning, match="1 of 5 images"):
        df = load_index(nested_root)
    assert list(df["image"]) == [r[0] for r in ROWS[:4]]
    for name, path in zip(df["image"], df["path"]):
        assert path.name == name and np.asarray(Image.open(path)).shape == (8, 8)
    assert df.index.tolist() == [0, 1, 2, 3]


def test_load_index_error_on_absent_images(nested_root):
    with pytest.raises(CxrnbError, match="1 of 5 images.*absent"):
        load_index(nested_root, on_missing="error")
    with pytest.raises(CxrnbError, match="on_missing"):
        load_index(nested_root, on_missing="ignore")


def test_load_index_with_an_explicit_table(nested_root, tmp_path_factory):
    csv = write_table(tmp_path_factory.mktemp("t") / "sub.csv", ROWS[:2])
    df = load_index(nested_root, csv=csv)
    assert list(df["image"]) == [r[0] for r in ROWS[:2]]


def test_load_index_without_images_or_folder(tmp_path):
    write_table(tmp_path / "Data_Entry_2017.csv")
    with pytest.raises(CxrnbError, match="no images in"):
        load_index(tmp_path)
    with pytest.raises(CxrnbError, match="CXR14_ROOT"):
        load_index(tmp_path / "absent")
    write_png(tmp_path / "images" / "stranger.png")
    with pytest.raises(CxrnbError, match="none of the images"):
        with pytest.warns(UserWarning):
            load_index(tmp_path)


def test_resolve_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CXR14_ROOT", raising=False)
    with pytest.raises(CxrnbError, match="CXR14_ROOT or pass --root"):
        resolve_root(None)
    monkeypatch.setenv("CXR14_ROOT", str(tmp_path))
    assert resolve_root(None) == tmp_path
    assert resolve_root(str(tmp_path)) == tmp_path


def test_resolve_root_phantom_writes_it_once(tmp_path, monkeypatch):
    calls = []

    def write_phantom(path, n, size, seed):
        calls.append((path, n, size, seed))
        path.mkdir(parents=True)
        (path / "PHANTOM").write_text("synthetic")
        return path

    monkeypatch.setattr(data_index, "in_repo", lambda p: tmp_path / p)
    monkeypatch.setattr(data_index, "write_phantom", write_phantom)
    first, second = resolve_root("phantom"), resolve_root("phantom")
    assert first == second == tmp_path / "data" / "phantom"
    assert calls == [(tmp_path / "data" / "phantom", 512, 256, 0)]
    assert data_source(first) == "synthetic phantom"


# ---------------------------------------------------------------- split, labels

def test_split_is_patient_level_and_near_the_fractions(full_table):
    df = split_by_patient(full_table, seed=0)
    assert df["patient"].groupby(df["split"]).nunique().sum() == full_table["patient"].nunique()
    assert (df.groupby("patient")["split"].nunique() == 1).all()
    shares = df["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.005)
    assert shares["val"] == pytest.approx(0.1, abs=0.005)
    assert shares["test"] == pytest.approx(0.1, abs=0.005)
    pd.testing.assert_frame_equal(df, split_by_patient(full_table, seed=0))
    assert (split_by_patient(full_table, seed=1)["split"] != df["split"]).mean() > 0.1


@pytest.mark.parametrize("seed", range(8))
def test_split_property_on_random_tables(seed):
    """Every patient in exactly one split; each split within one patient's images of its share;
    the split does not depend on the row order."""
    rng = np.random.default_rng(seed)
    per_patient = rng.integers(1, 30, rng.integers(20, 200))
    df = pd.DataFrame({"patient": np.repeat(np.arange(len(per_patient)) * 7 + 3, per_patient)})
    fractions = tuple(rng.dirichlet([2, 1, 1]))
    out = split_by_patient(df, fractions, seed=seed)
    assert (out.groupby("patient")["split"].nunique() == 1).all()
    counts = out["split"].value_counts().reindex(["train", "val", "test"], fill_value=0)
    assert np.all(np.abs(counts.to_numpy() - np.array(fractions) * len(df)) <= per_patient.max())
    shuffled = out.sample(frac=1, random_state=seed)
    again = split_by_patient(shuffled.drop(columns="split"), fractions, seed=seed)
    pd.testing.assert_series_equal(again["split"], shuffled["split"])


def test_split_rejects_bad_fractions(full_table):
    for bad in [(0.8, 0.1), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)]:
        with pytest.raises(CxrnbError, match="fractions"):
            split_by_patient(full_table.head(10), bad)


def test_label_matrix(tmp_path):
    df = read_labels(write_table(tmp_path / "t.csv"))
    y = label_matrix(df)
    assert y.dtype == np.float32 and y.shape == (len(ROWS), 15)
    for row, (_, labels, *_) in zip(y, ROWS):
        assert {LABELS[i] for i in np.flatnonzero(row)} == set(labels.split("|"))


def test_data_source(nested_root):
    assert data_source(nested_root) == "real CXR14 subset"
    assert data_source(nested_root, n_images=112_120) == "full CXR14"
    (nested_root / "PHANTOM").write_text("")
    assert data_source(nested_root) == "synthetic phantom"


# ---------------------------------------------------------------- the real subset

@pytest.mark.real
def test_real_subset_index(real_root):
    df = load_index(real_root)
    if len(df) != 1_657:
        pytest.skip(f"CXR14_ROOT holds {len(df):,} images, not the 1,657-image subset")
    assert df["patient"].nunique() == 1_304
    # label counts stated in shared/data/README.md
    readme = {"No Finding": 637, "Pneumonia": 516, "Infiltration": 310, "Atelectasis": 199,
              "Effusion": 174, "Edema": 113, "Consolidation": 113, "Nodule": 111,
              "Pleural_Thickening": 96, "Mass": 91, "Cardiomegaly": 73, "Fibrosis": 64,
              "Pneumothorax": 59, "Emphysema": 51, "Hernia": 23}
    assert df[list(LABELS)].sum().to_dict() == readme
    assert data_source(real_root) == "real CXR14 subset"
    # the subset's rows are the official rows of those images
    full = read_labels().set_index("image").loc[df["image"]]
    np.testing.assert_array_equal(label_matrix(full), label_matrix(df))
    np.testing.assert_array_equal(full["patient"].to_numpy(), df["patient"].to_numpy())


# ---------------------------------------------------------------- inputs that used to be read wrong

def test_any_image_format_and_extension_case_is_found(tmp_path):
    rows = [("a.jpg", "No Finding", 0, 1, "PA"), ("b.png", "Mass", 0, 2, "PA"),
            ("c.jfif", "Effusion", 0, 3, "AP"), ("d.JPEG", "No Finding", 0, 4, "PA")]
    write_table(tmp_path / "Data_Entry_2017.csv", rows)
    (tmp_path / "images").mkdir()
    for name, fmt in (("a.jpg", "JPEG"), ("B.PNG", "PNG"), ("c.jfif", "JPEG"), ("d.jpeg", "JPEG")):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "images" / name, format=fmt)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    df = load_index(tmp_path)
    assert list(df.image) == ["a.jpg", "b.png", "c.jfif", "d.JPEG"]
    assert [p.name for p in df.path] == ["a.jpg", "B.PNG", "c.jfif", "d.jpeg"]


def test_the_absent_images_warning_names_some_of_them(nested_root):
    with pytest.warns(UserWarning, match=r"1 of 5 images .* absent .* \(e\.g\. 00000004_000\.png\)"):
        load_index(nested_root)


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows + [rows[1]], r"lists 1 image\(s\) more than once: 00000001_001.png \(row 3\), "
                                    r"00000001_001.png \(row 7\)"),
    (lambda rows: [rows[0], (rows[1][0], "", *rows[1][2:])] + rows[2:],
     r"1 empty Finding Labels cell\(s\): 00000001_001.png \(row 3\)"),
])
def test_label_table_problems_are_errors_naming_the_rows(tmp_path, edit, message):
    with pytest.raises(CxrnbError, match=message):
        read_labels(write_table(tmp_path / "t.csv", edit(list(ROWS))))


def test_ages_in_the_2017_form_are_years(tmp_path):
    path = write_table(tmp_path / "t.csv")
    text = path.read_text().splitlines()
    ages = ["057Y", "010M", "020D", " 45 ", "3Y"]
    text[1:] = [line.replace(",50,", f",{age},") for line, age in zip(text[1:], ages)]
    path.write_text("\n".join(text) + "\n")
    np.testing.assert_allclose(read_labels(path).age, [57, 10 / 12, 20 / 365.25, 45, 3])
    text[1] = text[1].replace(",057Y,", ",old,")
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(CxrnbError, match=r"Patient Age not understood at row 2 \('old'\)"):
        read_labels(path)


def test_excel_encoded_and_empty_tables(tmp_path):
    path = write_table(tmp_path / "t.csv")
    latin = path.read_text().replace("F,PA", "Fé,PA", 1)          # an accented cell, as Excel writes it
    path.write_bytes(latin.encode("cp1252"))
    with pytest.warns(UserWarning, match="not UTF-8; read it as Windows-1252"):
        assert len(read_labels(path)) == len(ROWS)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(CxrnbError, match="empty.csv is empty"):
        read_labels(tmp_path / "empty.csv")


def test_other_images_are_not_called_cxr14(tmp_path):
    write_table(tmp_path / "Data_Entry_2017.csv", [("chest1.jpg", "No Finding", 0, 1, "PA")])
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "chest1.jpg")
    assert data_source(tmp_path) == f"images from {tmp_path.name}"
    from cxrnb.provenance import Provenance
    assert Provenance(data_source(tmp_path), 1, 8).line().startswith(f"data: images from {tmp_path.name}")
    with pytest.raises(ValueError, match="unknown data source"):
        Provenance("some data", 1, 8)


def test_an_empty_cxr14_root_is_an_error_not_the_working_directory(monkeypatch):
    monkeypatch.setenv("CXR14_ROOT", "")
    with pytest.raises(CxrnbError, match="CXR14_ROOT is set but empty"):
        resolve_root(None)
    monkeypatch.setenv("CXR14_ROOT", "  ")
    with pytest.raises(CxrnbError, match="CXR14_ROOT is set but empty"):
        load_index()
    with pytest.raises(CxrnbError, match="the CXR14 folder given is an empty string"):
        resolve_root("")


def test_unknown_and_miscased_labels_name_their_rows_and_images(tmp_path):
    rows = ROWS + [("00000009_000.png", "pneumonia|Mass", 0, 9, "PA"),
                   ("00000010_000.png", "COVID-19", 0, 10, "PA"),
                   ("00000011_000.png", "Pleural Thickening", 0, 11, "PA"),
                   ("00000012_000.png", "pneumonia", 0, 12, "PA")]
    with pytest.raises(CxrnbError) as err:
        read_labels(write_table(tmp_path / "t.csv", rows))
    message = str(err.value)
    assert ("labels outside the CXR14 vocabulary: 'pneumonia' at row 7 (00000009_000.png), meant 'Pneumonia'?; "
            "'COVID-19' at row 8 (00000010_000.png); 'Pleural Thickening' at row 9 (00000011_000.png), meant "
            "'Pleural_Thickening'? and 1 more row(s)") in message
    assert "t.csv" in message and "\n" not in message
