"""Data: the manifest of inputs, clinical variables, and labelled cases.

``manifest``  the one manifest reader (training, evaluation and ``measure`` use it)
``clinical``  clinical variables from a CSV and from DICOM
``cases``     a slice with its class mask, loaded from a manifest row
"""
