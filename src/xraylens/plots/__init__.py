"""Every figure xraylens draws. Matplotlib with the Agg backend; colour maps live only here.

Submodules: ``style`` (backend, colours, saving), ``history`` (training curves),
``evaluation`` (ROC, confusion, reliability, sample predictions), ``heatmaps``
(overlays and grids). Import the submodule you need; importing this package
does not import matplotlib.
"""
