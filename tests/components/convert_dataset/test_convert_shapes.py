"""The shapes dataset generator: determinism, COCO annotations that match the masks, layout."""

import json
import os

import numpy as np
import pytest
import rle_reference
from PIL import Image

from components.convert_dataset import shapes

SIZE = (64, 64)


def _generate(path, seed=0, num_train=6, num_validation=3):
    return shapes.generate_shapes_dataset(
        str(path), num_train=num_train, num_validation=num_validation, image_size=SIZE, seed=seed
    )


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    info = _generate(root)
    return root, info


def test_classes():
    assert shapes.SHAPES_CLASSES == ("background", "circle", "square", "triangle")


def test_layout_and_dataset_json(dataset):
    root, info = dataset
    files = _files(root)
    expected = {"dataset.json"}
    for split, count in (("train", 6), ("validation", 3)):
        expected.add(f"annotations/instances_{split}.json")
        for i in range(count):
            expected.add(f"images/{split}/shapes_{i:06d}.png")
            expected.add(f"masks/{split}/shapes_{i:06d}.png")
    assert set(files) == expected  # also: no temporary files left behind
    on_disk = json.loads(files["dataset.json"])
    assert on_disk == info
    assert on_disk["classes"] == list(shapes.SHAPES_CLASSES)
    assert on_disk["seed"] == 0
    assert on_disk["image_size"] == list(SIZE)
    assert on_disk["splits"]["train"]["num_images"] == 6
    assert on_disk["splits"]["validation"]["num_images"] == 3


def test_images_are_rgb_and_masks_single_channel(dataset):
    root, _ = dataset
    image = Image.open(root / "images/train/shapes_000000.png")
    mask = Image.open(root / "masks/train/shapes_000000.png")
    assert image.mode == "RGB" and image.size == (SIZE[1], SIZE[0])
    assert mask.mode == "L" and mask.size == (SIZE[1], SIZE[0])


def test_same_seed_gives_identical_bytes_and_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    _generate(tmp_path / "again")
    assert _files(tmp_path / "again") == _files(root)
    _generate(tmp_path / "other", seed=1)
    other = _files(tmp_path / "other")
    first = _files(root)
    assert other["images/train/shapes_000000.png"] != first["images/train/shapes_000000.png"]
    assert other["masks/train/shapes_000000.png"] != first["masks/train/shapes_000000.png"]


def test_image_does_not_depend_on_split_sizes(dataset, tmp_path):
    root, _ = dataset
    _generate(tmp_path / "small", num_train=2, num_validation=1)
    small = _files(tmp_path / "small")
    first = _files(root)
    for name in ("images/train/shapes_000001.png", "masks/validation/shapes_000000.png"):
        assert small[name] == first[name]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_coco_annotations_match_masks(dataset, split):
    root, _ = dataset
    coco = json.loads((root / f"annotations/instances_{split}.json").read_text())
    assert coco["categories"] == [
        {"id": 1, "name": "circle"},
        {"id": 2, "name": "square"},
        {"id": 3, "name": "triangle"},
    ]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    boxes_overlap = False
    for image in coco["images"]:
        assert (image["height"], image["width"]) == SIZE
        mask = np.asarray(Image.open(root / "masks" / split / image["file_name"]))
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(anns) <= 4
        painted = np.zeros(SIZE, dtype=np.uint8)
        covered = np.zeros(SIZE, dtype=np.int32)
        for ann in anns:
            assert ann["iscrowd"] == 0
            visible = rle_reference.mask_from_rle(ann["segmentation"])
            assert visible.any()
            ys, xs = np.nonzero(visible)
            x0, y0 = xs.min(), ys.min()
            assert ann["bbox"] == [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
            assert ann["area"] == visible.sum()
            painted[visible > 0] = ann["category_id"]
            covered += visible
        # Visible parts are disjoint and together they are exactly the class mask.
        assert covered.max() == 1
        np.testing.assert_array_equal(painted, mask)
        for i, a in enumerate(anns):
            for b in anns[i + 1 :]:
                ax, ay, aw, ah = a["bbox"]
                bx, by, bw, bh = b["bbox"]
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    boxes_overlap = True
    if split == "train":
        assert boxes_overlap, "expected some objects to overlap"


def test_backgrounds_are_textured(dataset):
    root, _ = dataset
    spreads = []
    for i in range(6):
        image = np.asarray(Image.open(root / f"images/train/shapes_{i:06d}.png"), dtype=float)
        mask = np.asarray(Image.open(root / f"masks/train/shapes_{i:06d}.png"))
        # Pixel noise alone has a standard deviation of about 6; textures spread far wider.
        spreads.append(image[mask == 0].std(axis=0).max())
    assert np.median(spreads) > 20


def test_refuses_foreign_folder_and_replaces_earlier_dataset(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        _generate(foreign)

    target = tmp_path / "target"
    _generate(target, num_train=3, num_validation=1)
    _generate(target, num_train=1, num_validation=1)
    assert sorted(os.listdir(target / "images/train")) == ["shapes_000000.png"]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="min_objects"):
        shapes.generate_shapes_dataset(str(tmp_path), min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="image_size"):
        shapes.generate_shapes_dataset(str(tmp_path), image_size=(8, 8))
