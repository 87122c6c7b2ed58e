"""Heatmaps, boxes and sentences, and the scores that measure them.

``cams``          CAM methods (grad-cam library + classic CAM) on any registered model: ``compute_cams``
``regions``       heatmap -> ``Box`` list, region words, the sentence (``describe``), COCO export
``scores``        pointing game / IoU / energy vs chance, deletion-insertion AUC, randomisation sanity check
``explanations``  what ``xraylens explain`` runs: many images -> PNGs, explanations.csv, boxes.json, figures
``report``        what ``xraylens explain-eval`` runs: every method scored against ground-truth boxes

Import the submodule you need; importing this package imports nothing else.
"""
