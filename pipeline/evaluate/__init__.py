"""Evaluation of detector + filter: COCO mAP on ID data, hallucinations and OOD metrics on OoD sets."""
