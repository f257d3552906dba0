"""Families of near-duplicates, split assignment and manifests, on images made here."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.evaluation import draw_pairs
from models.families import FamilyRules, augmentation_stem, find_families, image_signature
from models.splits import (
    ManifestEntry,
    ManifestError,
    assign_splits,
    parse_fractions,
    read_manifest,
    select_split,
    split_paths,
    write_manifest,
)


def _texture(seed: int, size: tuple[int, int] = (120, 90)) -> np.ndarray:
    # Smooth random blobs on white, like bags on a conveyor: each seed gives an unrelated image.
    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width]
    image = np.full((height, width), 230.0)
    for _ in range(12):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 15)
        image -= rng.uniform(40, 150) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    """An original, its mirror, a noisy copy, a renamed flip and three unrelated images."""
    original = _texture(1)
    noise = np.random.default_rng(9).normal(0, 4, original.shape)
    return {
        "original": _save(tmp_path, "bag1.png", original),
        "mirror": _save(tmp_path, "other_name.png", original[:, ::-1].copy()),
        "noisy": _save(tmp_path, "bag1_noisy.png", np.clip(original + noise, 0, 255).astype(np.uint8)),
        "stem": _save(tmp_path, "bag7_flip.png", _texture(7)),
        "stem_source": _save(tmp_path, "bag7.png", _texture(8)),
        "unrelated_a": _save(tmp_path, "bag2.png", _texture(2)),
        "unrelated_b": _save(tmp_path, "bag3.png", _texture(3)),
    }


def _families(images: dict[str, Path], rules: FamilyRules = FamilyRules()) -> dict[str, int]:
    names = list(images)
    numbers = find_families([image_signature(images[name]) for name in names], rules)
    return dict(zip(names, numbers))


def test_mirror_joins_family(images):
    families = _families(images)
    assert families["mirror"] == families["original"]


def test_noisy_copy_joins_family(images):
    families = _families(images)
    assert families["noisy"] == families["original"]


def test_augmentation_stem_joins_family(images):
    families = _families(images)
    assert families["stem"] == families["stem_source"]


def test_unrelated_images_stay_apart(images):
    families = _families(images)
    assert len({families["original"], families["unrelated_a"], families["unrelated_b"], families["stem"]}) == 4


def test_identical_bytes_join_family(tmp_path):
    first = _save(tmp_path, "a.png", _texture(4))
    second = tmp_path / "b.png"
    second.write_bytes(first.read_bytes())

    assert find_families([image_signature(first), image_signature(second)]) == [0, 0]


def test_same_size_rule_is_opt_in(tmp_path):
    paths = [_save(tmp_path, f"scan{index}.png", _texture(20 + index)) for index in range(3)]
    signatures = [image_signature(path) for path in paths]

    assert find_families(signatures) == [0, 1, 2]
    assert find_families(signatures, FamilyRules(same_size=True)) == [0, 0, 0]


def test_sixteen_bit_thumbnail_not_blank(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray((_texture(5).astype(np.uint16) * 200)).save(path)

    assert np.linalg.norm(image_signature(path).thumbnail) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "stem"),
    [("bag1_flip.jpg", "bag1"), ("Bag1-Mirrored.png", "bag1"), ("bag1_aug3.jpg", "bag1"), ("bag1_rot90_flip.jpg", "bag1"),
     ("image_0_1054.jpg", "image_0_1054"), ("flip.jpg", "flip")],
)
def test_augmentation_stem(name, stem):
    assert augmentation_stem(name) == stem


def test_split_keeps_families_together():
    labels = ["positive"] * 30 + ["negative"] * 30
    families = [index // 3 for index in range(60)]

    splits = assign_splits(labels, families, (0.6, 0.2, 0.2), seed=5)

    by_family = defaultdict(set)
    for family, split in zip(families, splits):
        by_family[family].add(split)
    assert all(len(names) == 1 for names in by_family.values())


def test_split_is_stratified_by_label():
    labels = ["positive"] * 40 + ["negative"] * 60
    splits = assign_splits(labels, list(range(100)), (0.7, 0.15, 0.15), seed=0)

    for label, total in (("positive", 40), ("negative", 60)):
        counts = {name: sum(1 for l, s in zip(labels, splits) if l == label and s == name) for name in ("train", "validation", "test")}
        assert counts["test"] == pytest.approx(0.15 * total, abs=1)
        assert counts["validation"] == pytest.approx(0.15 * total, abs=1)


def test_split_same_seed_same_result():
    labels = ["positive", "negative"] * 20
    families = list(range(40))
    assert assign_splits(labels, families, seed=3) == assign_splits(labels, families, seed=3)


def test_split_small_set_gets_test_images():
    splits = assign_splits(["positive"] * 6, list(range(6)), (0.7, 0.15, 0.15), seed=0)
    assert splits.count("test") == 1
    assert splits.count("validation") == 1


def test_parse_fractions_rejects_bad_sum():
    with pytest.raises(ValueError, match="summing to 1"):
        parse_fractions("0.5,0.5,0.5")


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_manifest_round_trip(tmp_path, suffix):
    data = tmp_path / "data"
    data.mkdir()
    image = _save(data, "x.png", _texture(1))
    entries = [
        ManifestEntry(path=image, label="positive", split="test", family="f00001"),
        ManifestEntry(path=image, label="negative", split="train", family="f00002", extra={"box": [1, 2, 3, 4]}),
    ]
    manifest = tmp_path / "elsewhere" / f"manifest{suffix}"

    write_manifest(manifest, entries, {"seed": 0})
    loaded = read_manifest(manifest)

    assert [entry.path.resolve() for entry in loaded] == [image.resolve(), image.resolve()]
    assert [(entry.label, entry.split, entry.family) for entry in loaded] == [("positive", "test", "f00001"), ("negative", "train", "f00002")]
    stored = loaded[1].extra["box"]
    assert (json.loads(stored) if isinstance(stored, str) else stored) == [1, 2, 3, 4]


def test_manifest_stores_relative_paths(tmp_path):
    image = _save(tmp_path, "x.png", _texture(1))
    manifest = tmp_path / "sub" / "m.json"

    write_manifest(manifest, [ManifestEntry(path=image, label="positive", split="train", family="f0")])

    assert json.loads(manifest.read_text())["entries"][0]["path"] == "../x.png"


def test_manifest_rejects_unknown_label(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split,family\nx.png,maybe,train,f0\n")

    with pytest.raises(ManifestError, match="label must be one of"):
        read_manifest(manifest)


def test_missing_split_names_present_ones(tmp_path):
    entries = [ManifestEntry(path=tmp_path / "x.png", label="positive", split="train", family="f0")]
    with pytest.raises(ManifestError, match="splits present: train"):
        select_split(entries, "test")


def test_split_paths_by_label(tmp_path):
    entries = [
        ManifestEntry(path=tmp_path / "p.png", label="positive", split="test", family="f0"),
        ManifestEntry(path=tmp_path / "n.png", label="negative", split="test", family="f1"),
        ManifestEntry(path=tmp_path / "t.png", label="positive", split="train", family="f2"),
    ]
    assert split_paths(entries, "test") == ([tmp_path / "p.png"], [tmp_path / "n.png"])


def test_pairs_avoid_same_family():
    labels = np.array([1] * 6 + [0] * 6)
    families = [f"f{index // 2}" for index in range(12)]

    pairs = draw_pairs(labels, 400, seed=0, families=families)

    assert not any(families[a] == families[b] for a, b in zip(pairs.first, pairs.second))


def test_pairs_keep_label_relation():
    labels = np.array([1] * 6 + [0] * 6)
    families = [f"f{index // 2}" for index in range(12)]

    pairs = draw_pairs(labels, 400, seed=0, families=families)

    assert ((labels[pairs.first] == labels[pairs.second]) == pairs.similar.astype(bool)).all()


@pytest.mark.data
def test_hums_mirrored_copies_share_split(data_root):
    """HUMS positives hold mirrored and rotated copies on one canvas; the split must not separate them."""
    positives = sorted((data_root / "hums" / "positive").glob("*.jpg"))
    signatures = [image_signature(path) for path in positives]
    families = find_families(signatures, FamilyRules(same_size=True))
    by_name = dict(zip((path.name for path in positives), families))

    # Each of these pairs is an original and its horizontally mirrored copy.
    for original, copy in (("pngImg_78.jpg", "image_0_1054.jpg"), ("pngImg_40.jpg", "image_0_2005.jpg")):
        assert by_name[original] == by_name[copy]

    splits = assign_splits(["positive"] * len(positives), families, seed=0)
    by_family = defaultdict(set)
    for family, split in zip(families, splits):
        by_family[family].add(split)
    assert all(len(names) == 1 for names in by_family.values())
