"""Settings every pipeline test shares."""

import pytest


@pytest.fixture(autouse=True)
def no_image_push_record(tmp_path, monkeypatch):
    """Points the image push record (`make image-push`) at an absent file in the test's own
    folder, so a record left in the checkout's artifacts/ by a real push never changes which
    image a test compiles with."""
    monkeypatch.setenv("VISION_PIPELINES_IMAGE_RECORD", str(tmp_path / "image-push.json"))
