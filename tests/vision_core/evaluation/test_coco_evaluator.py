"""Tests for vision_core.evaluation.coco_evaluator: hand-computed COCO AP, and agreement with a
direct pycocotools run.

COCO AP by hand: precision is made non-increasing from the right and read at the 101 recall
thresholds 0, 0.01, ..., 1; AP is their mean (over IoU thresholds 0.50:0.05:0.95 too).
"""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vision_core.evaluation import coco_evaluator, coco_utils

SUMMARY = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
SUMMARY += ["ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl"]
INFO = np.array([[200.0, 300.0], [200.0, 300.0], [1.0, 1.0], [0.0, 0.0]])


def _batch(images, size=(200, 300)):
    """(groundtruths, predictions) of one batch from per-image lists.

    images: [(image_id, [(box yxyx, class, is_crowd)], [(box yxyx, class, score)])].
    """
    n = len(images)
    k = max([len(g) for _, g, _ in images] + [1])
    d = max([len(p) for _, _, p in images] + [1])
    gt = {
        "source_id": np.array([i for i, _, _ in images]),
        "height": np.full(n, size[0]),
        "width": np.full(n, size[1]),
        "num_detections": np.array([len(g) for _, g, _ in images]),
        "boxes": -np.ones((n, k, 4)),
        "classes": -np.ones((n, k), np.int64),
        "is_crowds": np.zeros((n, k), np.int64),
    }
    pred = {
        "source_id": gt["source_id"],
        "detection_boxes": np.zeros((n, d, 4)),
        "detection_classes": np.zeros((n, d), np.int64),
        "detection_scores": np.zeros((n, d)),
        "num_detections": np.array([len(p) for _, _, p in images]),
        "image_info": np.tile(INFO, (n, 1, 1)),
    }
    for b, (_, gts, dts) in enumerate(images):
        for j, (box, cls, crowd) in enumerate(gts):
            gt["boxes"][b, j], gt["classes"][b, j], gt["is_crowds"][b, j] = box, cls, crowd
        for j, (box, cls, score) in enumerate(dts):
            pred["detection_boxes"][b, j] = box
            pred["detection_classes"][b, j] = cls
            pred["detection_scores"][b, j] = score
    return gt, pred


def _evaluate(images, **kwargs):
    evaluator = coco_evaluator.COCOEvaluator(**kwargs)
    evaluator.update_state(*_batch(images))
    return evaluator.result()


# Large (100x100 = 10,000 px > 96^2) boxes far apart.
BIG = [[0, 0, 100, 100], [0, 150, 100, 250], [100, 0, 200, 100], [100, 150, 200, 250]]


def test_perfect_detections_give_one():
    result = _evaluate(
        [(7, [(BIG[0], 1, 0), (BIG[1], 2, 0)], [(BIG[0], 1, 0.9), (BIG[1], 2, 0.8)])]
    )
    assert list(result) == SUMMARY
    assert all(isinstance(v, float) for v in result.values())
    # pycocotools divides by (tp + fp + machine epsilon), so a perfect AP is 1 - 2e-16.
    for key in ("AP", "AP50", "AP75", "APl", "ARmax10", "ARmax100", "ARl"):
        assert result[key] == pytest.approx(1.0, abs=1e-12), key
    # ARmax1: one detection per image and category is allowed, and each category has one.
    assert result["ARmax1"] == 1.0
    # No small or medium groundtruth: COCO reports -1.
    for key in ("APs", "APm", "ARs", "ARm"):
        assert result[key] == -1.0, key


def test_one_false_positive_at_rank_two():
    # Ranks: TP, FP, TP, TP for 3 objects: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1.
    # Made non-increasing: 1 up to recall 1/3 (34 thresholds 0..0.33), 0.75 after (67).
    dts = [(BIG[0], 1, 0.9), (BIG[3], 1, 0.8), (BIG[1], 1, 0.7), (BIG[2], 1, 0.6)]
    result = _evaluate([(1, [(b, 1, 0) for b in BIG[:3]], dts)])
    expected = (34 * 1.0 + 67 * 0.75) / 101
    for key in ("AP", "AP50", "AP75", "APl"):
        assert result[key] == pytest.approx(expected, abs=1e-12), key
    assert result["ARmax100"] == 1.0
    assert result["ARmax1"] == pytest.approx(1 / 3)


