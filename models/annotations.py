"""Read item bounding boxes from Pascal VOC, YOLO and CSV annotation files.

Training and evaluation use these boxes to know where the item is in each labelled scan. A box
is ``(x0, y0, x1, y1)`` in scan pixels, 0-based with exclusive ends, so the item covers columns
``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``. Boxes are clipped to the image where its size is
known, and to 0 from below otherwise.
"""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, UnidentifiedImageError

Box = tuple[int, int, int, int]

# YOLO values may leave [0, 1] by this much, because labelling tools write floats with rounding error.
_YOLO_TOLERANCE = 1e-6

_CSV_IMAGE_COLUMNS = ("image", "filename", "path")
_CSV_COORDINATE_COLUMNS = {
    "x0": ("x0", "xmin"),
    "y0": ("y0", "ymin"),
    "x1": ("x1", "xmax"),
    "y1": ("y1", "ymax"),
}


class AnnotationError(ValueError):
    """An annotation file that cannot be read. The message names the file and the problem."""


def read_voc(path) -> tuple[str | None, list[Box]]:
    """Parse a Pascal VOC XML file into its ``<filename>`` value (or None) and its boxes.

    VOC coordinates are 1-based inclusive pixel indices, so ``xmin=1, xmax=10`` becomes
    ``x0=0, x1=10``. Float coordinates are rounded. A positive ``<size><width>`` or
    ``<height>`` clips the boxes. A file without ``<object>`` elements returns no boxes.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path}") from None
    except ET.ParseError as error:
        raise AnnotationError(f"{path}: malformed XML: {error}") from None
    except OSError as error:
        raise AnnotationError(f"{path}: failed to read the annotation file: {error}") from None

    filename = (root.findtext("filename") or "").strip() or None
    width = _voc_size(root, "width", path)
    height = _voc_size(root, "height", path)

    boxes = []
    for number, element in enumerate(root.findall("object"), start=1):
        where = f"{path}: object {number}"
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (
            _voc_coordinate(bndbox, name, where) for name in ("xmin", "ymin", "xmax", "ymax")
        )
        box = (xmin - 1, ymin - 1, xmax, ymax)
        boxes.append(_clip_and_check(box, width, height, where))
    return filename, boxes


def read_yolo(path, image_width: int, image_height: int) -> list[Box]:
    """Parse a YOLO txt file of ``class cx cy w h`` lines, normalised to [0, 1], into boxes.

    ``x0 = round((cx - w/2) * image_width)`` and ``x1 = round((cx + w/2) * image_width)``,
    clipped to ``[0, image_width]``, and likewise for y. The class must be an integer and is
    not returned. Blank lines are skipped, so an empty file returns no boxes.
    """
    path = Path(path)
    if image_width <= 0 or image_height <= 0:
        raise ValueError(
            f"{path}: invalid image size {image_width} x {image_height}, expected positive width and height"
        )
    text = _read_text(path)

    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {number}"
        if len(fields) != 5:
            raise AnnotationError(
                f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}: {line.strip()!r}"
            )
        try:
            int(fields[0])
        except ValueError:
            raise AnnotationError(f"{where}: class {fields[0]!r} is not an integer") from None

        cx, cy, w, h = (
            _parse_number(value, name, where) for name, value in zip(("cx", "cy", "w", "h"), fields[1:])
        )
        for name, value in (("cx", cx), ("cy", cy), ("w", w), ("h", h)):
            if not -_YOLO_TOLERANCE <= value <= 1 + _YOLO_TOLERANCE:
                raise AnnotationError(f"{where}: {name}={value} is outside [0, 1]")

        box = (
            round((cx - w / 2) * image_width),
            round((cy - h / 2) * image_height),
            round((cx + w / 2) * image_width),
            round((cy + h / 2) * image_height),
        )
        boxes.append(_clip_and_check(box, image_width, image_height, where))
    return boxes


def read_box_csv(path) -> dict[str, list[Box]]:
    """Parse a CSV of boxes into a map from image name to that image's boxes.

    The header needs an image column (``image``, ``filename`` or ``path``) and the columns
    ``x0, y0, x1, y1`` or ``xmin, ymin, xmax, ymax``, in any case and order. Both spellings
    mean 0-based pixels with exclusive ends. Several rows may name the same image, other
    columns are ignored, and empty rows are skipped. Float coordinates are rounded.
    """
    path = Path(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise AnnotationError(f"{path}: empty CSV file, expected a header row")

    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        columns.setdefault(name.strip().lower(), index)
    image_column = next((columns[name] for name in _CSV_IMAGE_COLUMNS if name in columns), None)
    coordinate_columns = {}
    missing = []
    for coordinate, aliases in _CSV_COORDINATE_COLUMNS.items():
        index = next((columns[name] for name in aliases if name in columns), None)
        if index is None:
            missing.append(" or ".join(aliases))
        coordinate_columns[coordinate] = index
    if image_column is None:
        missing.insert(0, " or ".join(_CSV_IMAGE_COLUMNS))
    if missing:
        raise AnnotationError(f"{path}: CSV header {header} is missing columns {', '.join(missing)}")

    boxes: dict[str, list[Box]] = {}
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        where = f"{path}: line {reader.line_num}"
        if len(row) < len(header):
            raise AnnotationError(f"{where}: expected {len(header)} fields, got {len(row)}")
        image = row[image_column].strip()
        if not image:
            raise AnnotationError(f"{where}: missing image name")
        x0, y0, x1, y1 = (
            _parse_coordinate(row[index], header[index].strip(), where) for index in coordinate_columns.values()
        )
        box = _clip_and_check((x0, y0, x1, y1), None, None, where)
        boxes.setdefault(image, []).append(box)
    return boxes


def boxes_for_images(image_paths, annotations) -> dict[str, list[Box]]:
    """Look up the boxes of each image in an annotation folder or CSV file, keyed by ``str(path)``.

    In a folder, the annotation of ``scan.png`` is ``scan.xml`` (VOC) or else ``scan.txt``
    (YOLO, scaled by the image's size). In a CSV, a row's image value matches an image's full
    path string first and its file name otherwise. Images without an annotation get no key,
    while an annotation without objects gives an empty list.
    """
    annotations = Path(annotations)
    image_paths = [Path(image_path) for image_path in image_paths]
    if annotations.is_dir():
        return _boxes_from_folder(image_paths, annotations)
    if annotations.is_file():
        return _boxes_from_csv(image_paths, annotations)
    raise AnnotationError(f"annotation folder or CSV file not found: {annotations}")


def _boxes_from_folder(image_paths: list[Path], folder: Path) -> dict[str, list[Box]]:
    found = {}
    for image_path in image_paths:
        voc_path = folder / f"{image_path.stem}.xml"
        yolo_path = folder / f"{image_path.stem}.txt"
        if voc_path.is_file():
            _, found[str(image_path)] = read_voc(voc_path)
        elif yolo_path.is_file():
            width, height = _image_size(image_path, yolo_path)
            found[str(image_path)] = read_yolo(yolo_path, width, height)
    return found


def _boxes_from_csv(image_paths: list[Path], csv_path: Path) -> dict[str, list[Box]]:
    rows = read_box_csv(csv_path)

    # A CSV row that gives only a file name would silently label every image of that name,
    # so a name shared by several of the images must be written as a full path.
    images_by_name: dict[str, list[Path]] = {}
    for image_path in image_paths:
        images_by_name.setdefault(image_path.name, []).append(image_path)

    found = {}
    for image_path in image_paths:
        if str(image_path) in rows:
            found[str(image_path)] = rows[str(image_path)]
        elif image_path.name in rows:
            same_name = images_by_name[image_path.name]
            if len(same_name) > 1:
                raise AnnotationError(
                    f"{csv_path}: image name {image_path.name!r} matches {len(same_name)} images "
                    f"({', '.join(str(p) for p in same_name)}). Write full paths in the CSV to tell them apart."
                )
            found[str(image_path)] = rows[image_path.name]
    return found


def _image_size(image_path: Path, annotation_path: Path) -> tuple[int, int]:
    # Image.open reads only the header, so this does not decode the pixels.
    # NOTE: the size is the stored one, before EXIF orientation. models.imaging.load_scan
    # applies the orientation, so YOLO boxes of a rotated file do not match its decoded pixels.
    try:
        with Image.open(image_path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as error:
        raise AnnotationError(
            f"{annotation_path}: failed to read the size of image {image_path} to scale the YOLO boxes: {error}"
        ) from None


def _read_text(path: Path) -> str:
    # utf-8-sig also reads plain UTF-8, and drops the byte order mark that spreadsheet
    # programs and some Windows editors write at the start of the file.
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(f"annotation file not found: {path}") from None
    except UnicodeDecodeError as error:
        raise AnnotationError(f"{path}: invalid UTF-8 text: {error}") from None
    except OSError as error:
        raise AnnotationError(f"{path}: failed to read the annotation file: {error}") from None


def _voc_size(root: ET.Element, name: str, path: Path) -> int | None:
    text = root.findtext(f"size/{name}")
    if text is None or not text.strip():
        return None
    size = _parse_coordinate(text, f"<size><{name}>", str(path))
    # Some labelling tools write 0 when they did not know the image size, so a size that is
    # not positive counts as unknown instead of clipping every box away.
    return size if size > 0 else None


def _voc_coordinate(bndbox: ET.Element, name: str, where: str) -> int:
    text = bndbox.findtext(name)
    if text is None:
        raise AnnotationError(f"{where}: missing <{name}> in <bndbox>")
    return _parse_coordinate(text, f"<{name}>", where)


def _parse_number(text: str, name: str, where: str) -> float:
    if not text.strip():
        raise AnnotationError(f"{where}: missing {name}")
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{where}: {name} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: {name} {text.strip()!r} is not a finite number")
    return value


def _parse_coordinate(text: str, name: str, where: str) -> int:
    return round(_parse_number(text, name, where))


def _clip_and_check(box: Box, width: int | None, height: int | None, where: str) -> Box:
    x0, y0, x1, y1 = box
    x_max = width if width is not None else math.inf
    y_max = height if height is not None else math.inf
    clipped = (
        int(min(max(x0, 0), x_max)),
        int(min(max(y0, 0), y_max)),
        int(min(max(x1, 0), x_max)),
        int(min(max(y1, 0), y_max)),
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise AnnotationError(
            f"{where}: box (x0, y0, x1, y1) = {clipped} is empty or inverted after conversion "
            "and clipping, expected x1 > x0 and y1 > y0"
        )
    return clipped
