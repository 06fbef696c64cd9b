"""Utilities shared by the tasks: drawing detections for reports and `vision-pipelines predict`."""