def test_detection_of_a_crowd_region_is_ignored():
    # Scored first, the detection on the crowd region would halve AP if it counted as an FP.
    gts = [(BIG[0], 1, 0), (BIG[1], 1, 1)]
    crowd_first = [([5, 155, 95, 245], 1, 0.9), (BIG[0], 1, 0.8)]
    assert _evaluate([(1, gts, crowd_first)])["AP"] == pytest.approx(1.0)
    # The crowd region is no object to find: recall is complete without detecting it.
    assert _evaluate([(1, gts, [(BIG[0], 1, 0.8)])])["ARmax100"] == 1.0
    # Without the crowd region the same detections give precision 0 then 1/2 at recall 0 then
    # 1: 0.5 at every recall threshold.
    assert _evaluate([(1, gts[:1], crowd_first)])["AP"] == pytest.approx(0.5)


def test_missed_small_object():
    # A 10x10 object (100 px, small) is missed; the large one is found. Recall 1/2 at
    # precision 1: 51 of 101 thresholds (0..0.50).
    gts = [(BIG[0], 1, 0), ([150, 200, 160, 210], 1, 0)]
    result = _evaluate([(3, gts, [(BIG[0], 1, 0.9)])])
    assert result["AP"] == pytest.approx(51 / 101)
    assert result["ARmax100"] == pytest.approx(0.5)
    assert (result["APs"], result["ARs"]) == (0.0, 0.0)
    assert (result["APl"], result["ARl"]) == (pytest.approx(1.0), 1.0)
    assert result["APm"] == -1.0


def test_image_without_detections_still_counts():
    images = [(1, [(BIG[0], 1, 0)], [(BIG[0], 1, 0.9)]), (2, [(BIG[1], 1, 0)], [])]
    assert _evaluate(images)["ARmax100"] == pytest.approx(0.5)


def test_per_category_metrics():
    # Category 1 perfect; category 2 has an FP ranked above its TP: precision 0 then 1/2.
    gts = [(BIG[0], 1, 0), (BIG[1], 2, 0)]
    dts = [(BIG[0], 1, 0.5), (BIG[2], 2, 0.9), (BIG[1], 2, 0.8)]
    result = _evaluate(
        [(1, gts, dts)], per_category_metrics=True, category_names=["background", "cat", "dog"]
    )
    assert result["Precision mAP ByCategory/1"] == pytest.approx(1.0)
    assert result["Precision mAP ByCategory/2"] == pytest.approx(0.5)
    assert result["Precision mAP ByCategory@50IoU/2"] == pytest.approx(0.5)
    assert result["Recall AR@100 ByCategory/2"] == 1.0
    assert result["AP"] == pytest.approx(0.75)
    # Only categories with groundtruth are named (background has none).
    assert result["per_category_ap"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(0.5)}
    # Without names, no name mapping.
    assert "per_category_ap" not in _evaluate([(1, gts, dts)], per_category_metrics=True)


def test_rescales_boxes_with_image_info():
    gt, pred = _batch([(1, [(BIG[0], 1, 0)], [([10, 10, 110, 110], 1, 0.9)])])
    pred["detection_boxes"] = pred["detection_boxes"] * np.array([0.5, 2.0, 0.5, 2.0])
    pred["image_info"][:, 2] = [0.5, 2.0]  # y scale, x scale
    evaluator = coco_evaluator.COCOEvaluator(need_rescale_bboxes=True)
    evaluator.update_state(gt, pred)
    rescaled = evaluator.result()
    # IoU of [10,10,110,110] with [0,0,100,100] is 8100 / 11900 = 0.68: AP50 1, AP75 0.
    assert (rescaled["AP50"], rescaled["AP75"]) == (pytest.approx(1.0), 0.0)
    unscaled = coco_evaluator.COCOEvaluator(need_rescale_bboxes=False)
    unscaled.update_state(*_batch([(1, [(BIG[0], 1, 0)], [([10, 10, 110, 110], 1, 0.9)])]))
    assert unscaled.result() == rescaled


