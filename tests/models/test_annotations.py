"""Tests for models.annotations: VOC, YOLO and CSV boxes, lookup by image, and rejected files.

Every annotation file and image is written into tmp_path by the test that reads it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from models.annotations import AnnotationError, boxes_for_images, read_box_csv, read_voc, read_yolo


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _voc(objects: str, size: str = "", filename: str = "scan.png") -> str:
    return f"<annotation><filename>{filename}</filename>{size}{objects}</annotation>"


def _voc_object(xmin, ymin, xmax, ymax) -> str:
    return (
        "<object><name>item</name><bndbox>"
        f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
        "</bndbox></object>"
    )


def _voc_size(width, height) -> str:
    return f"<size><width>{width}</width><height>{height}</height><depth>1</depth></size>"


def _png(path: Path, width: int, height: int) -> Path:
    Image.new("L", (width, height)).save(path)
    return path


# VOC


def test_voc_one_based_inclusive_conversion(tmp_path):
    path = _write(tmp_path / "scan.xml", _voc(_voc_object(1, 5, 10, 20)))

    filename, boxes = read_voc(path)

    assert filename == "scan.png"
    # xmin=1 is the first column and xmax=10 the last one covered, so 10 columns: 0..9.
    assert boxes == [(0, 4, 10, 20)]


def test_voc_float_coordinates_rounded(tmp_path):
    path = _write(tmp_path / "scan.xml", _voc(_voc_object("12.0", "3.4", "40.6", "50.0")))

    _, boxes = read_voc(path)

    assert boxes == [(11, 2, 41, 50)]


def test_voc_clipped_to_size(tmp_path):
    path = _write(tmp_path / "scan.xml", _voc(_voc_object(-3, 0, 120, 90), size=_voc_size(100, 80)))

    _, boxes = read_voc(path)

    assert boxes == [(0, 0, 100, 80)]


def test_voc_zero_size_means_unknown(tmp_path):
    path = _write(tmp_path / "scan.xml", _voc(_voc_object(1, 1, 120, 90), size=_voc_size(0, 0)))

    _, boxes = read_voc(path)

    assert boxes == [(0, 0, 120, 90)]


def test_voc_several_objects(tmp_path):
    objects = _voc_object(1, 1, 10, 10) + _voc_object(21, 31, 40, 50) + _voc_object(5, 6, 7, 8)
    path = _write(tmp_path / "scan.xml", _voc(objects, size=_voc_size(64, 64)))

    _, boxes = read_voc(path)

    assert boxes == [(0, 0, 10, 10), (20, 30, 40, 50), (4, 5, 7, 8)]


def test_voc_without_objects_or_filename(tmp_path):
    path = _write(tmp_path / "scan.xml", "<annotation><size><width>5</width></size></annotation>")

    filename, boxes = read_voc(path)

    assert filename is None
    assert boxes == []


# YOLO


def test_yolo_conversion(tmp_path):
    path = _write(tmp_path / "scan.txt", "0 0.5 0.25 0.2 0.1\n")

    boxes = read_yolo(path, 200, 100)

    # x: (0.5 -/+ 0.1) * 200 = 80, 120. y: (0.25 -/+ 0.05) * 100 = 20, 30.
    assert boxes == [(80, 20, 120, 30)]


def test_yolo_clipped_to_image(tmp_path):
    path = _write(tmp_path / "scan.txt", "0 0.05 0.95 0.2 0.2\n")

    boxes = read_yolo(path, 100, 100)

    # Unclipped, the box would be (-5, 85, 15, 105).
    assert boxes == [(0, 85, 15, 100)]


def test_yolo_blank_lines_ignored(tmp_path):
    path = _write(tmp_path / "scan.txt", "\n0 0.5 0.5 0.5 0.5\n   \n1 0.25 0.25 0.1 0.1\n\n")

    boxes = read_yolo(path, 40, 40)

    assert boxes == [(10, 10, 30, 30), (8, 8, 12, 12)]


def test_yolo_tolerance_at_edge(tmp_path):
    path = _write(tmp_path / "scan.txt", "0 0.5 0.5 1.0000005 1\n")

    boxes = read_yolo(path, 10, 10)

    assert boxes == [(0, 0, 10, 10)]


def test_yolo_byte_order_mark(tmp_path):
    path = tmp_path / "scan.txt"
    path.write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.5 0.5\n")

    boxes = read_yolo(path, 40, 40)

    assert boxes == [(10, 10, 30, 30)]


# CSV


def test_csv_x0_style_columns(tmp_path):
    path = _write(tmp_path / "boxes.csv", "image,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,5,6,7.6,8\n")

    boxes = read_box_csv(path)

    assert boxes == {"a.png": [(1, 2, 3, 4)], "b.png": [(5, 6, 8, 8)]}


def test_csv_xmin_style_columns(tmp_path):
    text = "Label,FileName,XMin,YMin,XMax,YMax\nknife,a.png,10,20,30,40\n"
    path = _write(tmp_path / "boxes.csv", text)

    boxes = read_box_csv(path)

    assert boxes == {"a.png": [(10, 20, 30, 40)]}


def test_csv_several_rows_per_image(tmp_path):
    text = "path,xmin,ymin,xmax,ymax\na.png,0,0,5,5\nb.png,1,1,2,2\n\na.png,10,10,20,20\n"
    path = _write(tmp_path / "boxes.csv", text)

    boxes = read_box_csv(path)

    assert boxes["a.png"] == [(0, 0, 5, 5), (10, 10, 20, 20)]
    assert boxes["b.png"] == [(1, 1, 2, 2)]


def test_csv_byte_order_mark(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_bytes(b"\xef\xbb\xbfimage,x0,y0,x1,y1\na.png,1,2,3,4\n")

    boxes = read_box_csv(path)

    assert boxes == {"a.png": [(1, 2, 3, 4)]}


# boxes_for_images


def test_folder_voc_and_yolo(tmp_path):
    images = tmp_path / "images"
    labels = tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    voc_image = _png(images / "first.png", 64, 32)
    yolo_image = _png(images / "second.png", 200, 100)
    unlabelled = _png(images / "third.png", 16, 16)
    _write(labels / "first.xml", _voc(_voc_object(1, 1, 8, 4)))
    _write(labels / "second.txt", "0 0.5 0.25 0.2 0.1\n")

    found = boxes_for_images([voc_image, yolo_image, unlabelled], labels)

    assert found[str(voc_image)] == [(0, 0, 8, 4)]
    assert found[str(yolo_image)] == [(80, 20, 120, 30)]
    assert str(unlabelled) not in found


def test_folder_prefers_voc_over_yolo(tmp_path):
    image = _png(tmp_path / "scan.png", 100, 100)
    _write(tmp_path / "scan.xml", _voc(_voc_object(1, 1, 10, 10)))
    _write(tmp_path / "scan.txt", "0 0.5 0.5 0.5 0.5\n")

    found = boxes_for_images([image], tmp_path)

    assert found == {str(image): [(0, 0, 10, 10)]}


def test_folder_empty_annotation_kept(tmp_path):
    image = _png(tmp_path / "scan.png", 10, 10)
    _write(tmp_path / "scan.txt", "")

    found = boxes_for_images([image], tmp_path)

    assert found == {str(image): []}


def test_csv_match_by_name_and_path(tmp_path):
    by_name = tmp_path / "a" / "first.png"
    by_path = tmp_path / "b" / "second.png"
    unlabelled = tmp_path / "c" / "third.png"
    text = f"image,x0,y0,x1,y1\nfirst.png,1,2,3,4\n{by_path},5,6,7,8\nother.png,0,0,1,1\n"
    csv_path = _write(tmp_path / "boxes.csv", text)

    found = boxes_for_images([str(by_name), by_path, unlabelled], csv_path)

    assert found[str(by_name)] == [(1, 2, 3, 4)]
    assert found[str(by_path)] == [(5, 6, 7, 8)]
    assert str(unlabelled) not in found
    assert len(found) == 2


def test_csv_full_path_wins_over_name(tmp_path):
    image = tmp_path / "scan.png"
    text = f"image,x0,y0,x1,y1\nscan.png,1,1,2,2\n{image},5,5,9,9\n"
    csv_path = _write(tmp_path / "boxes.csv", text)

    found = boxes_for_images([image], csv_path)

    assert found == {str(image): [(5, 5, 9, 9)]}


def test_csv_ambiguous_name_rejected(tmp_path):
    first = tmp_path / "a" / "scan.png"
    second = tmp_path / "b" / "scan.png"
    csv_path = _write(tmp_path / "boxes.csv", "image,x0,y0,x1,y1\nscan.png,1,1,2,2\n")

    with pytest.raises(AnnotationError) as caught:
        boxes_for_images([first, second], csv_path)

    assert str(csv_path) in str(caught.value)
    assert "scan.png" in str(caught.value)


def test_missing_annotations_path_rejected(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(AnnotationError) as caught:
        boxes_for_images([tmp_path / "scan.png"], missing)

    assert str(missing) in str(caught.value)


def test_unreadable_image_for_yolo(tmp_path):
    image = _write(tmp_path / "scan.png", "not a PNG")
    annotation = _write(tmp_path / "scan.txt", "0 0.5 0.5 0.5 0.5\n")

    with pytest.raises(AnnotationError) as caught:
        boxes_for_images([image], tmp_path)

    assert str(annotation) in str(caught.value)
    assert str(image) in str(caught.value)


# Rejected files


def _rejection(call) -> str:
    with pytest.raises(AnnotationError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("absent.xml", read_voc),
        ("absent.txt", lambda path: read_yolo(path, 10, 10)),
        ("absent.csv", read_box_csv),
    ],
    ids=["voc", "yolo", "csv"],
)
def test_missing_file_rejected(tmp_path, name, read):
    path = tmp_path / name

    message = _rejection(lambda: read(path))

    assert str(path) in message
    assert "not found" in message


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("<annotation><object></annotation>", ["malformed XML"]),
        (_voc(_voc_object(1, 1, 5, 5) + "<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"),
         ["object 2", "<ymax>"]),
        (_voc("<object><name>item</name></object>"), ["object 1", "<bndbox>"]),
        (_voc(_voc_object(1, 1, "ten", 5)), ["'ten'"]),
        (_voc(_voc_object(1, 1, 5, 5), size=_voc_size("wide", 10)), ["<width>"]),
        (_voc(_voc_object(1, 1, 5, 5) + _voc_object(10, 1, 8, 5)), ["object 2", "empty or inverted"]),
        (_voc(_voc_object(50, 1, 60, 5), size=_voc_size(40, 40)), ["empty or inverted"]),
    ],
    ids=["malformed xml", "missing coordinate", "missing bndbox", "non-numeric coordinate", "non-numeric size",
         "empty box", "box outside size"],
)
def test_voc_invalid_rejected(tmp_path, content, fragments):
    path = _write(tmp_path / "scan.xml", content)

    message = _rejection(lambda: read_voc(path))

    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2\n", ["line 3", "expected 5 fields"]),
        ("0 0.5 half 0.2 0.2\n", ["line 1", "'half'"]),
        ("knife 0.5 0.5 0.2 0.2\n", ["'knife'"]),
        ("0 1.1 0.5 0.2 0.2\n", ["line 1"]),
        ("0 0.5 -0.01 0.2 0.2\n", ["line 1"]),
        ("0 0.5 0.5 1.00001 0.2\n", ["line 1"]),
        ("0 0.5 0.5 0.2 nan\n", ["line 1"]),
        ("0 0.5 0.5 0 0.2\n", ["empty or inverted"]),
    ],
    ids=["wrong field count", "non-numeric value", "non-integer class", "x above 1", "y below 0", "width above 1",
         "height nan", "empty box"],
)
def test_yolo_invalid_rejected(tmp_path, content, fragments):
    path = _write(tmp_path / "scan.txt", content)

    message = _rejection(lambda: read_yolo(path, 10, 10))

    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_yolo_invalid_image_size(tmp_path):
    path = _write(tmp_path / "scan.txt", "0 0.5 0.5 0.2 0.2\n")

    with pytest.raises(ValueError) as caught:
        read_yolo(path, 0, 10)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("name,x0,y0,x1\na.png,1,2,3\n", ["image or filename or path", "y1 or ymax"]),
        ("", ["header"]),
        ("image,x0,y0,x1,y1\na.png,1,2,3,4\nb.png,1,two,3,4\n", ["line 3", "'two'"]),
        ("image,xmin,ymin,xmax,ymax\na.png,1,,3,4\n", ["missing ymin"]),
        ("image,x0,y0,x1,y1\na.png,1,2\n", ["line 2"]),
        ("image,x0,y0,x1,y1\na.png,5,2,5,4\n", ["line 2", "empty or inverted"]),
    ],
    ids=["missing columns", "empty file", "non-numeric value", "missing value", "short row", "empty box"],
)
def test_csv_invalid_rejected(tmp_path, content, fragments):
    path = _write(tmp_path / "boxes.csv", content)

    message = _rejection(lambda: read_box_csv(path))

    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
