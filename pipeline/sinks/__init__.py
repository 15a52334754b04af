"""Where detections go: JSON lines, annotated images and video."""