def test_duplicate_images_count_once_and_result_resets():
    images = [(1, [(BIG[0], 1, 0)], [(BIG[0], 1, 0.9)]), (2, [(BIG[1], 1, 0)], [])]
    evaluator = coco_evaluator.COCOEvaluator()
    evaluator.update_state(*_batch(images))
    evaluator.update_state(*_batch(images[1:]))  # e.g. a padded last batch
    assert evaluator.result()["ARmax100"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluator.result()


def test_annotation_file_and_unknown_image(tmp_path):
    gt, pred = _batch(
        [(1, [(BIG[0], 1, 0)], [(BIG[0], 1, 0.9)]), (5, [(BIG[1], 2, 0)], [(BIG[1], 2, 0.9)])]
    )
    dataset = coco_utils.convert_groundtruths_to_coco_dataset(gt, label_map={1: "a", 2: "b"})
    for i, ann in enumerate(dataset["annotations"]):
        ann["id"] = i + 1
    # An image that is never predicted is left out of the evaluation, as in Model Garden.
    dataset["images"].append({"id": 9, "height": 200, "width": 300})
    dataset["annotations"].append(
        {"id": 99, "image_id": 9, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500.0,
         "iscrowd": 0}
    )  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(dataset))
    evaluator = coco_evaluator.COCOEvaluator(
        annotation_file=str(path), need_rescale_bboxes=False, per_category_metrics=True
    )
    evaluator.update_state(None, pred)
    result = evaluator.result()
    assert result["AP"] == pytest.approx(1.0)
    assert result["per_category_ap"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    evaluator.update_state(None, {**pred, "source_id": np.array([1, 4])})
    with pytest.raises(ValueError, match=r"image ids \[4\]"):
        evaluator.result()


def test_instance_masks_in_image_coordinates():
    gt, pred = _batch([(1, [([0, 0, 20, 20], 1, 0)], [([0, 0, 20, 20], 1, 0.9)])], size=(20, 20))
    true_mask = np.zeros((1, 1, 20, 20), np.float32)
    true_mask[..., :, :10] = 1
    half = np.zeros_like(true_mask)
    half[..., :, :5] = 1  # IoU with the true mask: 100 / 200 = 0.5
    kwargs = {"include_mask": True, "mask_coordinates": "image", "need_rescale_bboxes": False}
    for masks, mask_ap, mask_ap50 in ((true_mask, 1.0, 1.0), (half, 0.1, 1.0)):
        evaluator = coco_evaluator.COCOEvaluator(**kwargs)
        evaluator.update_state({**gt, "masks": true_mask}, {**pred, "detection_masks": masks})
        result = evaluator.result()
        # The box is exact either way; the mask matches at IoU 0.50 only (1 of 10 thresholds).
        assert result["AP"] == pytest.approx(1.0)
        assert result["mask_AP"] == pytest.approx(mask_ap)
        assert result["mask_AP50"] == pytest.approx(mask_ap50)
        assert result["mask_AP75"] == pytest.approx(1.0 if mask_ap == 1.0 else 0.0)


def test_box_masks_are_pasted_and_png_groundtruth_is_read():
    box = [4, 6, 16, 26]
    gt, pred = _batch([(1, [(box, 1, 0)], [(box, 1, 0.9)])], size=(24, 32))
    canvas = np.zeros((24, 32), np.uint8)
    canvas[4:16, 6:26] = 255
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    gt["masks"] = np.array([[buffer.getvalue()]], dtype=object)
    pred["image_info"][:, 0] = [24, 32]
    pred["detection_masks"] = np.ones((1, 1, 28, 28), np.float32)
    evaluator = coco_evaluator.COCOEvaluator(include_mask=True, need_rescale_bboxes=False)
    evaluator.update_state(gt, pred)
    result = evaluator.result()
    # The pasted 28x28 ones cover the box up to a partly cut border; AP counts the IoU
    # thresholds (0.50, 0.55, ...) that this IoU reaches.
    pasted = coco_utils.paste_instance_masks(np.ones((1, 28, 28)), np.array([box]), 24, 32)[0]
    iou = (pasted & (canvas > 0)).sum() / (pasted | (canvas > 0)).sum()
    assert 0.8 < iou < 1.0
    reached = np.sum(np.linspace(0.5, 0.95, 10) <= iou)
    assert result["mask_AP"] == pytest.approx(reached / 10)
    assert result["mask_AP50"] == pytest.approx(1.0)


def test_paste_instance_masks_matches_model_garden():
    # Golden RLEs measured in Model Garden 2.20 (OpenCV 5.0):
    # mask_ops.paste_instance_masks(masks, boxes as [x, y, w, h], 36, 48) with these inputs.
    masks = np.random.default_rng(3).uniform(size=(3, 7, 5)).astype(np.float32)
    boxes = np.array([[3.2, 4.7, 20.1, 17.9], [0, 0, 40, 30], [-5, 10, 12, 50.5]])
    golden = [
        "n53Q10SONh073L11FL@7>JA1N2?NB001>6CI>6CI`07]OHe02ZO2i0LYO3VR1",
        "X1<e06L20N1O3NLBC=6JJ64LM24NK35MJ47KG4<7L^OM`03CK=4EL;3EL=4BL?5<OL0001O]OK86FK<3C0;0D"
        "2ML62M:2FN;0GO;NG1h0LUb0",
        "`<3P13N2N0010O2N1O1O001O001O01O01OKOWO1h00XO0e03[OMd04\\OLd04\\OLd05[OKd06\\OIe07[OIe0"
        "741O000000O1LUOOk00VO0j00VO0j00WOOi01WOOi01WOOi01WONj0",
    ]
    pasted = coco_utils.paste_instance_masks(masks, boxes, 36, 48)
    assert pasted.shape == (3, 36, 48) and pasted.dtype == np.uint8
    assert [r["counts"] for r in coco_utils.encode_binary_masks(pasted)] == golden


def _random_batches(seed, num_images=96, num_classes=6, batch=32):
    rng = np.random.default_rng(seed)
    k, d = 8, 30
    y0, x0 = rng.uniform(0, 150, (num_images, k)), rng.uniform(0, 250, (num_images, k))
    hw = rng.uniform(4, 60, (num_images, k, 2))
    gt = {
        "source_id": np.arange(10, 10 + num_images),
        "height": np.full(num_images, 200),
        "width": np.full(num_images, 300),
        "num_detections": rng.integers(0, k + 1, num_images),
        "boxes": np.stack([y0, x0, y0 + hw[..., 0], x0 + hw[..., 1]], -1),
        "classes": rng.integers(1, num_classes + 1, (num_images, k)),
        "is_crowds": (rng.uniform(size=(num_images, k)) < 0.05).astype(np.int64),
        "areas": hw[..., 0] * hw[..., 1] * rng.uniform(0.5, 1.0, (num_images, k)),
    }
    # Detections: groundtruth boxes jittered (mostly with the right class) and random boxes.
    # Indices into each image's real (unpadded) objects.
    pick = (
        rng.uniform(size=(num_images, d)) * np.maximum(gt["num_detections"], 1)[:, None]
    ).astype(np.int64)
    boxes = np.take_along_axis(gt["boxes"], pick[..., None], 1) + rng.normal(
        0, 2, (num_images, d, 4)
    )
    corner = rng.uniform([0, 0], [150, 250], (num_images, d, 2))
    random_boxes = np.concatenate([corner, corner + rng.uniform(4, 60, (num_images, d, 2))], -1)
    boxes = np.where((rng.uniform(size=(num_images, d)) < 0.3)[..., None], random_boxes, boxes)
    right = np.take_along_axis(gt["classes"], pick, 1)
    pred = {
        "source_id": gt["source_id"],
        "detection_boxes": boxes,
        "detection_classes": np.where(
            rng.uniform(size=(num_images, d)) < 0.8,
            right,
            rng.integers(1, num_classes + 1, (num_images, d)),
        ),
        # Rounded so that tied scores occur and the tie order is compared too.
        "detection_scores": np.round(rng.uniform(size=(num_images, d)), 2),
        "num_detections": rng.integers(0, d + 1, num_images),
        "image_info": np.tile(INFO, (num_images, 1, 1)),
    }
    return [
        (
            {k: v[s : s + batch] for k, v in gt.items()},
            {k: v[s : s + batch] for k, v in pred.items()},
        )
        for s in range(0, num_images, batch)
    ]


def _direct_pycocotools(batches):
    """COCO stats from pycocotools' own loadRes / evaluate / accumulate / summarize."""
    images, annotations, results = [], [], []
    for gt, pred in batches:
        for b, image_id in enumerate(gt["source_id"].tolist()):
            images.append({"id": image_id, "height": 200, "width": 300})
            for j in range(gt["num_detections"][b]):
                y0, x0, y1, x1 = gt["boxes"][b, j].tolist()
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id,
                     "category_id": int(gt["classes"][b, j]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": float(gt["areas"][b, j]), "iscrowd": int(gt["is_crowds"][b, j])}
                )  # fmt: skip
            for j in range(pred["num_detections"][b]):
                y0, x0, y1, x1 = pred["detection_boxes"][b, j].tolist()
                results.append(
                    {"image_id": image_id, "category_id": int(pred["detection_classes"][b, j]),
                     "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "score": float(pred["detection_scores"][b, j])}
                )  # fmt: skip
    categories = [{"id": c} for c in sorted({a["category_id"] for a in annotations})]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_direct_pycocotools(seed):
    batches = _random_batches(seed)
    reference = _direct_pycocotools(batches)
    evaluator = coco_evaluator.COCOEvaluator(per_category_metrics=True)
    for gt, pred in batches:
        evaluator.update_state(gt, pred)
    result = evaluator.result()
    np.testing.assert_allclose([result[k] for k in SUMMARY], reference.stats, rtol=0, atol=1e-12)
    # A spread of matches, not a degenerate case.
    assert 0.05 < result["AP"] < result["AP50"] < 0.9
    # Per category: the summary restricted to one category, as pycocotools computes it.
    for index, category in enumerate(reference.params.catIds):
        precision = reference.eval["precision"][:, :, index, 0, 2]
        expected = precision[precision > -1].mean()
        assert result[f"Precision mAP ByCategory/{category}"] == pytest.approx(expected, abs=1e-12)


def test_faster_coco_eval_agrees_with_pycocotools():
    pytest.importorskip("faster_coco_eval")
    batches = _random_batches(2)
    results = {}
    for backend in coco_utils.BACKENDS:
        evaluator = coco_evaluator.COCOEvaluator(per_category_metrics=True, backend=backend)
        for gt, pred in batches:
            evaluator.update_state(gt, pred)
        results[backend] = evaluator.result()
    # Instance masks too: random masks and overlapping detections of two classes.
    rng = np.random.default_rng(0)
    gt, pred = _batch(
        [(1, [([0, 0, 20, 20], 1, 0), ([5, 5, 15, 15], 2, 0)],
          [([0, 0, 20, 20], 1, 0.9), ([4, 4, 16, 16], 2, 0.5), ([0, 0, 10, 10], 1, 0.7)])],
        size=(20, 20),
    )  # fmt: skip
    true_masks = (rng.uniform(size=(1, 2, 20, 20)) > 0.5).astype(np.float32)
    noise = rng.uniform(size=(1, 3, 20, 20)) > 0.8
    masks = np.clip(true_masks[:, [0, 1, 0]] + noise, 0, 1)
    for backend in coco_utils.BACKENDS:
        evaluator = coco_evaluator.COCOEvaluator(
            include_mask=True, mask_coordinates="image", need_rescale_bboxes=False,
            per_category_metrics=True, backend=backend,
        )  # fmt: skip
        evaluator.update_state({**gt, "masks": true_masks}, {**pred, "detection_masks": masks})
        results[backend + "_mask"] = evaluator.result()
    assert 0 < results["pycocotools_mask"]["mask_AP"] < 1
    for name in ("", "_mask"):
        reference, fast = results["pycocotools" + name], results["faster_coco_eval" + name]
        assert reference.keys() == fast.keys()
        for key, value in reference.items():
            if isinstance(value, float):
                assert abs(fast[key] - value) <= 1e-6, key


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="backend"):
        coco_evaluator.COCOEvaluator(backend="detectron")
    with pytest.raises(ValueError, match="max_num_eval_detections"):
        coco_evaluator.COCOEvaluator(max_num_eval_detections=5.0)
    with pytest.raises(ValueError, match="mask_coordinates"):
        coco_evaluator.COCOEvaluator(mask_coordinates="pixels")
    evaluator = coco_evaluator.COCOEvaluator()
    gt, pred = _batch([(1, [(BIG[0], 1, 0)], [(BIG[0], 1, 0.9)])])
    with pytest.raises(ValueError, match="image_info"):
        evaluator.update_state(gt, {k: v for k, v in pred.items() if k != "image_info"})
    with pytest.raises(ValueError, match="groundtruths: missing"):
        evaluator.update_state({k: v for k, v in gt.items() if k != "height"}, pred)
    with pytest.raises(ValueError, match="integer image ids"):
        evaluator.update_state(gt, {**pred, "source_id": np.array([b"abc"])})
